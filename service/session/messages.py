"""What the stages of one session hand each other: the items of its bounded channels.

The stages (`reader`, `segmenting`, `transcribing`, `writer`) import these from here and
never from each other, so each stage reads on its own: what comes in, what goes out. The
session's settled config is not an item: the reader hands it to `run_session` once, at the
first audio (`task_status.started`), which starts the segmenter and the transcriber client
with it.

    reader ──Command──> segmenting ──Segmented──> transcribing ──ServerFrame──> writer
       └──────────────────ServerFrame (errors, pongs, ready)──────────────────────┘
"""

from __future__ import annotations

from actors.speech.segmenter import Event
from protocol.native import Finalize, ServerFrame

Command = bytes | Finalize  # the client's audio, in its encoding, and its `finalize`s
# what the segmenter cuts: speech started, a segment, an utterance ended; and a `finalize`
# with an `id`, passed on after its cut so that its `finalized` follows the cut's final
Segmented = Event | Finalize

__all__ = ["Command", "Segmented", "ServerFrame"]
