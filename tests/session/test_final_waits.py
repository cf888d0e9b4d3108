"""Admission's latency guard: the window of recent finals' waits, the refusal of a new live
session while they are slow, and the transcriber client recording each final's wait."""

from __future__ import annotations

import json
from pathlib import Path

import attrs
import httpx
import numpy as np
import pytest
import trio
from conftest import serve_app
from support.audio_files import pcm16
from support.fakes import FakeModel, FakeSocket, FakeTranscriber
from support.session_parts import native_session, speech_with_pauses
from support.ws_client import connect, receive_all, rejected, send_audio, send_json

from actors.model.port import Priority, Request, Result
from protocol.native import Final, Stop, encoder
from service.app import create_app
from service.config import Settings
from service.policy.latency import FinalWaits
from service.runtime import runtime
from service.session.admission import admit, finals_slow
from service.session.handle import SessionHandle
from service.session.ports import StreamOptions
from service.session.state import AudioMeter, Ending
from service.session.supervisor import run_session

OPTIONS = StreamOptions(model="fake", final_beam_size=1)
FINAL_S = 0.7


def test_no_answer_below_the_minimum_of_samples() -> None:
    waits = FinalWaits(min_samples=8)
    for at in range(7):
        waits.record(float(at), 3.0)
    assert waits.percentile(7.0) is None
    waits.record(7.0, 3.0)
    assert waits.percentile(7.0) == 3.0


def test_the_percentile_is_the_nearest_rank() -> None:
    waits = FinalWaits(min_samples=1, quantile=0.95)
    for wait in range(1, 21):  # 0.1 .. 2.0, shuffled in time
        waits.record(0.0, ((wait * 7) % 20 + 1) / 10)
    assert waits.percentile(0.0) == pytest.approx(1.9)  # the 19th of 20
    waits.record(0.0, 9.0)
    assert waits.percentile(0.0) == pytest.approx(2.0)  # the 20th of 21: one outlier is not p95
    assert FinalWaits(min_samples=1, quantile=0.5).percentile(0.0) is None


def test_waits_older_than_the_window_are_forgotten() -> None:
    waits = FinalWaits(window_s=30.0, min_samples=2)
    waits.record(0.0, 5.0)
    waits.record(10.0, 5.0)
    waits.record(20.0, 0.5)
    assert waits.percentile(30.0) == 5.0
    assert waits.waits(35.0) == [5.0, 0.5]  # the first is 35 s old
    assert waits.percentile(45.0) is None  # one left: too few to say
    assert waits.waits(60.0) == []


def test_the_window_holds_at_most_max_samples_the_oldest_dropped() -> None:
    waits = FinalWaits(max_samples=4, min_samples=1, quantile=1.0)
    for at, wait in enumerate([9.0, 1.0, 1.0, 1.0, 1.0]):
        waits.record(float(at), wait)
    assert waits.waits(5.0) == [1.0] * 4
    assert waits.percentile(5.0) == 1.0


def test_a_negative_wait_counts_as_none() -> None:
    waits = FinalWaits(min_samples=1)
    waits.record(0.0, -0.2)
    assert waits.waits(0.0) == [0.0]


class SlowFinals(FakeTranscriber):
    """Finals take `FINAL_S` of (virtual) time; drafts are instant."""

    async def transcribe(
        self, request: Request, *, priority: Priority = "final", **_: object
    ) -> Result:
        if priority == "final":
            await trio.sleep(FINAL_S)
        return await super().transcribe(request, priority=priority)


async def test_the_transcriber_client_records_each_finals_wait(
    autojump_clock: trio.abc.Clock,
) -> None:
    socket, waits = FakeSocket(), FinalWaits(min_samples=1)
    data = pcm16(speech_with_pauses())

    async def client() -> None:
        for offset in range(0, len(data), 3200):  # real-time pace, on the virtual clock
            await socket.to_server.send(data[offset : offset + 3200])
            await trio.sleep(0.1)
        await socket.to_server.send(encoder.encode(Stop()).decode())

    async with trio.open_nursery() as nursery:
        nursery.start_soon(client)
        session = native_session(socket, SlowFinals(), OPTIONS, final_waits=waits)
        await run_session(session)
        frames = await socket.frames()
    finals = [frame for frame in frames if isinstance(frame, Final)]
    assert len(finals) == 2
    # one per final, each from its ask to its frame handed on: the model's time, no more
    assert waits.waits(trio.current_time()) == pytest.approx([FINAL_S, FINAL_S], abs=0.01)
    assert session.finals.queue == 0


async def test_slow_finals_refuse_a_new_live_session_until_the_window_has_aged(
    tmp_path: Path,
) -> None:
    """A server whose capacity plan says yes (cold: up to 8 sessions) refuses a second live
    session at the handshake, as at capacity, while its finals' p95 wait is over the setting;
    the session it holds goes on, uploads are not refused, and once the slow waits have left
    the window one more is let in."""
    settings = Settings(model="fake", data_dir=tmp_path, admission_final_wait_s=1.5)
    app = create_app(settings, model=FakeModel())
    reached_the_end = False
    async with serve_app(app) as address, connect(f"ws://{address}/v1/stream") as ws:
        await send_audio(ws, np.zeros(16000, np.float32))
        services = runtime(app).sessions
        assert len(services.live.streams()) == 1
        assert await admit(services, "another") is None  # room, and finals not yet slow
        now = trio.current_time()
        for _ in range(8):
            services.final_waits.record(now, 2.2)  # what base gave on a slow CPU
        # asked directly too: `rejected` can pass without a refusal (an accepted handshake's
        # close may end this block by a cancel that escapes trio-websocket)
        refused = await admit(services, "another")
        assert refused is not None and refused.code == "at_capacity"
        refusal = await rejected(f"ws://{address}/v1/stream")
        assert refusal.status_code == 503 and refusal.headers is not None
        headers = {k.decode().lower(): v.decode() for k, v in refusal.headers}
        assert int(headers["retry-after"]) > 0
        error = json.loads(refusal.body or b"{}")["error"]
        assert error["code"] == "at_capacity" and "finals" in error["message"]
        assert await admit(services, "another", live_session=False) is None  # an upload
        async with httpx.AsyncClient() as http:
            health = (await http.get(f"http://{address}/health")).json()
            metrics = (await http.get(f"http://{address}/metrics")).text
        assert health["capacity"]["final_wait_p95_s"] == 2.2
        assert health["capacity"]["final_waits"] == 8
        assert "chorus_final_wait_p95_seconds 2.2" in metrics
        assert finals_slow(services, now + 29.0)
        assert not finals_slow(services, now + 31.0)  # aged out of the 30 s window
        assert await admit(services, "another") is None  # (the window forgot them at +31 s)
        reached_the_end = True
        await send_json(ws, {"type": "stop"})
        assert (await receive_all(ws))[-1]["type"] == "stopped"
    assert reached_the_end


async def test_no_live_stream_no_latency_refusal_and_zero_turns_it_off(tmp_path: Path) -> None:
    """What the window saw was load that has gone when no live stream runs; 0 is off."""
    settings = Settings(model="fake", data_dir=tmp_path, admission_final_wait_s=1.5)
    app = create_app(settings, model=FakeModel())
    async with serve_app(app):
        services = runtime(app).sessions
        now = trio.current_time()
        for _ in range(8):
            services.final_waits.record(now, 3.0)
        assert not finals_slow(services, now)
        with services.live.holding(SessionHandle("held", Ending(), AudioMeter())):
            assert finals_slow(services, now)
            off = attrs.evolve(services, settings=attrs.evolve(settings, admission_final_wait_s=0))
            assert not finals_slow(off, now)
