"""What the stages of one session hand each other: the items of its bounded channels.

The stages (`reader`, `segmenting`, `transcribing`, `writer`) import these from here and
never from each other, so each stage reads on its own: what comes in, what goes out.

    reader ──Command──> segmenting ──Segmented──> transcribing ──ServerFrame──> writer
       └──────────────────ServerFrame (errors, pongs, ready)──────────────────────┘
"""

from __future__ import annotations

from actors.speech.segmenter import Event
from protocol.native import Finalize, ServerFrame
from service.session.config import SessionConfig

Command = SessionConfig | bytes | Finalize  # the settled config comes first, ahead of its audio
Segmented = SessionConfig | Event  # what the segmenter sends on: the config, then its events

__all__ = ["Command", "Segmented", "ServerFrame"]
