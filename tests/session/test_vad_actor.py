"""The shared VAD actor on real speech: the same probabilities as a session's own `StreamingVad`,
bit for bit, whatever the batches; sessions independent; state freed on leaving; failure named.

Real worker threads run the model here, so these tests use trio's real clock.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from pathlib import Path

import httpx
import numpy as np
import pytest
import trio
import trio.testing
from conftest import serve_app
from support.audio_files import DATA, load, pcm16
from support.fakes import FakeModel, FakeSocket, FakeTranscriber
from support.session_parts import native_session

from actors.model.port import Samples
from actors.speech.segmenter import Segment, Segmenter, SegmenterConfig
from actors.speech.vad import FRAME, StreamingVad
from actors.speech.vad_actor import VadClosed, VadConfig, VadHandle, VadStream, open_vad
from actors.speech.vad_batch import Answer, BatchedSilero, Work
from protocol.native import Partial, ServerFrame, encoder
from protocol.native import Stop as StopFrame
from service.app import create_app
from service.config import Settings
from service.runtime import runtime, setup
from service.session.ports import StreamOptions
from service.session.supervisor import run_session
from service.supervision import ActorWatch

RATE = 16000
CLIPS = ("weather", "library", "garden", "call_me_back", "german", "spanish")
# (clip, client chunk in samples): 10 ms to a whole clip at once (more than `max_frames`)
SESSIONS = [
    ("weather", 160),
    ("library", 1000),
    ("garden", 1600),
    ("call_me_back", 4096),
    ("german", 7777),
    ("spanish", 512),
    ("call_me_back", 1_000_000),
]


def clip(name: str) -> Samples:
    """The clip between silences, so that each session has speech, pauses and onsets."""
    pause = np.zeros(RATE // 2, np.float32)
    return np.concatenate([pause, load(DATA / f"{name}.wav"), pause])


def chunks(audio: Samples, size: int) -> list[Samples]:
    return [audio[offset : offset + size] for offset in range(0, len(audio), size)]


def inline(audio: Samples, size: int) -> Samples:
    """What a session's own `StreamingVad` says, fed as the inline segmenter feeds it."""
    vad = StreamingVad()
    return np.concatenate([vad.probabilities(piece) for piece in chunks(audio, size)])


async def through_actor(vad: VadHandle, audio: Samples, size: int, *, yields: int = 0) -> Samples:
    """One session's probabilities from the actor; `yields` checkpoints between chunks."""
    pieces = []
    with vad.open_stream() as stream:
        for piece in chunks(audio, size):
            pieces.append(await stream.probabilities(piece))
            for _ in range(yields):
                await trio.lowlevel.checkpoint()
    return np.concatenate(pieces)


async def concurrently(
    vad: VadHandle, sessions: Sequence[tuple[str, int]], yields: Sequence[int]
) -> list[Samples]:
    results: list[Samples | None] = [None] * len(sessions)

    async def one(index: int) -> None:
        name, size = sessions[index]
        results[index] = await through_actor(vad, clip(name), size, yields=yields[index])

    async with trio.open_nursery() as nursery:
        for index in range(len(sessions)):
            nursery.start_soon(one, index)
    return [result for result in results if result is not None]


async def test_the_actor_gives_each_session_its_own_streaming_vad_probabilities() -> None:
    """Seven concurrent sessions, six clips, chunks of 10 ms to 19 s: bit for bit."""
    async with open_vad() as vad:
        got = await concurrently(vad, SESSIONS, [0] * len(SESSIONS))
        statistics = vad.statistics()
    for (name, size), probabilities in zip(SESSIONS, got, strict=True):
        expected = inline(clip(name), size)
        assert len(probabilities) == len(clip(name)) // FRAME
        assert np.array_equal(probabilities, expected), (name, size)
        assert probabilities.max() > 0.9 and probabilities.min() < 0.1  # speech and pauses
    assert statistics.largest_batch > 1 and statistics.batches < statistics.requests
    assert statistics.frames == sum(len(clip(name)) // FRAME for name, _ in SESSIONS)


async def test_a_segmenter_fed_by_the_actor_cuts_as_the_inline_one_does() -> None:
    weather, library = load(DATA / "weather.wav"), load(DATA / "library.wav")
    pause = np.zeros(RATE, np.float32)
    audio = np.concatenate([pause[:8000], weather, pause, library, pause, weather, pause])
    config = SegmenterConfig(max_utterance_s=4.0)

    def describe(events: Sequence[object]) -> list[tuple[object, ...]]:
        return [
            (type(e).__name__, *(e.utterance, e.final, e.start, e.end, e.revision, len(e.audio)))
            if isinstance(e, Segment)
            else (repr(e),)
            for e in events
        ]

    own = Segmenter(config)
    expected = [e for piece in chunks(audio, 1600) for e in own.feed(piece)]
    fed = Segmenter(config)
    events: list[object] = []
    async with open_vad() as vad:
        with vad.open_stream() as stream:
            for piece in chunks(audio, 1600):
                events += fed.feed(piece, await stream.probabilities(piece))
    assert describe(events) == describe(expected)
    assert sum(isinstance(e, Segment) and e.final for e in events) >= 3
    with pytest.raises(ValueError, match="probabilities for the"):
        list(Segmenter(config).feed(weather[: FRAME * 2], np.zeros(1, np.float32)))
    with pytest.raises(ValueError, match="runs its own VAD"):
        list(own.feed(weather[:FRAME], np.zeros(1, np.float32)))


async def test_sessions_are_independent_of_each_other_and_of_the_batches() -> None:
    """Alone, all together, or in reverse with other pauses: the same probabilities."""
    sessions = SESSIONS[:5]
    async with open_vad() as vad:
        alone = [await through_actor(vad, clip(name), size) for name, size in sessions]
        assert vad.statistics().largest_batch == 1
    async with open_vad() as vad:
        together = await concurrently(vad, sessions, [0] * len(sessions))
        together_batches = vad.statistics().batches
    async with open_vad() as vad:
        backwards = await concurrently(vad, sessions[::-1], [3, 0, 5, 1, 2])
        assert vad.statistics().batches != together_batches  # other batches, same answers
    for first, second, third in zip(alone, together, backwards[::-1], strict=True):
        assert np.array_equal(first, second) and np.array_equal(first, third)


class GatedModel:
    """The real batched model behind a gate (a `threading.Event`: it runs in the worker)."""

    def __init__(self, *, fail: bool = False) -> None:
        self.model = BatchedSilero()
        self.gate = threading.Event()
        self.gate.set()
        self.entered = threading.Event()
        self.batches: list[int] = []
        self.fail = fail

    def run(self, work: Sequence[Work]) -> list[Answer]:
        self.entered.set()
        self.gate.wait(timeout=30)
        self.batches.append(len(work))
        if self.fail:
            raise RuntimeError("the VAD model broke")
        return self.model.run(work)


async def test_a_session_that_leaves_frees_its_state_even_mid_batch() -> None:
    model = GatedModel()
    weather = clip("weather")
    async with open_vad(model) as vad:
        staying = vad.open_stream()
        leaving = [vad.open_stream() for _ in range(3)]
        assert vad.statistics().streams == 4
        for stream in leaving:
            await stream.probabilities(weather[:RATE])
        leaving[0].close()
        leaving[0].close()  # idempotent
        assert vad.statistics().streams == 3
        model.gate.clear()
        model.entered.clear()
        async with trio.open_nursery() as nursery:
            # one session leaves while its frames are in the model, one while they wait
            running = trio.CancelScope()
            queued = trio.CancelScope()

            async def leave(stream: VadStream, scope: trio.CancelScope) -> None:
                with scope, stream:  # as the segmenter stage holds its stream
                    await stream.probabilities(weather[RATE : 2 * RATE])

            nursery.start_soon(leave, leaving[1], running)
            await trio.to_thread.run_sync(model.entered.wait)
            nursery.start_soon(leave, leaving[2], queued)
            await trio.testing.wait_all_tasks_blocked()
            assert vad.statistics().queue == 1
            running.cancel()  # the session goes; the batch it was in runs on in its thread
            queued.cancel()
            await trio.testing.wait_all_tasks_blocked()
            assert vad.statistics().streams == 1
            model.gate.set()
        assert vad.statistics().streams == 1  # the finished batch did not bring one back
        with staying:
            probabilities = await staying.probabilities(weather)
        assert np.array_equal(probabilities, inline(weather, len(weather)))
        statistics = vad.statistics()
    assert statistics.streams == 0 and statistics.dropped == 1
    with pytest.raises(trio.ClosedResourceError):
        await staying.probabilities(weather)


async def test_a_cancelled_call_breaks_its_stream_and_nothing_else() -> None:
    model = GatedModel()
    weather = clip("weather")
    async with open_vad(model) as vad:
        model.gate.clear()
        with vad.open_stream() as broken, vad.open_stream() as fine:
            with trio.move_on_after(0.05):
                await broken.probabilities(weather[:RATE])
            model.gate.set()
            with pytest.raises(trio.BrokenResourceError):
                await broken.probabilities(weather[RATE:])
            result = await fine.probabilities(weather)
    assert np.array_equal(result, inline(weather, len(weather)))


async def test_the_queue_is_bounded_and_a_full_one_pushes_back() -> None:
    model = GatedModel()
    audio = clip("garden")[:RATE]
    async with open_vad(model, VadConfig(queue_size=2, max_streams=3)) as vad:
        model.gate.clear()
        async with trio.open_nursery() as nursery:
            nursery.start_soon(through_actor, vad, audio, len(audio))
            await trio.to_thread.run_sync(model.entered.wait)
            for _ in range(5):
                nursery.start_soon(through_actor, vad, audio, len(audio))
            await trio.testing.wait_all_tasks_blocked()
            assert vad.statistics().queue == 2  # the other three wait in `send`
            model.gate.set()
    assert model.batches == [1, 3, 2]  # at most `max_streams` a batch


async def test_a_dead_actor_fails_its_callers_and_is_named_like_the_transcriber() -> None:
    watch = ActorWatch()
    model = GatedModel(fail=True)
    model.gate.clear()
    audio = clip("garden")
    errors: list[BaseException] = []

    async def session(vad: VadHandle) -> None:
        with vad.open_stream() as stream:
            try:
                await stream.probabilities(audio)
            except VadClosed as error:
                errors.append(error)

    async def lifespan(*, task_status: trio.TaskStatus[VadHandle]) -> None:
        with pytest.RaisesGroup(pytest.RaisesExc(RuntimeError, match="VAD model broke")):
            async with watch.watch("vad", open_vad(model)) as vad:
                task_status.started(vad)
                await trio.sleep_forever()

    async with trio.open_nursery() as nursery:
        vad = await nursery.start(lifespan)
        nursery.start_soon(session, vad)
        nursery.start_soon(session, vad)
        await trio.to_thread.run_sync(model.entered.wait)
        await trio.testing.wait_all_tasks_blocked()
        model.gate.set()
        await watch.wait_died()
    assert list(watch.died) == ["vad"] and "VAD model broke" in watch.died["vad"]
    assert len(errors) == 2 and all("VAD actor stopped" in str(error) for error in errors)
    with pytest.raises(VadClosed), vad.open_stream() as stream:
        await stream.probabilities(audio)


async def test_the_apps_vad_actor_dying_turns_health_to_503_naming_it(tmp_path: Path) -> None:
    app = create_app(Settings(model="fake", data_dir=tmp_path), model=FakeModel())
    async with serve_app(app) as address, httpx.AsyncClient(base_url=f"http://{address}") as http:
        assert (await http.get("/health")).status_code == 200
        vad = runtime(app).vad
        with vad.open_stream() as stream, pytest.raises(VadClosed):
            # frames that are not 512 samples wide: the model raises, the actor dies of it
            await vad._submit(stream._stream, np.zeros((1, 100), np.float32))
        with trio.fail_after(10):
            await setup(app).actors.wait_died()
        health = await http.get("/health")
        assert health.status_code == 503 and health.json()["died"] == ["vad"]
        assert health.json()["died_of"]["vad"].startswith("ValueError")


def by_kind(frames: Sequence[ServerFrame]) -> list[tuple[object, ...]]:
    """A session's frames but partials, each kind in its order. Partials come at most once per
    step fed, and the stage feeds the actor's path the chunks already waiting in one step: how
    many depends on timing, the finals do not. How the segmenter's and the transcriber's
    frames interleave depends on timing too."""
    seen = [
        (type(f).__name__, getattr(f, "start", None), getattr(f, "end", None))
        for f in frames
        if not isinstance(f, Partial)
    ]
    return sorted(seen, key=lambda frame: str(frame[0]))  # stable: each kind keeps its order


async def test_a_session_through_the_actor_says_what_an_inline_one_says() -> None:
    """The segmenter stage with the shared actor: the same finals as with its own VAD."""
    weather, library = load(DATA / "weather.wav"), load(DATA / "library.wav")
    pause = np.zeros(RATE, np.float32)
    audio = np.concatenate([pause[:8000], weather, pause, library, pause])
    options = StreamOptions(model="fake", final_beam_size=1, pace=0)

    async def session(vad: VadHandle | None) -> list[tuple[object, ...]]:
        socket = FakeSocket()
        data = pcm16(audio)
        for offset in range(0, len(data), 3200):
            await socket.to_server.send(data[offset : offset + 3200])
        await socket.to_server.send(encoder.encode(StopFrame()).decode())
        await run_session(native_session(socket, FakeTranscriber(), options, vad=vad))
        return by_kind(await socket.frames())

    expected = await session(None)
    async with open_vad() as vad:
        assert await session(vad) == expected
        assert vad.statistics().streams == 0 and vad.statistics().frames > 0
    assert [kind for kind, *_ in expected].count("Final") == 2


async def test_a_gathering_batch_waits_for_the_other_open_streams_only() -> None:
    model = GatedModel()
    audio = clip("garden")[: 3 * FRAME]
    async with open_vad(model, VadConfig(gather_s=0.5)) as vad:
        with vad.open_stream() as lone:  # no other stream: nothing to wait for
            started = trio.current_time()
            await lone.probabilities(audio)
            assert trio.current_time() - started < 0.4

        async def submit(stream: VadStream, delay: float) -> None:
            await trio.sleep(delay)
            await stream.probabilities(audio)

        streams = [vad.open_stream() for _ in range(3)]
        started = trio.current_time()
        async with trio.open_nursery() as nursery:  # all three: one batch, soon as they are in
            for index, stream in enumerate(streams):
                nursery.start_soon(submit, stream, 0.05 * index)
        assert trio.current_time() - started < 0.4
        started = trio.current_time()
        async with trio.open_nursery() as nursery:  # one silent: the others wait it out
            nursery.start_soon(submit, streams[0], 0.0)
            nursery.start_soon(submit, streams[1], 0.05)
        assert trio.current_time() - started >= 0.45
        for stream in streams:
            stream.close()
    assert model.batches == [1, 3, 2]


async def test_chunks_already_waiting_go_to_the_vad_in_one_request() -> None:
    """A client sending 20 ms PCM chunks ahead of real time: the segmenter stage joins what is
    waiting (up to 2 s) into one request, so a gathering window cannot hold it to one chunk per
    batch, and the session says exactly what it says with its own VAD."""
    audio = np.concatenate([np.zeros(8000, np.float32), load(DATA / "weather.wav")])
    data = pcm16(np.concatenate([audio, np.zeros(RATE, np.float32)]))
    options = StreamOptions(model="fake", final_beam_size=1, pace=0)
    requests: list[int] = []

    class Counting:
        def __init__(self, stream: VadStream) -> None:
            self.stream = stream

        async def probabilities(self, samples: Samples) -> Samples:
            requests.append(len(samples))
            return await self.stream.probabilities(samples)

        def close(self) -> None:
            self.stream.close()

    class CountingVad:
        def __init__(self, vad: VadHandle) -> None:
            self.vad = vad

        def open_stream(self) -> Counting:
            return Counting(self.vad.open_stream())

    async def session(vad: CountingVad | None) -> list[tuple[object, ...]]:
        socket = FakeSocket()
        chunks = [data[offset : offset + 640] for offset in range(0, len(data), 640)]
        async with trio.open_nursery() as nursery:

            async def send() -> None:
                for chunk in chunks:
                    await socket.to_server.send(chunk)
                await socket.to_server.send(encoder.encode(StopFrame()).decode())

            nursery.start_soon(send)
            await run_session(native_session(socket, FakeTranscriber(), options, vad=vad))
        return by_kind(await socket.frames())

    expected = await session(None)
    async with open_vad(config=VadConfig(gather_s=0.03)) as vad:
        assert await session(CountingVad(vad)) == expected
    chunk_count = -(-len(data) // 640)
    assert sum(requests) == len(audio) + RATE
    assert len(requests) < chunk_count / 4, (len(requests), chunk_count)
    assert max(requests) <= 32_000 + 320
