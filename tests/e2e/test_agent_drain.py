"""A replica's HAProxy agent and its drain, without a balancer: the agent answers from the
running app's admission (and says `down` once an actor died), and a drain (in the app, and a
real `chorus serve` on SIGTERM) turns it to `drain`, refuses new sessions with 503
`server_draining`, and lets the live one finish its final before closing it with 1012."""

from __future__ import annotations

import signal
from pathlib import Path

import attrs
import httpx
import numpy as np
import pytest
import trio
import trio.testing
from conftest import serve_app
from starlette.applications import Starlette
from support.agent_client import ask_agent
from support.audio_files import DATA, load
from support.fakes import FakeModel
from support.servers import free_port, start_server
from support.ws_client import connect, receive_all, rejected, send_audio, send_json
from trio_websocket import WebSocketConnection

from actors.speech.vad_actor import VadClosed
from service.app import create_app, drain_sessions
from service.config import Settings
from service.runtime import runtime, setup


def replica(tmp_path: Path, settings: Settings) -> tuple[Starlette, int]:
    """An app on the fake model with its agent on a free port."""
    port = free_port()
    settings = attrs.evolve(settings, model="fake", data_dir=tmp_path, agent_port=port)
    return create_app(settings, model=FakeModel()), port


async def wait_ready(ws: WebSocketConnection) -> None:
    with trio.fail_after(10):
        assert '"ready"' in str(await ws.get_message())


async def test_the_agent_reports_headroom_and_drains_when_full(tmp_path: Path) -> None:
    app, agent = replica(tmp_path, Settings(admission_cold_sessions=2))
    async with serve_app(app) as address:
        assert await ask_agent(agent) == b"up ready 100%\n"
        async with connect(f"ws://{address}/v1/stream") as first:
            await wait_ready(first)
            assert await ask_agent(agent) == b"up ready 50%\n"  # one of two cold sessions left
            async with connect(f"ws://{address}/v1/stream") as second:
                await wait_ready(second)
                assert await ask_agent(agent) == b"drain\n"  # full: admission would refuse
                assert (await rejected(f"ws://{address}/v1/stream")).status_code == 503
                await send_json(second, {"type": "stop"})
                await receive_all(second)
            await send_json(first, {"type": "stop"})
            await receive_all(first)
        with trio.fail_after(10):
            await runtime(app).live.wait_empty()  # the sessions have left
        assert await ask_agent(agent) == b"up ready 100%\n"


async def test_a_drain_says_drain_refuses_new_sessions_and_closes_live_ones_1012(
    tmp_path: Path,
) -> None:
    app, agent = replica(tmp_path, Settings(drain_notice_s=0.5))
    garden = load(DATA / "garden.wav")
    async with serve_app(app) as address, connect(f"ws://{address}/v1/stream") as ws:
        live = runtime(app).live
        await send_audio(ws, garden[: len(garden) * 2 // 3])  # mid-utterance
        with trio.fail_after(10):
            while not any(s.statistics().received_s for s in live.values()):  # noqa: ASYNC110
                await trio.sleep(0.01)
        async with trio.open_nursery() as nursery:
            nursery.start_soon(drain_sessions, app, 10.0)
            await trio.testing.wait_all_tasks_blocked()
            assert await ask_agent(agent) == b"drain\n"
            refusal = await rejected(f"ws://{address}/v1/stream")
            assert refusal.status_code == 503 and b"server_draining" in (refusal.body or b"")
            assert int(dict(refusal.headers)[b"retry-after"]) > 0
            assert (await rejected(f"ws://{address}/ws")).status_code == 503  # recordings too
            async with httpx.AsyncClient() as http:
                health = await http.get(f"http://{address}/health")
            assert health.status_code == 200 and health.json()["draining"] is True
            frames = await receive_all(ws)
    kinds = [frame["type"] for frame in frames]
    assert "final" in kinds and kinds[-1] == "stopped"
    assert ws.closed is not None and ws.closed.code == 1012


async def test_the_agent_says_down_once_an_actor_died(tmp_path: Path) -> None:
    app, agent = replica(tmp_path, Settings())
    async with serve_app(app):
        assert await ask_agent(agent) == b"up ready 100%\n"
        vad = runtime(app).vad
        with vad.open_stream() as stream, pytest.raises(VadClosed):
            # frames that are not 512 samples wide: the model raises, the actor dies of it
            await vad._submit(stream._stream, np.zeros((1, 100), np.float32))
        with trio.fail_after(10):
            await setup(app).actors.wait_died()
        assert await ask_agent(agent) == b"down\n"


async def test_sigterm_on_chorus_serve_drains_through_its_agent(tmp_path: Path) -> None:
    port, agent = free_port(), free_port()
    notice = {"CHORUS_AGENT_PORT": str(agent), "CHORUS_DRAIN_NOTICE_S": "1"}
    server = await start_server(tmp_path, port, notice)
    garden = load(DATA / "garden.wav")
    try:
        assert await ask_agent(agent) == b"up ready 100%\n"
        async with connect(f"ws://127.0.0.1:{port}/v1/stream") as ws:
            await wait_ready(ws)
            await send_audio(ws, garden[: len(garden) * 2 // 3])  # mid-utterance
            server.send_signal(signal.SIGTERM)
            with trio.fail_after(10):
                while await ask_agent(agent) != b"drain\n":  # noqa: ASYNC110 (a process)
                    await trio.sleep(0.05)
            assert ws.closed is None  # the notice: the balancer hears `drain` first
            frames = await receive_all(ws)
        with trio.fail_after(15):
            assert await server.wait() == 0
    finally:
        if server.returncode is None:
            server.kill()
    finals = [frame for frame in frames if frame["type"] == "final"]
    assert finals and "grandmother" in str(finals[0]["text"]).lower()  # the real model
    assert frames[-1]["type"] == "stopped"
    assert ws.closed is not None and ws.closed.code == 1012
