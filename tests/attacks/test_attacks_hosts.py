"""Attacks on who may reach the server (issue 11, M3, M6 and small items), each kept here so it
stays fixed: DNS rebinding (a foreign `Host`), cross-site requests that change state (a foreign
`Origin`), an open server on a public address, a dead actor behind a healthy `/health`, and
query values that used to end in a 500."""

from __future__ import annotations

import base64
import io
import json
import os
import sys
import wave
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import cast

import httpx
import numpy as np
import pytest
import trio
from conftest import HERE, serve_app
from starlette.applications import Starlette
from support.fakes import FakeModel
from support.servers import free_port
from support.ws_client import connect, rejected

from actors.model.port import Priority, Request
from actors.store.actor import StoreClosed
from actors.transcriber.actor import TranscriberClosed
from service.app import create_app
from service.config import Settings
from service.runtime import runtime, setup

EVIL = "evil.example"


@asynccontextmanager
async def served(
    tmp_path: Path, settings: Settings | None = None
) -> AsyncIterator[tuple[str, httpx.AsyncClient]]:
    """A fake-model app on 127.0.0.1:<port>; yields `host:port` and an HTTP client for it."""
    app = create_app(settings or Settings(model="fake", data_dir=tmp_path), model=FakeModel())
    async with serve_app(app) as address, httpx.AsyncClient(base_url=f"http://{address}") as http:
        yield address, http


def silent_wav(seconds: float = 0.5) -> bytes:
    data = io.BytesIO()
    with wave.open(data, "wb") as out:
        out.setnchannels(1)
        out.setsampwidth(2)
        out.setframerate(16000)
        out.writeframes(bytes(int(seconds * 16000) * 2))
    return data.getvalue()


async def handshake(address: str, host: str) -> httpx.Response:
    """A WebSocket handshake to `address` as a browser sends it, claiming to be for `host`."""
    headers = {
        "Host": host,
        "Connection": "Upgrade",
        "Upgrade": "websocket",
        "Sec-WebSocket-Version": "13",
        "Sec-WebSocket-Key": "dGhlIHNhbXBsZSBub25jZQ==",
    }
    async with httpx.AsyncClient() as once:  # the server closes the connection after it
        return await once.get(f"http://{address}/v1/stream", headers=headers)


# -- M3: DNS rebinding ------------------------------------------------------------------------


async def test_a_rebound_name_is_refused_on_every_route_and_handshake(tmp_path: Path) -> None:
    async with served(tmp_path) as (address, http):
        port = address.rsplit(":", 1)[1]
        for method, path in [
            ("GET", "/v1/sessions"),
            ("DELETE", "/v1/sessions/s-1"),
            ("GET", "/health"),
            ("GET", "/"),
        ]:
            refused = await http.request(method, path, headers={"Host": f"{EVIL}:{port}"})
            assert refused.status_code == 400, (path, refused.text)
            assert refused.json()["error"]["code"] == "host_not_allowed"
        refused = await handshake(address, f"{EVIL}:{port}")
        assert refused.status_code == 400
        assert refused.json()["error"]["code"] == "host_not_allowed"
        for name in ("localhost", "127.0.0.1", "[::1]", "LocalHost."):
            allowed = await http.get("/v1/sessions", headers={"Host": f"{name}:{port}"})
            assert allowed.status_code == 200, (name, allowed.text)
        async with connect(f"ws://{address}/v1/stream") as ws:  # Host: 127.0.0.1:<port>
            assert json.loads(await ws.get_message())["type"] == "ready"


async def test_allowed_hosts_add_names_and_the_bind_address_is_one(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CHORUS_ALLOWED_HOSTS", "chorus.example, 2001:db8::7")
    settings = Settings(model="fake", data_dir=tmp_path, host="10.1.2.3")
    async with served(tmp_path, settings) as (_, http):
        for host in ("chorus.example", "CHORUS.example:443", "[2001:db8::7]:80", "10.1.2.3:8000"):
            assert (await http.get("/v1/sessions", headers={"Host": host})).status_code == 200
        for host in (EVIL, "10.1.2.4", "chorus.example@evil.example", "sub.chorus.example"):
            refused = await http.get("/v1/sessions", headers={"Host": host})
            assert refused.status_code == 400, host
    monkeypatch.setenv("CHORUS_ALLOWED_HOSTS", "*")
    async with served(tmp_path) as (_, http):
        assert (await http.get("/v1/sessions", headers={"Host": EVIL})).status_code == 200


# -- M3: cross-site requests that change state ------------------------------------------------


async def test_a_foreign_origin_may_not_post_or_delete(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CHORUS_ALLOWED_ORIGINS", "https://app.example")
    async with served(tmp_path) as (address, http):

        async def upload(origin: str | None) -> httpx.Response:
            headers = {} if origin is None else {"Origin": origin}
            files = {"file": ("a.wav", silent_wav(), "audio/wav")}
            return await http.post(
                "/v1/audio/transcriptions",
                files=files,
                data={"model": "whisper-1"},
                headers=headers,
            )

        foreign = await upload(f"https://{EVIL}")
        assert foreign.status_code == 403, foreign.text
        assert foreign.json()["error"]["code"] == "origin_not_allowed"
        assert (await upload("null")).status_code == 403  # sandboxed frames, files
        deleted = await http.delete("/v1/sessions/s-1", headers={"Origin": f"http://{EVIL}"})
        assert deleted.status_code == 403
        assert (await upload(None)).status_code == 200  # no Origin: not a browser
        assert (await upload(f"http://{address}")).status_code == 200  # the server's own page
        assert (await upload("https://app.example")).status_code == 200  # a listed origin
        read = await http.get("/v1/sessions", headers={"Origin": f"https://{EVIL}"})
        assert read.status_code == 200  # reading is CORS's business: the browser hides it


# -- M3: no keys on a public address ----------------------------------------------------------


async def run_cli(*args: str, env: dict[str, str] | None = None) -> tuple[int, str]:
    """`python -m service.cli serve ...` without any key in its environment; (code, stderr)."""
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("CHORUS_", "REDIS_"))}
    with trio.fail_after(30):
        done = await trio.run_process(
            [sys.executable, "-m", "service.cli", "serve", *args],
            cwd=HERE.parent,
            env={**clean, **(env or {})},
            capture_stdout=True,
            capture_stderr=True,
            check=False,
        )
    return done.returncode, done.stderr.decode()


async def test_serve_refuses_a_public_address_without_keys(tmp_path: Path) -> None:
    common = ["--port", str(free_port()), "--data-dir", str(tmp_path)]
    missing = ["--model", str(tmp_path / "no-such-model")]  # loading it fails at once: exit 1
    for host in ("0.0.0.0", "::", "chorus.example"):
        code, stderr = await run_cli("--host", host, *common, *missing)
        assert code == 2, (host, stderr)
        assert stderr.count("\n") == 1 and "without API keys" in stderr
        assert "--insecure-open" in stderr and "no-such-model" not in stderr
    for host in ("127.8.9.10", "localhost", "::1"):
        assert (await run_cli("--host", host, *common, *missing))[0] == 1, host
    public = ["--host", "0.0.0.0", *common, *missing]
    assert (await run_cli(*public, "--insecure-open"))[0] == 1
    assert (await run_cli(*public, env={"CHORUS_INSECURE_OPEN": "1"}))[0] == 1
    assert (await run_cli(*public, env={"CHORUS_API_KEYS": "k1"}))[0] == 1
    keys = tmp_path / "keys"
    keys.write_text("ops:k2\n")
    assert (await run_cli(*public, env={"CHORUS_API_KEYS_FILE": str(keys)}))[0] == 1


# -- M6: a dead actor -------------------------------------------------------------------------


async def failed_health(app: Starlette, http: httpx.AsyncClient) -> httpx.Response:
    """`/health` once the death is named: after the actors opened inside the dead one close."""
    with trio.fail_after(10):
        await setup(app).actors.wait_died()
    return await http.get("/health")


async def test_a_dead_store_turns_health_to_503_naming_it(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    app = create_app(Settings(model="fake", data_dir=tmp_path), model=FakeModel())
    async with serve_app(app) as address, httpx.AsyncClient(base_url=f"http://{address}") as http:
        assert (await http.get("/health")).status_code == 200

        def not_sqlite(db: object) -> None:
            raise ZeroDivisionError("not an SQLite error")

        with pytest.raises(StoreClosed):
            await runtime(app).store._write(not_sqlite)  # the writer dies of it
        health = await failed_health(app, http)
        assert health.status_code == 503
        assert health.json()["status"] == "failed" and health.json()["died"] == ["store"]
        assert "ZeroDivisionError" in health.json()["died_of"]["store"]  # no keys: all see it
        assert (await http.get("/v1/sessions")).status_code == 503  # still up: "store closed"
    assert any("the store actor died" in r.getMessage() for r in caplog.records)


async def test_a_dead_transcriber_turns_health_to_503_naming_it(tmp_path: Path) -> None:
    app = create_app(Settings(model="fake", data_dir=tmp_path), model=FakeModel())
    async with serve_app(app) as address, httpx.AsyncClient(base_url=f"http://{address}") as http:
        request = Request(np.zeros(16000, np.float32))
        with pytest.raises(TranscriberClosed):  # a job its worker loop cannot rank kills it
            await runtime(app).transcriber.transcribe(request, priority=cast(Priority, "urgent"))
        health = await failed_health(app, http)
        assert health.status_code == 503
        assert health.json()["died"] == ["transcriber"]
        assert health.json()["died_of"]["transcriber"].startswith("KeyError")


# -- /health shows error details to admins only -----------------------------------------------


async def test_health_keeps_error_details_for_admin_keys(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    closed = free_port()  # nothing listens: Redis is down, its error names the address
    monkeypatch.setenv("REDIS_URL", f"redis://127.0.0.1:{closed}/0")
    monkeypatch.setenv("MAX_RECORDINGS_PER_MINUTE", "5")
    monkeypatch.setenv("CHORUS_API_KEYS", "alice:key-a")
    monkeypatch.setenv("CHORUS_ADMIN_KEYS", "ops:key-ops")
    async with served(tmp_path) as (_, http):
        for headers in ({}, {"Authorization": "Bearer key-a"}, {"Authorization": "Bearer bad"}):
            health = await http.get("/health", headers=headers)
            assert health.json()["status"] == "degraded"
            assert str(closed) not in health.text and "last_error" not in health.text
        admin = await http.get("/health", headers={"Authorization": "Bearer key-ops"})
        assert str(closed) in admin.json()["limits"]["last_error"]


# -- small: values that used to end in a 500 --------------------------------------------------


async def test_a_non_ascii_deepgram_language_is_a_400(tmp_path: Path) -> None:
    async with served(tmp_path) as (address, _):
        refusal = await rejected(f"ws://{address}/v1/listen?language=%C4%80")
        assert refusal.status_code == 400
        headers = {name.decode(): value.decode() for name, value in refusal.headers}
        assert headers["dg-error"] == "language '\\u0100' is not a language code"
        body = json.loads(refusal.body or b"")
        assert body["err_msg"] == "language '\u0100' is not a language code"


async def test_unicode_digits_and_huge_cursors_are_a_400(tmp_path: Path) -> None:
    async with served(tmp_path) as (_, http):
        for params, code in [
            ({"limit": "\u00b2"}, "invalid_limit"),  # "²".isdigit(), but int("²") fails
            ({"limit": "\u0663"}, "invalid_limit"),  # an Arabic-Indic 3
            ({"cursor": "1" * 20}, "invalid_cursor"),  # not a cursor this server wrote
            ({"cursor": _cursor(10**30, "s1")}, "invalid_cursor"),  # beyond any datetime
            ({"next": "\u00b2"}, "invalid_cursor"),
        ]:
            answer = await http.get("/v1/sessions", params=params)
            assert answer.status_code == 400, (params, answer.text)
            assert answer.json()["error"]["code"] == code
        far = _cursor(253402300799 * 10**6, "s1")  # 9999-12-31T23:59:59Z: a place, if odd
        assert (await http.get("/v1/sessions", params={"cursor": far})).status_code == 200


def _cursor(micros: int, session_id: str) -> str:
    """A list cursor as the server writes one (base64url of JSON [microseconds, id])."""
    text = json.dumps([micros, session_id]).encode()
    return base64.urlsafe_b64encode(text).rstrip(b"=").decode()
