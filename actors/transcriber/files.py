"""Files of any length on the shared transcriber: decode, cut at pauses, transcribe, assemble.

`transcribe_file` runs in the caller's task (an HTTP request, or the CLI's main task) and owns
one nursery for the file's segments. It decodes the file piece by piece (`FileDecoder`, 30 s
at a time) and feeds each piece to the same `Segmenter` that live sessions use (with longer
utterances), both in worker threads, so the event loop never stalls on a long file. Every
utterance the segmenter cuts is submitted to the one transcriber actor at `background`
priority, at most `in_flight` at a time, so they batch with each other while the actor still
puts every live final and partial first (it runs background work only when no live work
waits, in small batches). Decoding waits while `in_flight` utterances are out: memory stays
flat for any length (one piece, the open utterance, and `in_flight` utterances; an hour of
audio would be 230 MB decoded whole).

Streaming: given a `segments` send channel, `transcribe_file` sends each non-empty
`FileSegment` on it in file order as soon as it and every segment before it are transcribed
(utterances run `in_flight` at a time and finish in any order), and closes it when it returns
or fails; a receiver that reads slowly holds back the rest, not the decoding.

Errors: undecodable input raises `UndecodableAudio` (from the header at once; from damage later
in the file when decoding reaches it, which cancels the work under way); a model error on any
segment cancels the rest and raises `TranscriptionFailed` (a transcript with a hole is worse
than an error); a caller that goes away cancels the nursery and the actor drops the jobs that
have not started.

Choice of cut: files are cut at pauses of 2000 ms and at 25 s at most (the live defaults are
500 ms and 15 s). Fewer, longer utterances cost fewer encoder windows and keep sentences whole;
25 s leaves the model's 30 s window 5 s of padding. Of the cuts compared on a long file of
joined clips, that one gave the lowest word error rate and the highest throughput (measured,
with faster-whisper's own `BatchedInferencePipeline` beside it: docs/benchmarks.md). Word
timings (for SRT/VTT cues) cost little.
"""

from __future__ import annotations

import contextlib
import functools
from collections import Counter
from collections.abc import Awaitable, Callable
from typing import BinaryIO

import attrs
import trio

from actors.audio.file_decoder import AudioSource, FileDecoder, UndecodableAudio
from actors.model.port import (
    SAMPLE_RATE,
    DecodeOptions,
    Priority,
    Request,
    Result,
    Samples,
    TokenUsage,
)
from actors.speech.segmenter import Segment, Segmenter, SegmenterConfig
from actors.transcriber.actor import Transcriber, TranscriberClosed, TranscriptionFailed
from protocol.dialects.common import merge_punctuation

Progress = Callable[[float, float], None]
"""Called with (audio seconds transcribed, total audio seconds) as segments finish."""


@attrs.frozen
class FileOptions:
    language: str | None = None  # None: detected per segment; the file gets the most common
    task: str = "transcribe"
    prompt: str | None = None
    words: bool = False
    beam_size: int = 5
    endpointing_ms: int = 2000
    max_utterance_s: float = 25.0
    in_flight: int = 4
    priority: Priority = "background"
    max_seconds: float | None = None  # longer audio is refused as `too_long` while decoding


@attrs.frozen
class FileWord:
    word: str
    start: float  # seconds from the start of the file
    end: float
    probability: float


@attrs.frozen
class FileSegment:
    index: int
    start: float  # seconds from the start of the file
    end: float
    text: str
    language: str
    avg_logprob: float
    compression_ratio: float
    no_speech_prob: float
    confidence: float
    words: tuple[FileWord, ...] = ()
    flags: tuple[str, ...] = ()


@attrs.frozen
class FileTranscript:
    segments: tuple[FileSegment, ...]
    duration_s: float
    language: str
    # what every utterance cost the model, the empty ones too
    tokens: TokenUsage = attrs.field(factory=TokenUsage)

    @property
    def text(self) -> str:
        return " ".join(segment.text for segment in self.segments if segment.text)


def find_utterances(samples: Samples, options: FileOptions) -> list[tuple[int, int]]:
    """(start, end) sample offsets of the utterances the segmenter cuts. Blocking (VAD)."""
    segmenter = _segmenter(options)
    spans = []
    for segment in [*_cut(segmenter, samples), *_cut(segmenter, None)]:
        start = round(segment.start * SAMPLE_RATE)
        end = min(round(segment.end * SAMPLE_RATE), len(samples))
        if end > start:
            spans.append((start, end))
    return spans


PIECE_S = 30.0  # audio decoded at a time


async def transcribe_file(
    transcriber: Transcriber,
    source: AudioSource | BinaryIO,
    options: FileOptions = FileOptions(),
    *,
    progress: Progress | None = None,
    decode_limiter: trio.CapacityLimiter | None = None,
    segments: trio.MemorySendChannel[FileSegment] | None = None,
) -> FileTranscript:
    """Decode `source` (bytes, a path or an open binary file) and transcribe it, piece by piece;
    see the module docstring. `decode_limiter` bounds the decoding threads of all uploads;
    `segments`, when given, gets the segments in order as they are ready, and is closed."""
    with segments if segments is not None else contextlib.nullcontext():
        return await _transcribe_source(
            transcriber, source, options, progress, decode_limiter, _InOrder(segments)
        )


async def _transcribe_source(
    transcriber: Transcriber,
    source: AudioSource | BinaryIO,
    options: FileOptions,
    progress: Progress | None,
    decode_limiter: trio.CapacityLimiter | None,
    in_order: _InOrder,
) -> FileTranscript:
    opened = functools.partial(FileDecoder, source, max_seconds=options.max_seconds)
    decoder = await trio.to_thread.run_sync(opened, limiter=decode_limiter)
    try:

        async def next_piece() -> Samples | None:
            return await trio.to_thread.run_sync(decoder.read, PIECE_S, limiter=decode_limiter)

        return await _transcribe_pieces(
            transcriber, next_piece, options, progress, decoder.declared_s, in_order
        )
    finally:
        decoder.close()


async def transcribe_samples(
    transcriber: Transcriber,
    samples: Samples,
    options: FileOptions = FileOptions(),
    *,
    progress: Progress | None = None,
) -> FileTranscript:
    """Transcribe audio already decoded (16 kHz mono float32)."""
    pieces: list[Samples | None] = [samples, None]

    async def next_piece() -> Samples | None:
        return pieces.pop(0)

    return await _transcribe_pieces(
        transcriber, next_piece, options, progress, len(samples) / SAMPLE_RATE, _InOrder(None)
    )


def _segmenter(options: FileOptions) -> Segmenter:
    return Segmenter(
        SegmenterConfig(
            endpointing_ms=options.endpointing_ms,
            max_utterance_s=options.max_utterance_s,
            interim=False,
        )
    )


def _cut(segmenter: Segmenter, piece: Samples | None) -> list[Segment]:
    """The utterances `piece` completes (all that is left when `piece` is None). Blocking."""
    events = segmenter.close() if piece is None else segmenter.feed(piece)
    return [event for event in events if isinstance(event, Segment) and event.final]


async def _transcribe_pieces(
    transcriber: Transcriber,
    next_piece: Callable[[], Awaitable[Samples | None]],
    options: FileOptions,
    progress: Progress | None,
    expected_s: float | None,
    in_order: _InOrder,
) -> FileTranscript:
    segmenter = _segmenter(options)
    spans: list[tuple[float, float]] = []
    results: list[Result | None] = []
    failures: list[Exception] = []
    slots = trio.Semaphore(max(1, options.in_flight))
    received = 0
    done_s = 0.0
    decode = DecodeOptions(
        language=options.language,
        task="translate" if options.task == "translate" else "transcribe",
        prompt=options.prompt,
        words=options.words,
        beam_size=options.beam_size,
    )

    async def run(index: int, segment: Segment, cancel: trio.CancelScope) -> None:
        nonlocal done_s
        try:
            request = Request(segment.audio, decode)
            results[index] = await transcriber.transcribe(request, priority=options.priority)
        except (TranscriptionFailed, TranscriberClosed) as error:
            failures.append(error)
            cancel.cancel()
            return
        finally:
            slots.release()
        done_s += segment.end - segment.start
        if progress is not None:
            progress(done_s, max(expected_s or 0.0, received / SAMPLE_RATE))
        await in_order.publish(spans, results)

    async with trio.open_nursery() as nursery:
        try:
            while True:
                piece = await next_piece()
                received += 0 if piece is None else len(piece)
                for segment in await trio.to_thread.run_sync(_cut, segmenter, piece):
                    await slots.acquire()  # decode no further while `in_flight` are out
                    spans.append((segment.start, min(segment.end, received / SAMPLE_RATE)))
                    results.append(None)
                    nursery.start_soon(run, len(results) - 1, segment, nursery.cancel_scope)
                if piece is None:
                    break
        except UndecodableAudio as error:  # damage found part-way through the file
            failures.append(error)
            nursery.cancel_scope.cancel()
    if failures:
        raise failures[0]
    duration = received / SAMPLE_RATE
    if progress is not None:
        progress(duration, duration)
    return _assemble(spans, results, duration, options)


class _InOrder:
    """Sends the transcribed segments in file order (see the module docstring): the `run`
    tasks call `publish` as each utterance lands, and the one holding the lock (a FIFO)
    sends every result that is ready in order after the last one sent."""

    def __init__(self, segments: trio.MemorySendChannel[FileSegment] | None) -> None:
        self._segments = segments
        self._lock = trio.Lock()
        self._next = 0  # the next utterance to look at
        self._sent = 0  # segments sent: the next one's index

    async def publish(self, spans: list[tuple[float, float]], results: list[Result | None]) -> None:
        if self._segments is None:
            return
        async with self._lock:
            while self._next < len(results) and (result := results[self._next]) is not None:
                span = spans[self._next]
                self._next += 1
                if result.text:
                    await self._segments.send(_file_segment(self._sent, span, result))
                    self._sent += 1


def _file_segment(index: int, span: tuple[float, float], result: Result) -> FileSegment:
    offset, end = span
    words = tuple(
        FileWord(text, round(offset + start, 3), round(offset + end, 3), probability)
        for text, start, end, probability in merge_punctuation(
            [(word.word, word.start, word.end, word.probability) for word in result.words]
        )
    )
    return FileSegment(
        index=index,
        start=round(offset, 3),
        end=round(end, 3),
        text=result.text,
        language=result.language,
        avg_logprob=round(result.avg_logprob, 4),
        compression_ratio=round(result.compression_ratio, 4),
        no_speech_prob=round(result.no_speech_prob, 4),
        confidence=round(result.confidence, 3),
        words=words,
        flags=result.flags,
    )


def _assemble(
    spans: list[tuple[float, float]],
    results: list[Result | None],
    duration: float,
    options: FileOptions,
) -> FileTranscript:
    segments: list[FileSegment] = []
    tokens = TokenUsage()
    for span, result in zip(spans, results, strict=True):
        if result is not None:
            tokens += result.tokens
        if result is not None and result.text:
            segments.append(_file_segment(len(segments), span, result))
    languages = Counter(segment.language for segment in segments)
    language = options.language or (languages.most_common(1)[0][0] if languages else "en")
    return FileTranscript(tuple(segments), round(duration, 3), language, tokens)
