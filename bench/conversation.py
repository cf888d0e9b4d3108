"""Conversations: clips laid end to end with pauses, and the timeline of what was said when.

Plain data, no tasks. A conversation is one session's audio (16 kHz PCM16) plus one `Span` per
clip: where its speech starts and ends in the conversation's audio time, and its reference text.
Those spans are what latency and WER are measured against (see `bench/figures.py`).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence

import attrs
import numpy as np

from bench.audio import SAMPLE_RATE, Clip, to_pcm16

BYTES_PER_SAMPLE = 2


@attrs.frozen
class Span:
    """One clip inside a conversation, in audio seconds since the conversation's start."""

    clip: str
    start: float  # where the clip's speech starts
    end: float  # where the clip's speech ends
    reference: str | None


def _pcm_seconds(conversation: Conversation) -> float:
    return len(conversation.pcm) / (SAMPLE_RATE * BYTES_PER_SAMPLE)


@attrs.frozen
class Conversation:
    """One session's audio and its spans. `duration` is the audio's length; a conversation read
    back from a trace (`bench.trace`) has its spans and duration but no audio."""

    pcm: bytes = attrs.field(repr=False)
    spans: tuple[Span, ...]
    duration: float = attrs.field(default=attrs.Factory(_pcm_seconds, takes_self=True))

    @property
    def speech_s(self) -> float:
        return sum(span.end - span.start for span in self.spans)


@attrs.frozen
class Chunk:
    """One binary frame to send: its PCM bytes and the audio time at its end."""

    payload: bytes = attrs.field(repr=False)
    audio_start: float
    audio_end: float


def build_conversation(
    clips: Sequence[Clip],
    *,
    target_s: float,
    pause_s: float = 1.0,
    lead_s: float = 0.5,
    first: int = 0,
) -> Conversation:
    """Clips from index `first` on (wrapping round), each followed by `pause_s` of silence,
    until the audio reaches `target_s`; always at least one clip, never a cut clip.

    `lead_s` of silence comes first. The trailing pause lets the server end the last utterance
    by endpointing rather than because the stream stopped.
    """
    if not clips:
        raise ValueError("a conversation needs at least one clip")
    pieces = [np.zeros(round(lead_s * SAMPLE_RATE), dtype=np.float32)]
    pause = np.zeros(round(pause_s * SAMPLE_RATE), dtype=np.float32)
    spans: list[Span] = []
    position = len(pieces[0])
    index = first
    while not spans or position / SAMPLE_RATE < target_s:
        clip = clips[index % len(clips)]
        offset = position / SAMPLE_RATE
        spans.append(
            Span(
                clip=clip.name,
                start=offset + clip.speech_start,
                end=offset + clip.speech_end,
                reference=clip.reference,
            )
        )
        pieces += [clip.samples, pause]
        position += len(clip.samples) + len(pause)
        index += 1
    return Conversation(pcm=to_pcm16(np.concatenate(pieces)), spans=tuple(spans))


def build_conversations(
    clips: Sequence[Clip],
    count: int,
    *,
    target_s: float,
    pause_s: float = 1.0,
    distinct: bool = False,
) -> list[Conversation]:
    """One conversation per client. By default all clients say the same thing, so that WER is
    comparable between runs with different client counts; `distinct` rotates the clips so
    that client i starts at clip 7i."""
    return [
        build_conversation(
            clips, target_s=target_s, pause_s=pause_s, first=(7 * client) if distinct else 0
        )
        for client in range(count)
    ]


def chunks(conversation: Conversation, chunk_s: float = 0.1) -> Iterator[Chunk]:
    """The conversation cut into binary frames of `chunk_s` seconds (the last may be shorter)."""
    step = round(chunk_s * SAMPLE_RATE) * BYTES_PER_SAMPLE
    if step <= 0:
        raise ValueError("chunk_s is too small")
    pcm = conversation.pcm
    bytes_per_s = SAMPLE_RATE * BYTES_PER_SAMPLE
    for begin in range(0, len(pcm), step):
        end = min(begin + step, len(pcm))
        yield Chunk(
            payload=pcm[begin:end], audio_start=begin / bytes_per_s, audio_end=end / bytes_per_s
        )
