"""One session on the client's own clock, and the two figures measured on it alone: first-text
delay and caption delay (DESIGN §8).

Pure functions over a `SessionRecord`, no tasks. Everything here is measured against the clips'
places in the conversation's audio (its spans, which the bench laid out itself) and against the
client's own clocks: when it sent each chunk and when each frame arrived. A server's `start`
stamps are never read; its text counts by the audio time its `end` reaches, which every target
the bench drives reports: native `partial`/`final` frames (Chorus and its baselines), and
WhisperLive's segments recorded as native frames by `bench.peer`. So both figures can be
recomputed after the fact from a trace (`bench.trace.read_trace`).

- **first-text delay**, for each clip of `FIRST_TEXT_MIN_SPEECH_S` or more: the arrival of the
  first text (partial or final) whose `end` is past the clip's start, minus the send of the
  chunk holding the clip's first second of speech (negative when text came sooner);
- **caption delay**, every `CAPTION_STEP_S` of a clip's speech from its first second on: the
  audio time being sent at that instant minus the furthest `end` that the text received by then
  reaches (0 before any text), clamped at 0: how far behind the speaker the captions a person
  watches are. Text never moves back on a screen, so a late final of an earlier utterance does
  not pull the figure back behind a partial of the next one.

A `Window` (trio time) limits both to samples whose instant lies inside it: `bench.sustain`
uses it to score only the time when every session of a run was live together.
"""

from __future__ import annotations

import math
from bisect import bisect_left, bisect_right
from collections.abc import Sequence

import attrs

from bench.client import SessionRecord
from bench.conversation import Span
from protocol.native import Final, Partial

EPSILON_S = 1e-6
FIRST_TEXT_MIN_SPEECH_S = 2.0  # utterances this long must show text while they go on
FIRST_TEXT_AFTER_S = 1.0  # measured from the send of their first second of speech
CAPTION_AFTER_S = 1.0  # caption delay is sampled from a clip's first second of speech on
CAPTION_STEP_S = 0.25  # every this much audio time, up to the clip's end


@attrs.frozen
class Window:
    """A stretch of trio time; `at in window` when `start <= at <= end`."""

    start: float
    end: float

    @property
    def seconds(self) -> float:
        return self.end - self.start

    def __contains__(self, at: float) -> bool:
        return self.start - EPSILON_S <= at <= self.end + EPSILON_S


def inside(window: Window | None, at: float) -> bool:
    """Whether a sample taken at `at` counts: always when there is no window."""
    return window is None or at in window


def sent_time(record: SessionRecord, audio_t: float) -> float | None:
    """When the chunk holding audio time `audio_t` was sent (the last chunk when beyond it)."""
    if not record.audio_ends:
        return None
    index = bisect_left(record.audio_ends, audio_t - EPSILON_S)
    return record.sent_at[min(index, len(record.sent_at) - 1)]


def sent_spans(record: SessionRecord) -> list[Span]:
    """The clips whose speech was sent whole."""
    sent = record.audio_sent_s + EPSILON_S
    return [span for span in record.conversation.spans if span.end <= sent]


def text_marks(record: SessionRecord) -> list[tuple[float, float]]:
    """(arrival, audio end) of every partial or final with text, in arrival order."""
    marks = [
        (arrival.at, arrival.frame.end)
        for arrival in record.arrivals
        if isinstance(arrival.frame, Partial | Final) and arrival.frame.text.strip()
    ]
    return sorted(marks, key=lambda mark: mark[0])


def first_text_delays(record: SessionRecord, window: Window | None = None) -> list[float]:
    """First-text delay of each clip of `FIRST_TEXT_MIN_SPEECH_S` or more that got text."""
    marks = text_marks(record)
    delays = []
    for span in sent_spans(record):
        if span.end - span.start < FIRST_TEXT_MIN_SPEECH_S:
            continue
        sent = sent_time(record, span.start + FIRST_TEXT_AFTER_S)
        if sent is None or not inside(window, sent):
            continue
        arrivals = [at for at, end in marks if end > span.start + EPSILON_S]
        if arrivals:
            delays.append(min(arrivals) - sent)
    return delays


def caption_instants(span: Span) -> list[float]:
    """The audio times at which a clip's caption delay is sampled."""
    length = span.end - span.start - CAPTION_AFTER_S
    if length < -EPSILON_S:
        return []
    count = math.floor(length / CAPTION_STEP_S + EPSILON_S) + 1
    return [span.start + CAPTION_AFTER_S + CAPTION_STEP_S * k for k in range(count)]


def caption_delays(record: SessionRecord, window: Window | None = None) -> list[float]:
    """Caption delay at every sampled instant of every clip sent whole, in audio order."""
    marks = text_marks(record)
    arrivals = [at for at, _ in marks]
    reached = _running_max([end for _, end in marks])
    delays = []
    for span in sent_spans(record):
        for audio_t in caption_instants(span):
            sent = sent_time(record, audio_t)
            if sent is None or not inside(window, sent):
                continue
            received = bisect_right(arrivals, sent + EPSILON_S)
            shown = reached[received - 1] if received else 0.0
            delays.append(max(audio_t - shown, 0.0))
    return delays


def _running_max(values: Sequence[float]) -> list[float]:
    out: list[float] = []
    for value in values:
        out.append(max(value, out[-1]) if out else value)
    return out
