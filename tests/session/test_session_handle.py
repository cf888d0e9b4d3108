"""`SessionHandle`: what the server holds of a live session. `stop(reason, code)` ends it
cleanly (finals finished, `stopped`, the close code), `statistics()` reads its meters, and a
session that has ended leaves `LiveSessions`; with fakes, then through the app."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import trio
import trio.testing
from conftest import serve_app
from support.audio_files import DATA, load, pcm16
from support.fakes import FakeModel, FakeSocket, FakeTranscriber
from support.session_parts import RecordingHooks, native_session, speech_with_pauses
from support.ws_client import connect, receive_all, send_audio

from protocol.native import Final, Stopped, encoder
from protocol.native import Stop as StopFrame
from service.app import create_app
from service.config import Settings
from service.runtime import runtime
from service.session.handle import SessionHandle
from service.session.ports import StreamOptions
from service.session.state import SessionStatistics
from service.session.supervisor import run_session

OPTIONS = StreamOptions(model="fake", final_beam_size=1)


async def test_stop_ends_the_session_cleanly_with_its_close_code() -> None:
    """Stopped mid-utterance: the reader stops taking audio, the open utterance is cut and its
    final sent, then `stopped`, and the socket closes with the code `stop` was given."""
    socket, transcriber, hooks = FakeSocket(), FakeTranscriber(), RecordingHooks()
    garden = load(DATA / "garden.wav")
    session = native_session(socket, transcriber, OPTIONS, hooks=hooks)
    handle = SessionHandle.of(session)
    async with trio.open_nursery() as nursery:

        async def stop_when_heard() -> None:
            await socket.to_server.send(pcm16(garden[: len(garden) * 2 // 3]))
            await trio.testing.wait_all_tasks_blocked()
            handle.stop("server_shutdown", 1012)

        nursery.start_soon(stop_when_heard)
        statistics = await run_session(session)
        frames = await socket.frames()
    finals = [f for f in frames if isinstance(f, Final)]
    assert len(finals) == 1 and finals[0].text
    assert isinstance(frames[-1], Stopped) and frames[-1].utterances == 1
    assert socket.closed_with == 1012
    assert statistics.stop_reason == "server_shutdown" and statistics.close_code == 1012
    assert hooks.events[-1].startswith("ended server_shutdown ")
    assert handle.session_id == statistics.session_id


async def test_statistics_reflect_the_audio_received_and_the_finals_owed() -> None:
    socket, transcriber = FakeSocket(), FakeTranscriber()
    transcriber.gate = trio.Event()  # the model holds every final until the test lets it go
    audio = speech_with_pauses()
    session = native_session(socket, transcriber, OPTIONS)
    handle = SessionHandle.of(session)
    seen: list[SessionStatistics] = []

    async def client() -> None:
        await socket.to_server.send(pcm16(audio))
        await trio.testing.wait_all_tasks_blocked()
        seen.append(handle.statistics())
        await trio.sleep(0.3)
        seen.append(handle.statistics())
        transcriber.gate.set()
        await socket.to_server.send(encoder.encode(StopFrame()).decode())

    async with trio.open_nursery() as nursery:
        nursery.start_soon(client)
        last = await run_session(session)
        frames = await socket.frames()
    heard, later = seen
    assert heard.received_s == pytest.approx(len(audio) / 16000)
    assert 0 < heard.speech_s < heard.received_s
    assert heard.queue == 2  # both utterances cut, neither final answered
    assert later.lag_s >= 0.3 > heard.lag_s
    assert later.received_s == heard.received_s and later.stop_reason == "client_closed"
    finals = [f for f in frames if isinstance(f, Final)]
    assert (last.queue, last.lag_s, len(finals)) == (0, 0.0, 2)
    assert last.received_s == heard.received_s and last.stop_reason == "stop"


async def test_a_stopped_session_leaves_the_live_sessions(tmp_path: Path) -> None:
    """Through the app: the session's handle is in the live sessions while it runs; once
    stopped it ends on its own (closed with the code given) and leaves."""
    app = create_app(Settings(model="fake", data_dir=tmp_path), model=FakeModel())
    async with serve_app(app) as address, connect(f"ws://{address}/v1/stream") as ws:
        live = runtime(app).live
        await send_audio(ws, np.concatenate([load(DATA / "weather.wav")] * 2))
        with trio.fail_after(10):
            while not any(s.statistics().received_s for s in live.values()):  # noqa: ASYNC110
                await trio.sleep(0.01)
        [handle] = live.values()
        handle.stop("server_shutdown", 1012)
        frames = await receive_all(ws)
        with trio.fail_after(10):
            await live.wait_empty()
    assert frames[-1]["type"] == "stopped"
    assert ws.closed is not None and ws.closed.code == 1012
    assert handle.session_id not in live
    assert handle.statistics().stop_reason == "server_shutdown"


async def test_a_recordings_connection_is_stopped_through_its_handle(tmp_path: Path) -> None:
    """`WS /ws` (recordings) is a live session too: its handle stops it the same way."""
    app = create_app(Settings(model="fake", data_dir=tmp_path), model=FakeModel())
    async with serve_app(app) as address, connect(f"ws://{address}/ws") as ws:
        live = runtime(app).live
        with trio.fail_after(10):
            while not live:  # noqa: ASYNC110
                await trio.sleep(0.01)
        [handle] = live.values()
        handle.stop("server_shutdown", 1012)
        with trio.fail_after(10):
            await live.wait_empty()
            await receive_all(ws)
    assert ws.closed is not None and ws.closed.code == 1012
