"""The whole app's guards, end to end: keys, origins, rate limits and admission at the handshake,
and sessions stored with their finals and recordings."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
import trio
from conftest import fetch_recording, serve_app
from starlette.applications import Starlette
from support.audio_files import DATA, load
from support.fakes import FakeModel
from support.ws_client import connect, receive_all, rejected, send_audio, send_json
from trio_websocket import open_websocket_url

from actors.limiter import LimiterConfig, RateLimits
from service.app import create_app
from service.config import Settings
from service.policy.limits import Limits
from service.policy.security import AllowedOrigins, ApiKeys, SecurityConfig
from service.runtime import runtime


async def refused_status(url: str, headers: list[tuple[str, str]] | None = None) -> int:
    status: int = (await rejected(url, headers)).status_code
    return status


def app_with(tmp_path: Path, *, limiter: LimiterConfig | None = None, **security: Any) -> Starlette:
    return create_app(
        Settings(model="fake", data_dir=tmp_path),
        model=FakeModel(),
        security=SecurityConfig(**security),
        limiter=limiter,
    )


async def test_wrong_or_missing_key_and_foreign_origin_are_refused_before_upgrade(
    tmp_path: Path,
) -> None:
    app = app_with(
        tmp_path,
        api_keys=ApiKeys(frozenset({"sesame"})),
        origins=AllowedOrigins(frozenset({"https://good.example"})),
    )
    async with serve_app(app) as address:
        url = f"ws://{address}/v1/stream"
        assert await refused_status(url) == 401
        assert await refused_status(url + "?token=wrong") == 401
        assert await refused_status(url, [("Authorization", "Bearer wrong")]) == 401
        assert (
            await refused_status(url + "?token=sesame", [("Origin", "https://evil.example")]) == 403
        )
        async with connect(url + "?token=sesame") as ws:
            await send_json(ws, {"type": "stop"})
            assert (await receive_all(ws))[-1]["type"] == "stopped"
        async with open_websocket_url(
            url,
            extra_headers=[
                (b"Authorization", b"Token sesame"),
                (b"Origin", b"https://good.example"),
            ],
        ) as ws:
            await send_json(ws, {"type": "stop"})
            assert (await receive_all(ws))[-1]["type"] == "stopped"
            await ws._stream.aclose()


async def test_rate_limit_and_session_caps_refuse_with_retry_after(tmp_path: Path) -> None:
    limiter = LimiterConfig(limits=RateLimits(per_minute=1))  # the cap's refusal spends none
    app = app_with(tmp_path, limiter=limiter, limits=Limits(max_sessions_per_client=1))
    async with serve_app(app) as address:
        url = f"ws://{address}/v1/stream"
        async with connect(url) as first:
            assert await refused_status(url) == 429  # one live session per client
            await send_json(first, {"type": "stop"})
            await receive_all(first)
        refusal = await rejected(url)
        assert refusal.status_code == 429
        assert int(dict(refusal.headers)[b"retry-after"]) > 0


async def test_finals_and_recording_are_stored_and_served(tmp_path: Path) -> None:
    app = app_with(tmp_path)
    speech = np.concatenate(
        [
            load(DATA / "weather.wav"),
            np.zeros(16000, np.float32),
            load(DATA / "library.wav"),
            np.zeros(16000, np.float32),
        ]
    )
    async with serve_app(app) as address:
        async with connect(f"ws://{address}/v1/stream?record=true") as ws:
            await send_audio(ws, speech)
            await send_json(ws, {"type": "stop"})
            frames = await receive_all(ws)
        session_id = frames[0]["session_id"]
        finals = [f for f in frames if f["type"] == "final"]
        async with httpx.AsyncClient(base_url=f"http://{address}") as http:
            listing = (await http.get("/v1/sessions")).json()
            audio = await fetch_recording(http, f"/v1/sessions/{session_id}/audio")
            detail = (await http.get(f"/v1/sessions/{session_id}")).json()
            part = await http.get(
                f"/v1/sessions/{session_id}/audio", headers={"Range": "bytes=0-99"}
            )
    assert listing["sessions"][0]["id"] == session_id
    assert [u["text"] for u in detail["utterances"]] == [f["text"] for f in finals]
    assert detail["transcript"] == frames[-1]["transcript"]
    assert detail["end_reason"] == "stop"
    assert audio.status_code == 200 and audio.content[:4] == b"RIFF"
    recorded = load_wav(audio.content)
    assert abs(len(recorded) - len(speech)) <= 1
    assert part.status_code == 206 and len(part.content) == 100


def load_wav(data: bytes) -> np.ndarray:
    import io
    import wave

    with wave.open(io.BytesIO(data)) as wav:
        assert (wav.getframerate(), wav.getnchannels(), wav.getsampwidth()) == (16000, 1, 2)
        return np.frombuffer(wav.readframes(wav.getnframes()), "<i2")


async def test_overloaded_server_refuses_new_sessions_up_front(tmp_path: Path) -> None:
    model = FakeModel()
    model.gate.clear()  # the model stalls: the live session falls behind
    app = create_app(Settings(model="fake", data_dir=tmp_path, admission_lag_s=1.0), model=model)
    speech = np.concatenate([load(DATA / "weather.wav"), np.zeros(8000, np.float32)] * 3)
    async with serve_app(app) as address, connect(f"ws://{address}/v1/stream") as ws:
        await send_audio(ws, speech)
        with trio.fail_after(10):
            while max((s.statistics().lag_s for s in runtime(app).live.values()), default=0) <= 1.0:  # noqa: ASYNC110
                await trio.sleep(0.05)
        assert (await rejected(f"ws://{address}/v1/stream")).status_code == 503
        model.gate.set()
        await send_json(ws, {"type": "stop"})
        frames = await receive_all(ws)
    assert frames[-1]["type"] == "stopped" and frames[-1]["utterances"] == 3


async def test_shutdown_drains_live_sessions_then_closes_1012(tmp_path: Path) -> None:
    from service.app import drain_sessions

    app = create_app(Settings(model="fake", data_dir=tmp_path), model=FakeModel())
    garden = load(DATA / "garden.wav")
    async with serve_app(app) as address, connect(f"ws://{address}/v1/stream") as ws:
        live = runtime(app).live
        await send_audio(ws, garden[: len(garden) * 2 // 3])  # mid-utterance
        with trio.fail_after(10):
            while not any(s.statistics().received_s for s in live.values()):  # noqa: ASYNC110
                await trio.sleep(0.01)
        async with trio.open_nursery() as nursery:
            nursery.start_soon(drain_sessions, app, 10.0)
            frames = await receive_all(ws)
    kinds = [f["type"] for f in frames]
    assert "final" in kinds and kinds[-1] == "stopped"
    assert ws.closed is not None and ws.closed.code == 1012
    assert not live


async def test_health_and_metrics_report_the_actors(tmp_path: Path) -> None:
    app = create_app(Settings(model="fake", data_dir=tmp_path), model=FakeModel())
    async with serve_app(app) as address:
        async with connect(f"ws://{address}/v1/stream") as ws:
            await send_audio(
                ws, np.concatenate([load(DATA / "weather.wav"), np.zeros(16000, np.float32)])
            )
            await send_json(ws, {"type": "stop"})
            await receive_all(ws)
        async with httpx.AsyncClient(base_url=f"http://{address}") as http:
            health = (await http.get("/health")).json()
            metrics = await http.get("/metrics")
    assert health["status"] == "ok" and health["model"] == "fake" and health["sessions"] == 0
    assert health["transcriber"]["items"] >= 1 and health["limits"]["healthy"] is True
    assert metrics.headers["content-type"].startswith("text/plain")
    assert "chorus_transcriber_items_total" in metrics.text
    assert 'chorus_transcriber_batch_size_total{size="1"}' in metrics.text


async def test_dotenv_file_configures_security_too(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / ".env").write_text("CHORUS_API_KEYS=from-dotenv\n")
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("CHORUS_API_KEYS", raising=False)
    app = create_app(Settings(model="fake", data_dir=tmp_path), model=FakeModel())
    async with serve_app(app) as address:
        assert (await rejected(f"ws://{address}/v1/stream")).status_code == 401
        async with connect(f"ws://{address}/v1/stream?token=from-dotenv") as ws:
            await send_json(ws, {"type": "stop"})
            assert (await receive_all(ws))[-1]["type"] == "stopped"
