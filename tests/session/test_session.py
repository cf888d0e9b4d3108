"""The per-connection supervisor with fakes: the pipeline's order, drain, disconnects, bounds."""

from __future__ import annotations

import functools
import tracemalloc
from collections.abc import Awaitable, Callable

import numpy as np
import pytest
import trio
import trio.testing
from support.audio_files import DATA, load, pcm16
from support.fakes import FakeSocket, FakeTranscriber, frame_types
from support.session_parts import RecordingHooks, native_session, speech_with_pauses

from actors.model.port import Priority, Request, Result, Samples
from actors.speech.vad import StreamingVad
from actors.transcriber.actor import TranscriptionFailed
from protocol.native import (
    Config,
    Error,
    Final,
    Finalized,
    Partial,
    Ready,
    ServerFrame,
    SpeechStarted,
    Status,
    Stopped,
    UtteranceEnd,
    encoder,
)
from protocol.native import Finalize as FinalizeFrame
from protocol.native import Stop as StopFrame
from service.session.handle import SessionHandle
from service.session.ports import SessionLimits, StreamOptions
from service.session.state import SessionStatistics
from service.session.supervisor import memory_bound, run_session

OPTIONS = StreamOptions(model="fake", final_beam_size=1)


async def stream(socket: FakeSocket, audio: Samples, *, then: list[object]) -> None:
    data = pcm16(audio)
    for offset in range(0, len(data), 3200):
        await socket.to_server.send(data[offset : offset + 3200])
    for frame in then:
        await socket.to_server.send(encoder.encode(frame).decode())


async def run_while(
    client: Callable[[], Awaitable[None]],
    socket: FakeSocket,
    transcriber: FakeTranscriber,
    options: StreamOptions,
) -> tuple[SessionStatistics, list[ServerFrame]]:
    """Run a session while `client` talks to it (stopped once the session has ended); its
    statistics and the frames it sent."""
    async with trio.open_nursery() as nursery:
        nursery.start_soon(client)
        state = await run_session(native_session(socket, transcriber, options))
        frames = await socket.frames()
        nursery.cancel_scope.cancel()
    return state, frames


async def test_stop_drains_through_every_stage() -> None:
    socket, transcriber, hooks = FakeSocket(), FakeTranscriber(), RecordingHooks()
    audio = speech_with_pauses()
    async with trio.open_nursery() as nursery:
        nursery.start_soon(lambda: stream(socket, audio, then=[StopFrame()]))
        state = await run_session(native_session(socket, transcriber, OPTIONS, hooks=hooks))
        frames = await socket.frames()
    kinds = frame_types(frames)
    assert kinds[0] == "Ready" and kinds[-1] == "Stopped"
    finals = [f for f in frames if isinstance(f, Final)]
    assert len(finals) == 2 and [f.utterance for f in finals] == [0, 1]
    stopped = frames[-1]
    assert isinstance(stopped, Stopped)
    assert stopped.transcript == " ".join(f.text for f in finals)
    assert stopped.utterances == 2 and abs(stopped.duration_s - len(audio) / 16000) < 0.01
    assert [f.seq for f in frames] == list(range(1, len(frames) + 1))
    for final in finals:  # utterance_end follows its final; speech_started precedes it
        after = frames[frames.index(final) + 1]
        assert isinstance(after, UtteranceEnd) and after.utterance == final.utterance
    assert isinstance(frames[1], SpeechStarted)
    assert any(isinstance(f, Partial) for f in frames)
    assert socket.closed_with == 1000 and state.stop_reason == "stop"
    assert hooks.events == [
        "started /v1/stream",
        "final 0",
        "final 1",
        f"ended stop {round(len(audio) / 16000, 3)}",
    ]
    assert hooks.audio_samples == len(audio)
    # what admission learns of this session: the audio it sent, and how much of it was speech
    assert state.received_s == pytest.approx(len(audio) / 16000)
    spoken = sum(f.end - f.start for f in finals)
    assert state.speech_s == pytest.approx(spoken, abs=0.01) and state.speech_s < state.received_s
    priorities = {priority for _, priority in transcriber.calls}
    assert priorities == {"final", "first_partial", "partial"}


async def test_finalize_keeps_the_stream_open_and_loses_nothing() -> None:
    socket, transcriber = FakeSocket(), FakeTranscriber()
    garden = load(DATA / "garden.wav")
    half = len(garden) // 2
    async with trio.open_nursery() as nursery:

        async def client() -> None:
            await stream(socket, garden[:half], then=[FinalizeFrame()])
            await stream(
                socket,
                np.concatenate([garden[half:], np.zeros(16000, np.float32)]),
                then=[StopFrame()],
            )

        nursery.start_soon(client)
        await run_session(native_session(socket, transcriber, OPTIONS))
        frames = await socket.frames()
    finals = [f for f in frames if isinstance(f, Final)]
    assert len(finals) == 2
    assert finals[0].from_finalize and not finals[1].from_finalize
    assert finals[0].end == round(half / 16000, 3) <= finals[1].start + 0.001
    assert finals[1].end > finals[0].end


async def test_a_finalize_with_an_id_is_answered_after_its_final() -> None:
    """`finalized` {id} follows the final of the utterance the `finalize` cut, and comes for a
    `finalize` that found nothing to cut too (the OpenAI Realtime commit relies on both)."""
    socket, transcriber = FakeSocket(), FakeTranscriber()
    garden = load(DATA / "garden.wav")
    half = len(garden) // 2

    async def client() -> None:
        await stream(socket, garden[:half], then=[FinalizeFrame(id="cut")])
        await stream(socket, np.zeros(8000, np.float32), then=[FinalizeFrame(id=7), StopFrame()])

    _, frames = await run_while(client, socket, transcriber, OPTIONS)
    answered = [f for f in frames if isinstance(f, (Final, Finalized))]
    assert [type(f).__name__ for f in answered] == ["Final", "Finalized", "Finalized"]
    assert isinstance(answered[0], Final) and answered[0].from_finalize
    assert [f.id for f in answered if isinstance(f, Finalized)] == ["cut", 7]


async def test_partial_never_follows_its_final() -> None:
    socket, transcriber = FakeSocket(), FakeTranscriber()
    async with trio.open_nursery() as nursery:
        nursery.start_soon(lambda: stream(socket, speech_with_pauses(), then=[StopFrame()]))
        await run_session(native_session(socket, transcriber, OPTIONS))
        frames = await socket.frames()
    finalized = -1
    for frame in frames:
        if isinstance(frame, Final):
            finalized = frame.utterance
        if isinstance(frame, Partial):
            assert frame.utterance > finalized


async def test_client_that_vanishes_ends_the_session_and_finals_are_still_stored() -> None:
    socket, transcriber, hooks = FakeSocket(), FakeTranscriber(), RecordingHooks()
    transcriber.gate = trio.Event()  # hold the model until the client has gone

    async def client() -> None:
        await stream(socket, speech_with_pauses(), then=[])
        await trio.testing.wait_all_tasks_blocked()
        await socket.to_server.aclose()
        await socket.from_server.aclose()  # nobody reads any more
        transcriber.gate.set()

    async with trio.open_nursery() as nursery:
        nursery.start_soon(client)
        state = await run_session(native_session(socket, transcriber, OPTIONS, hooks=hooks))
    assert state.client_gone and state.stop_reason == "client_closed"
    assert "final 0" in hooks.events and "final 1" in hooks.events


async def test_idle_stream_is_closed_with_a_reason(autojump_clock: trio.abc.Clock) -> None:
    socket, transcriber = FakeSocket(), FakeTranscriber()
    options = StreamOptions(model="fake", limits=SessionLimits(idle_timeout_s=5.0))
    state = await run_session(native_session(socket, transcriber, options))
    frames = await socket.frames()
    assert isinstance(frames[0], Ready)
    errors = [f for f in frames if isinstance(f, Error)]
    assert errors and errors[0].code == "idle_timeout" and errors[0].fatal
    assert isinstance(frames[-1], Stopped) and state.stop_reason == "idle_timeout"


async def test_per_session_memory_stays_under_the_written_bound() -> None:
    """A client streams speech at a transcriber that never answers: finals pile up until every
    channel is full, the client is pushed back, and what the session allocated at its peak
    (tracemalloc: numpy arrays included) stays under `memory_bound` for its limits. With an
    unbounded channel the segmenter would keep cutting the 10 minutes sent, far past it."""
    limits = SessionLimits(queue_size=4, max_frame_bytes=6400)
    options = StreamOptions(model="fake", pace=0, limits=limits)
    config = Config()
    socket, transcriber = FakeSocket(size=4), FakeTranscriber()
    transcriber.gate = trio.Event()  # never set: the model never answers
    data = pcm16(np.concatenate([speech_with_pauses()] * 60))  # about 10 minutes
    offsets = range(0, len(data), 3200)
    StreamingVad().probabilities(np.zeros(16000, np.float32))  # the model loaded, untraced
    handles: list[SessionHandle] = []
    sent = 0

    async def client() -> None:
        nonlocal sent
        for offset in offsets:  # each frame new bytes, as a socket would receive them
            await socket.to_server.send(data[offset : offset + 3200])
            sent += 1

    async def discard_frames() -> None:
        async for _ in socket.from_server:
            pass

    tracemalloc.start()
    try:
        baseline = tracemalloc.get_traced_memory()[0]
        async with trio.open_nursery() as nursery:
            nursery.start_soon(client)
            nursery.start_soon(discard_frames)
            session = native_session(socket, transcriber, options, config=config)
            handles.append(SessionHandle.of(session))
            nursery.start_soon(run_session, session)
            await trio.testing.wait_all_tasks_blocked(cushion=0.1)
            peak = tracemalloc.get_traced_memory()[1] - baseline
            nursery.cancel_scope.cancel()
    finally:
        tracemalloc.stop()
    bound = memory_bound(limits, config)
    assert peak < bound, f"peak {peak / 1e6:.1f} MB over the bound {bound / 1e6:.1f} MB"
    assert sent < len(offsets) // 4  # pushed back: most of the audio was never taken
    assert handles[0].statistics().received_s < 150.0


async def test_status_reports_lag_while_behind_and_once_caught_up(
    autojump_clock: trio.abc.Clock,
) -> None:
    socket, transcriber = FakeSocket(), FakeTranscriber()
    transcriber.gate = trio.Event()  # the model is stuck: finals pile up

    async def client() -> None:
        data = pcm16(speech_with_pauses())
        for offset in range(0, len(data), 3200):  # real-time pace, on the virtual clock
            await socket.to_server.send(data[offset : offset + 3200])
            await trio.sleep(0.1)
        await trio.sleep(3.0)
        transcriber.gate.set()
        await trio.sleep(3.0)
        await socket.to_server.send(encoder.encode(StopFrame()).decode())

    async with trio.open_nursery() as nursery:
        nursery.start_soon(client)
        await run_session(native_session(socket, transcriber, OPTIONS))
        frames = await socket.frames()
    statuses = [f for f in frames if isinstance(f, Status)]
    assert statuses and max(s.lag_s for s in statuses) > 1.0
    assert statuses[-1].lag_s == 0.0 and statuses[-1].queue == 0
    assert any(s.degraded for s in statuses)


async def test_session_length_limit_ends_the_session(autojump_clock: trio.abc.Clock) -> None:
    socket, transcriber = FakeSocket(), FakeTranscriber()
    options = StreamOptions(
        model="fake", limits=SessionLimits(max_session_s=5.0, idle_timeout_s=2.0)
    )

    async def client() -> None:
        await socket.to_server.send(pcm16(np.zeros(1600, np.float32)))
        for _ in range(20):  # keepalives hold off the idle limit, not the length limit
            await socket.to_server.send('{"type": "keepalive"}')
            await trio.sleep(1.0)

    state, frames = await run_while(client, socket, transcriber, options)
    errors = [f for f in frames if isinstance(f, Error)]
    assert [e.code for e in errors] == ["session_too_long"]
    assert state.stop_reason == "session_too_long" and isinstance(frames[-1], Stopped)


class DeafSocket(FakeSocket):
    """A client that sends but never reads: every send blocks."""

    async def send(self, message: str | bytes) -> None:
        await trio.sleep_forever()


async def test_client_that_stops_reading_is_dropped_and_finals_still_stored(
    autojump_clock: trio.abc.Clock,
) -> None:
    socket, transcriber, hooks = DeafSocket(), FakeTranscriber(), RecordingHooks()
    options = StreamOptions(model="fake", limits=SessionLimits(send_timeout_s=10.0))
    async with trio.open_nursery() as nursery:
        nursery.start_soon(lambda: stream(socket, speech_with_pauses(), then=[]))
        state = await run_session(native_session(socket, transcriber, options, hooks=hooks))
    assert state.stop_reason == "slow_reader" and state.client_gone
    assert "final 0" in hooks.events and "final 1" in hooks.events


@pytest.mark.parametrize(("pace", "least_s"), [(0.0, 0.0), (1.5, (40.0 - 10.0) / 1.5)])
async def test_a_client_faster_than_real_time_is_read_at_the_pace(
    autojump_clock: trio.abc.Clock, pace: float, least_s: float
) -> None:
    """40 s of audio sent at once: read 10 s ahead of real time, then at 1.5x; nothing lost."""
    socket, transcriber = FakeSocket(), FakeTranscriber()
    options = StreamOptions(model="fake", pace=pace, pace_burst_s=10.0)
    audio = np.concatenate([speech_with_pauses()] * 5)[: 40 * 16000]
    begin = trio.current_time()
    async with trio.open_nursery() as nursery:
        nursery.start_soon(lambda: stream(socket, audio, then=[StopFrame()]))
        state = await run_session(native_session(socket, transcriber, options))
        frames = await socket.frames()
    took = trio.current_time() - begin
    assert least_s <= took < least_s + 2.0
    assert state.received_s == pytest.approx(40.0)
    assert isinstance(frames[-1], Stopped) and frames[-1].duration_s == pytest.approx(40.0)


async def test_session_length_counts_audio_time_for_a_client_faster_than_real_time(
    autojump_clock: trio.abc.Clock,
) -> None:
    """20 s of audio sent at once, pacing off: the 5 s limit is reached in audio, not wall time."""
    socket, transcriber = FakeSocket(size=1024), FakeTranscriber()
    options = StreamOptions(model="fake", pace=0, limits=SessionLimits(max_session_s=5.0))
    audio = np.concatenate([speech_with_pauses()] * 3)[: 20 * 16000]
    begin = trio.current_time()
    async with trio.open_nursery() as nursery:
        nursery.start_soon(lambda: stream(socket, audio, then=[]))
        state = await run_session(native_session(socket, transcriber, options))
        frames = await socket.frames()
        nursery.cancel_scope.cancel()
    errors = [f for f in frames if isinstance(f, Error)]
    assert [e.code for e in errors] == ["session_too_long"]
    assert "audio for 5 s" in errors[0].message
    assert trio.current_time() - begin < 5.0
    # what was already queued is finished, nothing much beyond the limit is read
    assert 5.0 <= state.received_s < 5.0 + 17 * 0.1


async def test_keepalives_alone_do_not_hold_a_session_forever(
    autojump_clock: trio.abc.Clock,
) -> None:
    socket, transcriber = FakeSocket(), FakeTranscriber()
    limits = SessionLimits(idle_timeout_s=2.0, audio_idle_timeout_s=6.0)
    options = StreamOptions(model="fake", limits=limits)

    async def client() -> None:
        await socket.to_server.send(pcm16(np.zeros(3200, np.float32)))
        for _ in range(30):  # keepalives hold off the idle limit, not the audio-idle one
            await socket.to_server.send('{"type": "keepalive"}')
            await trio.sleep(1.0)

    begin = trio.current_time()
    state, frames = await run_while(client, socket, transcriber, options)
    errors = [f for f in frames if isinstance(f, Error)]
    assert [e.code for e in errors] == ["audio_idle_timeout"]
    assert state.stop_reason == "audio_idle_timeout"
    assert 6.0 <= trio.current_time() - begin < 7.0


async def test_keepalives_before_any_audio_do_not_hold_the_slot(
    autojump_clock: trio.abc.Clock,
) -> None:
    """A session that has sent no audio since it opened ends at the idle timeout, whatever
    keepalives it sends (before the fix they held it for the audio-idle timeout, 600 s by
    default: 20 identities could fill the 200 slots for free)."""
    socket, transcriber = FakeSocket(), FakeTranscriber()
    limits = SessionLimits(idle_timeout_s=2.0, audio_idle_timeout_s=60.0)
    options = StreamOptions(model="fake", limits=limits)

    async def client() -> None:
        for _ in range(100):
            await socket.to_server.send('{"type": "keepalive"}')
            await trio.sleep(0.5)

    begin = trio.current_time()
    state, frames = await run_while(client, socket, transcriber, options)
    assert [f.code for f in frames if isinstance(f, Error)] == ["idle_timeout"]
    assert state.stop_reason == "idle_timeout"
    assert 2.0 <= trio.current_time() - begin < 2.5


class BrokenSocket(FakeSocket):
    """A transport that fails with an unexpected error after the first audio."""

    async def receive(self) -> str | bytes:
        message = await super().receive()
        if isinstance(message, bytes):
            raise RuntimeError("the transport broke")
        return message


async def test_a_stage_that_fails_still_ends_the_session_in_the_store() -> None:
    socket, transcriber, hooks = BrokenSocket(), FakeTranscriber(), RecordingHooks()
    with pytest.RaisesGroup(pytest.RaisesExc(RuntimeError, match="broke"), flatten_subgroups=True):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(lambda: stream(socket, speech_with_pauses(), then=[]))
            await run_session(native_session(socket, transcriber, OPTIONS, hooks=hooks))
    assert hooks.events[0] == "started /v1/stream"
    assert hooks.events[-1].startswith("ended ")  # the recording closed, the row ended


class SlowTranscriber(FakeTranscriber):
    """Every request takes 1.5 s: a model that keeps up, but not quickly."""

    async def transcribe(
        self, request: Request, *, priority: Priority = "final", **_: object
    ) -> Result:
        await trio.sleep(1.5)
        return await super().transcribe(request, priority=priority)


async def test_a_client_ahead_of_real_time_is_not_lagging_while_the_model_keeps_up(
    autojump_clock: trio.abc.Clock,
) -> None:
    """40 s sent at once is read 10 s ahead of real time; its finals take 1.5 s each, so it is
    a final or two behind. A lag counted in audio read past the oldest pending final said 7.7 s,
    and admission, which refuses new sessions while one lags 3 s, refused everyone for it."""
    socket, transcriber = FakeSocket(size=1024), SlowTranscriber()
    options = StreamOptions(model="fake", pace=1.5, pace_burst_s=10.0)
    audio = np.concatenate([speech_with_pauses()] * 5)[: 40 * 16000]
    async with trio.open_nursery() as nursery:
        nursery.start_soon(lambda: stream(socket, audio, then=[StopFrame()]))
        await run_session(native_session(socket, transcriber, options))
        frames = await socket.frames()
    assert sum(isinstance(f, Final) for f in frames) >= 8
    lags = [f.lag_s for f in frames if isinstance(f, Status)]
    # at most two finals' time (the burst queues two at once), not the audio read ahead (7.7 s)
    assert max(lags, default=0.0) <= 3.1, lags


class FailingTranscriber(FakeTranscriber):
    async def transcribe(
        self, request: Request, *, priority: Priority = "final", **_: object
    ) -> Result:
        raise TranscriptionFailed("RuntimeError: /opt/models/secret.bin: CUDA out of memory")


async def test_a_model_error_is_flagged_without_its_text(
    caplog: pytest.LogCaptureFixture,
) -> None:
    socket = FakeSocket()
    async with trio.open_nursery() as nursery:
        nursery.start_soon(lambda: stream(socket, speech_with_pauses(), then=[StopFrame()]))
        await run_session(native_session(socket, FailingTranscriber(), OPTIONS))
        frames = await socket.frames()
    finals = [f for f in frames if isinstance(f, Final)]
    assert finals and all(
        f.flags == ["model_error: the model failed on this utterance"] for f in finals
    )
    assert "secret.bin" not in str(frames) and "secret.bin" in caplog.text  # logged, not sent


def _wav_u8(seconds: float) -> bytes:
    """`seconds` of 8 kHz 8-bit speech-like noise as one WAV (a small file for its length)."""
    import io
    import wave

    rng = np.random.default_rng(3)
    data = (128 + rng.normal(0, 20, int(seconds * 8000))).clip(0, 255).astype(np.uint8)
    out = io.BytesIO()
    with wave.open(out, "wb") as wav:
        wav.setnchannels(1)
        wav.setsampwidth(1)
        wav.setframerate(8000)
        wav.writeframes(data.tobytes())
    return out.getvalue()


@pytest.mark.parametrize("whole", [True, False])
async def test_a_container_chunk_decodes_to_its_wall_clock_share_at_most(whole: bool) -> None:
    """20 s of WAV in one chunk is refused at once (7 s: the pacer's 2 s burst and 5 s of
    slack); the same bytes in half-second chunks decode whole, read at the pace (4x here).
    Real time: the decoder runs in a worker thread, which an autojump clock would skip past."""
    socket, transcriber = FakeSocket(size=1024), FakeTranscriber()
    options = StreamOptions(model="fake", final_beam_size=1, pace=4.0, pace_burst_s=2.0)
    wav = _wav_u8(20.0)
    pieces = [wav] if whole else [wav[at : at + 4000] for at in range(0, len(wav), 4000)]

    async def client() -> None:
        for piece in pieces:  # 4000 bytes: half a second
            await socket.to_server.send(piece)
        await socket.to_server.send('{"type": "stop"}')

    async with trio.open_nursery() as nursery:
        nursery.start_soon(client)
        state = await run_session(
            native_session(socket, transcriber, options, config=Config(encoding="auto"))
        )
        frames = await socket.frames()
        nursery.cancel_scope.cancel()
    errors = [f for f in frames if isinstance(f, Error)]
    if whole:
        assert [e.code for e in errors] == ["undecodable_audio"]
        assert "more than 7 s" in errors[0].message
        assert state.received_s == 0.0
    else:
        assert errors == [] and state.received_s == pytest.approx(20.0, abs=0.1)


async def test_the_config_settles_at_the_first_audio_and_every_stage_uses_it() -> None:
    """A `config` frame before audio is answered with `ready` and is what the segmenter cuts
    with and the transcriber client decodes with; one after audio is refused and changes
    nothing."""
    socket, transcriber = FakeSocket(), FakeTranscriber()
    before = Config(prompt="weather and books", words=True, interim=False, endpointing_ms=800)
    after = Config(prompt="something else")

    async def client() -> None:
        await socket.to_server.send(encoder.encode(before).decode())
        await stream(socket, speech_with_pauses(), then=[after, StopFrame()])

    async with trio.open_nursery() as nursery:
        nursery.start_soon(client)
        await run_session(native_session(socket, transcriber, OPTIONS))
        frames = await socket.frames()
    readies = [f for f in frames if isinstance(f, Ready)]
    assert len(readies) == 2  # the session's, then the answer to `before`
    errors = [f for f in frames if isinstance(f, Error)]
    assert [e.code for e in errors] == ["config_after_audio"]
    assert not any(isinstance(f, Partial) for f in frames)  # interim=false: no drafts asked
    assert transcriber.calls and all(p == "final" for _, p in transcriber.calls)
    asked = [request.options for request, _ in transcriber.calls]
    assert all(o.prompt == "weather and books" and o.words and o.language == "en" for o in asked)


async def test_unless_raises_what_the_work_raised_bare() -> None:
    """`unless` (the reader's wait behind the pacer): True when the work finished, False when
    the stop came first, and an error from the work as itself, so `except
    trio.BrokenResourceError` still catches a segmenter that closed its channel (inside the
    nursery it came out in an exception group that nothing caught)."""
    from service.session.ports import unless

    gone = trio.Event()
    assert await unless(gone.wait, trio.lowlevel.checkpoint)
    gone.set()
    assert not await unless(gone.wait, trio.sleep_forever)
    send, receive = trio.open_memory_channel[int](0)
    await receive.aclose()
    with pytest.raises(trio.BrokenResourceError):
        await unless(trio.Event().wait, functools.partial(send.send, 1))
