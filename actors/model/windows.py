"""How long an encoder window each request gets: sans-IO rules, no model library imported.

Whisper is trained on 30 s windows, but CTranslate2 accepts shorter ones, and the encoder's
cost grows with the window. A window needs silence after the speech, or the decoder loops ("And
so my fellow Americans. And so my fellow Americans…"). So a final's window is `WINDOW_FACTOR`
(2) times the audio, rounded up to `bucket_s` (5 s), at least `MIN_WINDOW_S` (a 2.4 s
utterance in a 5 s window still looped) and at most 30 s: about as accurate as the full 30 s
window and faster (measured: docs/benchmarks.md). `bucket_s=30` gives Whisper's standard
window (the naive baseline uses that).

Models bigger than tiny loop less, and their windows need less room: for them
(`final_window="pad"`, what `final_window_for` picks) a final's window is the audio plus
`FINAL_PAD_S` (3 s), same buckets and floor, so an 8 s utterance gets 15 s instead of 20 s.
That saves base model time at the same word error rate in every condition measured; tiny
models lost accuracy on telephone audio with it, so they keep twice the audio (measured:
docs/benchmarks.md).

A partial is a draft that the final replaces, so it gets the audio plus `PARTIAL_PAD_S`,
rounded up to `PARTIAL_BUCKET_S` (a 1.8 s draft: a 4 s window where the finals' rule gives
10 s). A draft that loops there is cut where the repeat begins instead of decoded again
(`actors/model/judging.py`).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path
from typing import Literal

from actors.model.port import SAMPLE_RATE, Request

FinalWindow = Literal["double", "pad"]
"""How a final's encoder window grows with its audio (see the module's docstring)."""

WINDOW_S = 30.0
PARTIAL_PAD_S = 1.0
PARTIAL_BUCKET_S = 2.0
WINDOW_FACTOR = 2.0
FINAL_PAD_S = 3.0
MIN_WINDOW_S = 10.0
FRAMES_PER_SECOND = 100
FULL_WINDOW = int(WINDOW_S * FRAMES_PER_SECOND)
"""Whisper's standard window, in encoder frames."""
MAX_TOKENS = 448  # Whisper's decoder positions
FINAL_TOKENS, FINAL_TOKENS_PER_S = 16, 12.0
DRAFT_TOKENS, DRAFT_TOKENS_PER_S = 6, 6.0


def final_window_for(name: str) -> FinalWindow:
    """The finals' window rule for a model (see the module's docstring): twice the audio for
    tiny models, the audio + `FINAL_PAD_S` for bigger ones."""
    return "double" if "tiny" in Path(name).name.lower() else "pad"


def partial_frames(samples: int) -> int:
    """A draft's window: the audio + `PARTIAL_PAD_S`, rounded up to `PARTIAL_BUCKET_S`."""
    seconds = samples / SAMPLE_RATE + PARTIAL_PAD_S
    window = math.ceil(seconds / PARTIAL_BUCKET_S) * PARTIAL_BUCKET_S
    return int(min(WINDOW_S, window) * FRAMES_PER_SECOND)


def final_frames(samples: int, bucket_s: float, rule: FinalWindow) -> int:
    """A final's window: twice the audio (`rule="pad"`: the audio + 3 s), rounded up to
    `bucket_s`, within [10 s, 30 s]."""
    audio_s = samples / SAMPLE_RATE
    seconds = audio_s * WINDOW_FACTOR if rule == "double" else audio_s + FINAL_PAD_S
    window = max(MIN_WINDOW_S, math.ceil(seconds / bucket_s) * bucket_s)
    return int(min(WINDOW_S, window) * FRAMES_PER_SECOND)


def max_length(prompts: Sequence[int], starts: Sequence[int], requests: Sequence[Request]) -> int:
    """CTranslate2's `max_length` for one call of `requests`, whose prompts have these lengths,
    of which `starts` lead up to `<|notimestamps|>` (the rest are forced words).

    Finals get 16 tokens + 12 a second of the longest audio after the longest prompt. Drafts
    get room (`token_cap`) for `DRAFT_TOKENS` + `DRAFT_TOKENS_PER_S` a second of their audio,
    forced words included: above what the shared set's drafts write (under 4 a second at
    p99), and all that a draft that loops writes before it stops. They had the finals' rule,
    and on 12 live tiny.en sessions a fifth of them looped and wrote 59-62% of the drafts'
    tokens (measured: docs/benchmarks.md)."""
    samples = [len(request.audio) for request in requests]
    if not all(request.options.partial for request in requests):
        longest_s = max(samples) / SAMPLE_RATE
        return min(MAX_TOKENS, max(prompts) + FINAL_TOKENS + int(longest_s * FINAL_TOKENS_PER_S))
    rooms = [DRAFT_TOKENS + int(n / SAMPLE_RATE * DRAFT_TOKENS_PER_S) for n in samples]
    lengths = [max(2 * room, room + start - 1) for room, start in zip(rooms, starts, strict=True)]
    return min(MAX_TOKENS, max(lengths))


def token_cap(length: int, start: int) -> int:
    """How many tokens (forced and written) a decode whose prompt has `start` tokens up to
    `<|notimestamps|>` gets before `max_length=length` stops it: CTranslate2 (4.8) stops at
    half of `max_length`, or at what the prompt leaves of it plus one, whichever comes first."""
    return max(0, min(length // 2, length - start + 1))
