"""CPU time of voice activity detection: each session's own `StreamingVad` vs the VAD actor.

`python -m bench.vad_cpu [--sessions 16] [--seconds 30] [--chunk-ms 20,100,256] [--pace 0]
[--gather-ms 0]`

Each session gets `--seconds` of other speech from the shared set (its clips end to end, each
session starting at another clip) and feeds it in client-sized chunks. Inline: the session's
own `StreamingVad`, called as the inline segmenter calls it (once per 0.256 s step of a chunk).
Actor: the same chunks from all sessions at once through one VAD actor. With `--pace 0` every
session's next chunk is ready at once, so batches are as large as they get; `--pace 1` sends at
real time from staggered starts, as live clients do (and takes 2 x `--seconds` per chunk
size); `--gather-ms` is the actor's `gather_s`.
CPU time is the whole process's (`time.process_time`: every thread), so the actor's own trio
work counts; "loop" is the event loop's thread alone (`time.thread_time`), what every session's
reader, segmenter and writer share. Prints the figures; writes nothing.
"""

from __future__ import annotations

import argparse
import random
import time
from collections.abc import Callable, Sequence
from contextlib import closing
from typing import Protocol

import attrs
import numpy as np
import trio

from actors.speech.segmenter import STEP_S
from actors.speech.vad import StreamingVad
from actors.speech.vad_actor import VadConfig, open_vad
from actors.speech.vad_batch import BatchedSilero
from bench.audio import SAMPLE_RATE, Samples, load_set, speech_dir


@attrs.frozen
class Figures:
    chunk_ms: int
    inline_cpu_s: float
    inline_loop_s: float  # of which on the loop's thread
    actor_cpu_s: float
    actor_loop_s: float
    batches: int
    mean_streams: float  # requests per batch
    mean_frames: float  # frames per request

    @property
    def ratio(self) -> float:
        return self.inline_cpu_s / self.actor_cpu_s


def session_audio(count: int, seconds: float) -> list[Samples]:
    clips = [clip.samples for clip in load_set(speech_dir() / "en_wer.tsv")]
    length = int(seconds * SAMPLE_RATE)
    audio = []
    for index in range(count):
        ordered = clips[index % len(clips) :] + clips[: index % len(clips)]
        joined = np.concatenate(ordered)
        audio.append(np.resize(joined, length).astype(np.float32))  # repeats if too short
    return audio


def chunks(audio: Samples, size: int) -> list[Samples]:
    return [audio[offset : offset + size] for offset in range(0, len(audio), size)]


class InlineStream:
    """A session's own `StreamingVad`, called as the inline segmenter calls it."""

    def __init__(self) -> None:
        self._vad = StreamingVad()

    async def probabilities(self, samples: Samples) -> Samples:
        step = int(STEP_S * SAMPLE_RATE)
        pieces = [
            self._vad.probabilities(samples[offset : offset + step])
            for offset in range(0, len(samples), step)
        ]
        return np.concatenate(pieces) if pieces else np.zeros(0, np.float32)

    def close(self) -> None:
        pass


class Detector(Protocol):
    async def probabilities(self, samples: Samples) -> Samples: ...

    def close(self) -> None: ...


async def cpu_s(
    open_stream: Callable[[], Detector], sessions: Sequence[Samples], chunk: int, pace: float
) -> tuple[float, float]:
    """CPU seconds of the process and of the loop's thread, all `sessions` at once."""

    async def feed(audio: Samples, offset_s: float) -> None:
        with closing(open_stream()) as stream:
            if pace > 0:
                await trio.sleep(offset_s)
            start = trio.current_time()
            for index, piece in enumerate(chunks(audio, chunk)):
                await stream.probabilities(piece)
                if pace > 0:
                    await trio.sleep_until(start + (index + 1) * chunk / SAMPLE_RATE / pace)

    shuffle = random.Random(7)  # the same staggered starts for both
    started, loop_started = time.process_time(), time.thread_time()
    async with trio.open_nursery() as nursery:
        for audio in sessions:
            offset_s = shuffle.random() * chunk / SAMPLE_RATE / max(pace, 1e-9)
            nursery.start_soon(feed, audio, offset_s)
    return time.process_time() - started, time.thread_time() - loop_started


async def measure(arguments: argparse.Namespace) -> list[Figures]:
    sessions = session_audio(arguments.sessions, arguments.seconds)
    model = BatchedSilero()
    warm = [np.zeros(4 * 512, np.float32)]
    await cpu_s(InlineStream, warm, 512, 0.0)  # both models loaded and run once before timing
    async with open_vad(model) as vad:
        await cpu_s(vad.open_stream, warm, 512, 0.0)
    config = VadConfig(gather_s=arguments.gather_ms / 1000)
    figures = []
    for chunk_ms in (int(value) for value in arguments.chunk_ms.split(",")):
        chunk = chunk_ms * SAMPLE_RATE // 1000
        inline, inline_loop = await cpu_s(InlineStream, sessions, chunk, arguments.pace)
        async with open_vad(model, config) as vad:
            actor, actor_loop = await cpu_s(vad.open_stream, sessions, chunk, arguments.pace)
        statistics = vad.statistics()
        figures.append(
            Figures(
                chunk_ms=chunk_ms,
                inline_cpu_s=inline,
                inline_loop_s=inline_loop,
                actor_cpu_s=actor,
                actor_loop_s=actor_loop,
                batches=statistics.batches,
                mean_streams=statistics.mean_batch_size,
                mean_frames=statistics.frames / max(1, statistics.requests),
            )
        )
    return figures


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--sessions", type=int, default=16)
    parser.add_argument("--seconds", type=float, default=30.0)
    parser.add_argument(
        "--chunk-ms", default="20,100,256", help="client chunk sizes, comma-separated"
    )
    parser.add_argument("--pace", type=float, default=0.0, help="x real time; 0: all at once")
    parser.add_argument("--gather-ms", type=float, default=VadConfig().gather_s * 1000)
    arguments = parser.parse_args(argv)
    figures = trio.run(measure, arguments)
    print(
        f"{arguments.sessions} sessions x {arguments.seconds:g} s, pace {arguments.pace:g}, "
        f"gather {arguments.gather_ms:g} ms: "
        "VAD CPU seconds, inline (one StreamingVad per session) vs the VAD actor"
    )
    print(
        "chunk ms | inline s (loop) | actor s (loop) | inline/actor | "
        "batches | streams/batch | frames/request"
    )
    for row in figures:
        print(
            f"{row.chunk_ms:8d} | {row.inline_cpu_s:6.3f} ({row.inline_loop_s:5.3f}) | "
            f"{row.actor_cpu_s:5.3f} ({row.actor_loop_s:5.3f}) | {row.ratio:12.2f} | "
            f"{row.batches:7d} | {row.mean_streams:13.1f} | {row.mean_frames:14.1f}"
        )


if __name__ == "__main__":
    main()
