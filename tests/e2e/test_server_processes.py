"""Real `chorus serve` processes: SIGKILL mid-session loses no final the client had; two
replicas sharing one Redis enforce one per-client limit together."""

from __future__ import annotations

import io
import json
import signal
import wave
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import trio
from support.audio_files import DATA, load, pcm16
from support.servers import free_port, start_server, stop
from support.ws_client import connect, rejected

LEASE = {"CHORUS_RESUME_S": "1"}


async def ended(http: httpx.AsyncClient, url: str) -> Any:
    """The session once it has ended (at start-up, or by the sweep once its lease lapsed)."""
    with trio.fail_after(15):
        while True:
            detail = (await http.get(url)).json()
            if detail["end_reason"] is not None:
                return detail
            await trio.sleep(0.1)


async def test_sigkill_mid_session_keeps_every_final_sent(tmp_path: Path) -> None:
    port = free_port()
    pause = np.zeros(16000, np.float32)
    clips = [load(DATA / f"{name}.wav") for name in ("weather", "library", "garden")]
    speech = np.concatenate([part for clip in clips for part in (clip, pause)] * 3)
    data = pcm16(speech)
    # a short lease: the killed server's session is left open until it lapses (issue 23)
    server = await start_server(tmp_path, port, LEASE)
    received: list[dict[str, Any]] = []
    sent_bytes = 0
    try:
        async with connect(f"ws://127.0.0.1:{port}/v1/stream?record=true") as ws:
            session_id = json.loads(await ws.get_message())["session_id"]

            async def send() -> None:
                nonlocal sent_bytes
                for offset in range(0, len(data), 6400):
                    await ws.send_message(data[offset : offset + 6400])
                    sent_bytes = offset + 6400
                    await trio.sleep(0.05)  # 4x real time

            async with trio.open_nursery() as nursery:
                nursery.start_soon(send)
                while len([f for f in received if f["type"] == "final"]) < 2:
                    received.append(json.loads(await ws.get_message()))
                server.send_signal(signal.SIGKILL)
                nursery.cancel_scope.cancel()
        await server.wait()
    finally:
        if server.returncode is None:
            server.kill()
    finals = [f for f in received if f["type"] == "final"]
    server = await start_server(tmp_path, port, LEASE)
    try:
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}") as http:
            detail = await ended(http, f"/v1/sessions/{session_id}")
            audio = (await http.get(f"/v1/sessions/{session_id}/audio")).content
    finally:
        server.send_signal(signal.SIGTERM)
        with trio.move_on_after(15):
            await server.wait()
        if server.returncode is None:
            server.kill()
    assert detail["end_reason"] == "interrupted"
    stored = {u["index"]: u["text"] for u in detail["utterances"]}
    for final in finals:
        assert stored[final["utterance"]] == final["text"]
    with wave.open(io.BytesIO(audio)) as recording:
        seconds = recording.getnframes() / recording.getframerate()
    assert float(finals[-1]["end"]) <= seconds + 0.01
    assert seconds <= sent_bytes / 32000 + 0.01


async def test_two_replicas_share_one_limit_through_redis(tmp_path: Path) -> None:
    from support.redis_server import start_redis_server

    with start_redis_server(tmp_path) as redis:
        env = {
            "REDIS_URL": redis.url,
            "MAX_RECORDINGS_PER_MINUTE": "3",
            "CHORUS_API_KEYS": "shared-key,other-key",
        }
        ports = [free_port(), free_port()]
        servers = [await start_server(tmp_path / str(port), port, env) for port in ports]
        try:
            accepted = []
            for attempt in range(3):
                port = ports[attempt % 2]
                async with connect(f"ws://127.0.0.1:{port}/v1/stream?token=shared-key") as ws:
                    await ws.send_message('{"type": "stop"}')
                    accepted.append(json.loads(await ws.get_message())["type"])
            assert accepted == ["ready"] * 3
            for port in ports:  # the fourth, on either replica, is over the shared limit
                refusal = await rejected(f"ws://127.0.0.1:{port}/v1/stream?token=shared-key")
                assert refusal.status_code == 429
                assert int(dict(refusal.headers)[b"retry-after"]) > 0
            other = f"ws://127.0.0.1:{ports[0]}/v1/stream?token=other-key"
            async with connect(other) as ws:  # another client has its own count
                await ws.send_message('{"type": "stop"}')
                assert json.loads(await ws.get_message())["type"] == "ready"
        finally:
            for server in servers:
                await stop(server)
