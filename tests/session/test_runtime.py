"""The app's typed runtime (`service/runtime.py`) and the limits it hands down, read once.

The runtime exists only while the lifespan runs: a request before or after it is refused
with a clear 503 (`not_running`), never an `AttributeError` or a stale handle. The limits come
from what `create_app()` was given (or read from the environment once, when it was built), and
the session pipeline's limits, its stage channels' size included, are made from them.
"""

from __future__ import annotations

import io
import json
import wave
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import httpx
import pytest
from conftest import serve_app
from starlette.applications import Starlette
from starlette.routing import Mount
from support.audio_files import DATA, load, pcm16
from support.fakes import FakeModel
from support.ws_client import connect, receive_all, rejected, send_audio, send_json

from service.app import create_app
from service.config import Settings
from service.policy.limits import Limits
from service.policy.security import SecurityConfig
from service.runtime import NotRunning, runtime, setup
from service.session.ports import SessionLimits


def wav(seconds: float) -> bytes:
    """`seconds` of real speech as a 16 kHz WAV file (32,000 bytes a second, and a header)."""
    buffer = io.BytesIO()
    with wave.open(buffer, "wb") as out:
        out.setnchannels(1)
        out.setsampwidth(2)
        out.setframerate(16000)
        out.writeframes(pcm16(load(DATA / "garden.wav")[: int(seconds * 16000)]))
    return buffer.getvalue()


def chorus_app(tmp_path: Path, limits: Limits | None = None) -> Starlette:
    security = SecurityConfig(limits=limits or Limits())
    return create_app(
        Settings(model="fake", data_dir=tmp_path), model=FakeModel(), security=security
    )


def mounted(chorus: Starlette, *, ended: bool) -> Starlette:
    """`chorus` under `/stt` of a parent app whose lifespan runs Chorus's: for the parent's
    whole life, or (`ended`) only before the parent serves, so every request comes after."""

    @asynccontextmanager
    async def lifespan(parent: Starlette) -> AsyncIterator[None]:
        async with chorus.router.lifespan_context(chorus):
            if not ended:
                yield
                return
        yield

    return Starlette(routes=[Mount("/stt", app=chorus)], lifespan=lifespan)


async def test_the_runtime_is_there_while_the_lifespan_runs_and_gone_after(tmp_path: Path) -> None:
    app = chorus_app(tmp_path)
    with pytest.raises(NotRunning) as before:
        runtime(app)
    assert not before.value.ended and before.value.status_code == 503
    async with app.router.lifespan_context(app):
        running = runtime(app)
        assert running.settings is setup(app).settings
        assert running.options.model == "fake" and not running.live
    with pytest.raises(NotRunning) as after:
        runtime(app)
    assert after.value.ended and after.value.code == "not_running"
    assert setup(app).settings.model == "fake"  # what exists before the lifespan stays


async def test_a_request_after_the_lifespan_ended_is_refused_clearly(tmp_path: Path) -> None:
    parent = mounted(chorus_app(tmp_path), ended=True)
    async with serve_app(parent) as address:
        async with httpx.AsyncClient(base_url=f"http://{address}/stt", timeout=30) as http:
            health = await http.get("/health")
            assert health.status_code == 503
            assert health.json() == {
                "status": "stopped",
                "model": "fake",
                "sessions": 0,
                "active_connections": 0,
            }
            for path in ("/v1/models", "/v1/sessions"):
                answer = await http.get(path)
                assert answer.status_code == 503, (path, answer.text)
                assert answer.json()["error"]["code"] == "not_running", path
            upload = await http.post("/transcribe", files={"file": ("a.wav", wav(0.5))})
            assert upload.status_code == 503
            assert upload.json()["error"]["code"] == "not_running"
            assert (await http.get("/metrics")).status_code == 200  # the zero session figures
        for route in ("/v1/stream", "/v1/listen", "/ws"):
            refusal = await rejected(f"ws://{address}/stt{route}")
            assert refusal.status_code == 503, route
            assert json.loads(refusal.body or b"{}")["error"]["code"] == "not_running"


async def test_mounted_under_a_parent_app(tmp_path: Path) -> None:
    chorus = chorus_app(tmp_path)
    async with serve_app(mounted(chorus, ended=False)) as address:
        async with httpx.AsyncClient(base_url=f"http://{address}/stt") as http:
            health = (await http.get("/health")).json()
        assert health["status"] == "ok" and health["model"] == "fake"
        async with connect(f"ws://{address}/stt/v1/stream") as ws:
            await send_audio(ws, load(DATA / "weather.wav"))
            await send_json(ws, {"type": "stop"})
            frames = await receive_all(ws)
        assert frames[-1]["type"] == "stopped"


async def test_the_upload_cap_is_what_create_app_was_given_not_the_environment_now(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The cap given to `create_app()` holds whatever `CHORUS_MAX_UPLOAD_BYTES` says when the
    request comes; one read from the environment holds once the app is built."""
    clip = wav(1.0)  # 32,044 bytes
    monkeypatch.setenv("CHORUS_MAX_UPLOAD_BYTES", str(1 << 30))
    small = chorus_app(tmp_path, Limits(max_upload_bytes=8000))
    monkeypatch.setenv("CHORUS_MAX_UPLOAD_BYTES", "1000")
    large = chorus_app(tmp_path, Limits(max_upload_bytes=1 << 20))
    monkeypatch.setenv("CHORUS_MAX_UPLOAD_BYTES", "40000")
    from_environment = create_app(Settings(model="fake", data_dir=tmp_path), model=FakeModel())
    monkeypatch.setenv("CHORUS_MAX_UPLOAD_BYTES", "1000")
    for app, status in ((small, 413), (large, 200), (from_environment, 200)):
        async with serve_app(app) as address, httpx.AsyncClient(timeout=30) as http:
            answer = await http.post(
                f"http://{address}/transcribe", files={"file": ("clip.wav", clip)}
            )
        assert answer.status_code == status, answer.text


async def test_sessions_get_the_limits_the_app_was_given(tmp_path: Path) -> None:
    limits = Limits(stage_queue_size=4, send_timeout_s=5.0, idle_timeout_s=7.0)
    app = chorus_app(tmp_path, limits)
    async with app.router.lifespan_context(app):
        session = runtime(app).options.limits
    assert session == SessionLimits(queue_size=4, send_timeout_s=5.0, idle_timeout_s=7.0)


def test_session_limits_are_made_from_the_limits_in_one_place() -> None:
    assert Limits().session_limits() == SessionLimits()  # the same defaults
    assert Limits().stage_queue_size == 16 and Limits().send_timeout_s == 30.0
    environ = {"CHORUS_STAGE_QUEUE_SIZE": "4", "CHORUS_SEND_TIMEOUT_S": "2.5"}
    session = Limits.from_env(environ).session_limits()
    assert (session.queue_size, session.send_timeout_s) == (4, 2.5)
    for name in environ:
        with pytest.raises(ValueError, match=name):
            Limits.from_env({name: "0"})
