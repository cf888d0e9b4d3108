"""API keys, client identity, origins, limits and the session gate; refusals before the upgrade
checked against a real hypercorn server with trio-websocket and httpx clients."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from functools import partial
from ipaddress import ip_network
from pathlib import Path

import httpx
import pytest
import trio
from hypercorn.config import Config as HypercornConfig
from hypercorn.trio import serve
from starlette.applications import Starlette
from starlette.datastructures import Headers
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response
from starlette.routing import Route, WebSocketRoute
from starlette.websockets import WebSocket
from support.ws_client import rejected
from trio_websocket import open_websocket_url

from service.policy.caller import Caller
from service.policy.limits import BodyLimitMiddleware
from service.policy.security import (
    AllowedOrigins,
    ApiKeys,
    Limits,
    Refusal,
    SecurityConfig,
    SecurityMiddleware,
    SessionGate,
    authenticate,
    peer_address,
    refuse_websocket,
)
from service.policy.security import key_identity as identity_of

KEYS = ApiKeys(frozenset({"k1", "k2", "k3"}))


def test_keys_come_from_a_list_and_a_file(tmp_path: Path) -> None:
    keys_file = tmp_path / "keys"
    keys_file.write_text("# ops team\nfile-key\n\n  other-key  \n")
    keys = ApiKeys.from_env({"CHORUS_API_KEYS": " a, b ,,", "CHORUS_API_KEYS_FILE": str(keys_file)})
    assert keys.keys == {"a", "b", "file-key", "other-key"}
    assert "file-key" not in repr(keys) and "file-key" not in repr(SecurityConfig(api_keys=keys))
    assert ApiKeys.from_env({}).keys == frozenset()
    with pytest.raises(FileNotFoundError):
        ApiKeys.from_env({"CHORUS_API_KEYS_FILE": str(tmp_path / "missing")})


def test_authenticate_reads_each_way_of_offering_a_key() -> None:
    def auth(headers: dict[str, str], query: dict[str, str] | None = None) -> str | None:
        return authenticate(Headers(headers), query or {}, KEYS)

    assert authenticate(Headers({}), {}, ApiKeys()) is None  # no keys: open
    assert auth({"Authorization": "Bearer k1"}) == identity_of("k1")
    assert auth({"authorization": "token k2"}) == identity_of("k2")  # Deepgram style
    assert auth({}, {"token": "k3"}) == identity_of("k3")  # browsers
    assert auth({"Sec-WebSocket-Protocol": "token, k1"}) == identity_of("k1")
    assert identity_of("k1").startswith("key:") and "k1" not in identity_of("k1")
    failures = [
        ({}, "an API key is required"),
        ({"Authorization": "Bearer nope"}, "invalid API key"),
        ({"Authorization": "Basic azE6"}, "Authorization must be"),
        ({"Authorization": "Bearer"}, "Authorization must be"),
        ({"Sec-WebSocket-Protocol": "chat"}, "an API key is required"),
    ]
    for headers, message in failures:
        with pytest.raises(Refusal, match=message) as refused:
            auth(headers)
        assert refused.value.status_code == 401
        assert refused.value.headers["WWW-Authenticate"].startswith("Bearer")


def test_forwarded_addresses_count_only_from_trusted_proxies() -> None:
    proxies = (ip_network("10.0.0.0/8"), ip_network("::1/128"))
    forwarded = Headers({"X-Forwarded-For": "6.6.6.6, 203.0.113.9, 10.1.1.1"})
    assert peer_address(("198.51.100.7", 1), forwarded, ()) == "198.51.100.7"
    assert peer_address(("198.51.100.7", 1), forwarded, proxies) == "198.51.100.7"
    assert peer_address(("10.0.0.2", 1), forwarded, proxies) == "203.0.113.9"
    assert peer_address(("::1", 1), Headers({"X-Forwarded-For": "2001:db8::5"}), proxies) == (
        "2001:db8::5"
    )
    garbage = Headers({"X-Forwarded-For": "not-an-address"})
    assert peer_address(("10.0.0.2", 1), garbage, proxies) == "10.0.0.2"
    assert peer_address(None, Headers({}), proxies) == "unknown"
    config = SecurityConfig.from_env({"CHORUS_TRUSTED_PROXIES": "10.0.0.0/8, 192.168.1.1"})
    assert config.trusted_proxies == (ip_network("10.0.0.0/8"), ip_network("192.168.1.1/32"))
    with pytest.raises(ValueError, match="CHORUS_TRUSTED_PROXIES"):
        SecurityConfig.from_env({"CHORUS_TRUSTED_PROXIES": "proxy.local"})


def test_origins_default_to_the_same_host() -> None:
    same_only = AllowedOrigins.from_env({})
    assert same_only.allows(None, "chorus.example")  # not a browser
    assert same_only.allows("https://chorus.example", "chorus.example")
    assert same_only.allows("https://Chorus.example:443", "chorus.example")
    assert same_only.allows("http://127.0.0.1:8000", "127.0.0.1:8000")
    assert same_only.allows("http://[::1]:8000", "[::1]:8000")
    assert not same_only.allows("http://127.0.0.1:8001", "127.0.0.1:8000")
    assert not same_only.allows("https://evil.example", "chorus.example")
    assert not same_only.allows("null", "chorus.example")
    assert not same_only.allows("https://chorus.example", None)
    assert same_only.cors() == []
    listed = AllowedOrigins.from_env(
        {"CHORUS_ALLOWED_ORIGINS": "https://app.example/, http://x:81"}
    )
    assert listed.origins == {"https://app.example", "http://x:81"}
    assert listed.allows("https://app.example", "chorus.example")
    assert listed.allows("https://chorus.example", "chorus.example")
    assert not listed.allows("https://evil.example", "chorus.example")
    assert len(listed.cors()) == 1
    assert AllowedOrigins.from_env({"CHORUS_ALLOWED_ORIGINS": "*"}).allows("null", "h")
    with pytest.raises(ValueError, match="not an origin"):
        AllowedOrigins.from_env({"CHORUS_ALLOWED_ORIGINS": "app.example"})


def test_limits_have_defaults_and_each_reads_its_variable() -> None:
    assert Limits.from_env({}) == Limits(
        max_frame_bytes=1 << 20,
        max_message_bytes=64 << 10,
        max_upload_bytes=100 << 20,
        max_session_s=4 * 3600.0,
        idle_timeout_s=30.0,
        max_sessions_per_client=10,
        max_sessions=200,
    )
    variables = {
        "CHORUS_MAX_FRAME_BYTES": ("max_frame_bytes", "1000", 1000),
        "CHORUS_MAX_MESSAGE_BYTES": ("max_message_bytes", "2000", 2000),
        "CHORUS_MAX_UPLOAD_BYTES": ("max_upload_bytes", "3000", 3000),
        "CHORUS_MAX_SESSION_S": ("max_session_s", "60.5", 60.5),
        "CHORUS_IDLE_TIMEOUT_S": ("idle_timeout_s", "5", 5.0),
        "CHORUS_MAX_SESSIONS_PER_CLIENT": ("max_sessions_per_client", "2", 2),
        "CHORUS_MAX_SESSIONS": ("max_sessions", "3", 3),
        "CHORUS_UPLOAD_MIN_BYTES_PER_S": ("upload_min_bytes_per_s", "512", 512.0),
        "CHORUS_UPLOAD_RATE_GRACE_S": ("upload_rate_grace_s", "2.5", 2.5),
    }
    for name, (field, text, value) in variables.items():
        assert getattr(Limits.from_env({name: text}), field) == value
        for bad in ("0", "-1", "many"):
            with pytest.raises(ValueError, match=name):
                Limits.from_env({name: bad})
    with pytest.raises(ValueError, match="CHORUS_MAX_FRAME_BYTES"):
        Limits.from_env({"CHORUS_MAX_FRAME_BYTES": "1.5"})


def test_the_gate_counts_per_client_and_in_total() -> None:
    gate = SessionGate.from_limits(Limits(max_sessions=3, max_sessions_per_client=2))
    first = gate.admit("ip:a")
    with gate.admit("ip:a"):
        with pytest.raises(Refusal) as refused:
            gate.admit("ip:a")
        assert (refused.value.status_code, refused.value.code) == (429, "too_many_sessions")
        with gate.admit("ip:b"):
            with pytest.raises(Refusal) as full:
                gate.admit("ip:c")
            assert (full.value.status_code, full.value.headers["Retry-After"]) == (503, "5")
    with pytest.raises(RuntimeError), gate.admit("ip:c"):
        raise RuntimeError("a session that fails still gives its slot back")
    first.release()
    first.release()  # twice is harmless
    stats = gate.statistics()
    assert (stats.sessions, stats.clients, stats.refused_per_client, stats.refused_full) == (
        0,
        0,
        1,
        1,
    )


@asynccontextmanager
async def serving(app: Starlette) -> AsyncIterator[str]:
    """The app behind a real hypercorn on 127.0.0.1:0; yields "127.0.0.1:PORT"."""
    config = HypercornConfig()
    config.bind = ["127.0.0.1:0"]
    config.graceful_timeout = 0.1
    async with trio.open_nursery() as nursery:
        stop = trio.Event()
        binds = await nursery.start(partial(serve, app, config, shutdown_trigger=stop.wait))  # type: ignore[arg-type]
        yield binds[0].removeprefix("http://")
        stop.set()


def secured_app(config: SecurityConfig, gate: SessionGate) -> Starlette:
    async def stream(websocket: WebSocket) -> None:
        try:
            admission = gate.admit(Caller.of(websocket).client)
        except Refusal as refusal:
            await refuse_websocket(websocket, refusal)
            return
        with admission:
            offered = websocket.headers.get("sec-websocket-protocol", "")
            await websocket.accept(subprotocol="token" if offered.startswith("token") else None)
            await websocket.send_text(Caller.of(websocket).client)
            await websocket.receive()  # hold the slot until the client leaves

    async def whoami(request: Request) -> Response:
        return PlainTextResponse(Caller.of(request).client)

    async def upload(request: Request) -> Response:
        async with request.form() as form:
            return PlainTextResponse(str(len(form)))

    return Starlette(
        routes=[
            WebSocketRoute("/v1/stream", stream),
            Route("/v1/whoami", whoami),
            Route("/health", whoami),
            Route("/upload", upload, methods=["POST"]),
        ],
        middleware=[
            *config.origins.cors(),
            Middleware(SecurityMiddleware, config=config),
            Middleware(BodyLimitMiddleware, max_bytes=config.limits.max_upload_bytes),
        ],
    )


async def test_every_refusal_is_answered_before_the_upgrade() -> None:
    config = SecurityConfig(api_keys=KEYS)
    gate = SessionGate(max_sessions=2, max_per_client=1)
    async with serving(secured_app(config, gate)) as host:
        url = f"ws://{host}/v1/stream"
        missing = await rejected(url)
        assert missing.status_code == 401
        assert json.loads(missing.body or b"") == {
            "error": {"code": "unauthorized", "message": "an API key is required"}
        }
        assert (b"www-authenticate", b'Bearer realm="chorus"') in missing.headers
        wrong = await rejected(url, [("Authorization", "Bearer k9")])
        assert (wrong.status_code, json.loads(wrong.body or b"")["error"]["message"]) == (
            401,
            "invalid API key",
        )
        assert (await rejected(url + "?token=nope")).status_code == 401
        foreign = await rejected(
            url, [("Authorization", "Token k1"), ("Origin", "https://evil.example")]
        )
        assert foreign.status_code == 403

        async with open_websocket_url(
            url,
            extra_headers=[(b"Authorization", b"Token k1"), (b"Origin", f"http://{host}".encode())],
        ) as first:
            assert await first.get_message() == identity_of("k1")
            busy = await rejected(url + "?token=k1")
            assert busy.status_code == 429
            assert (b"retry-after", b"5") in busy.headers
            async with open_websocket_url(url, subprotocols=["token", "k2"]) as second:
                assert second.subprotocol == "token"
                assert await second.get_message() == identity_of("k2")
                full = await rejected(url, [("Authorization", "Bearer k3")])
                assert full.status_code == 503
                assert json.loads(full.body or b"")["error"]["code"] == "server_full"
        assert gate.statistics().refused_full == 1


async def test_http_routes_need_a_key_except_public_ones_and_answer_cors() -> None:
    config = SecurityConfig(
        api_keys=KEYS,
        origins=AllowedOrigins.from_env({"CHORUS_ALLOWED_ORIGINS": "https://app.example"}),
        limits=Limits(max_upload_bytes=1000),
    )
    async with (
        serving(secured_app(config, SessionGate(10, 10))) as host,
        httpx.AsyncClient(base_url=f"http://{host}") as client,
    ):
        denied = await client.get("/v1/whoami")
        assert denied.status_code == 401
        assert denied.json()["error"]["code"] == "unauthorized"
        allowed = await client.get("/v1/whoami", headers={"Authorization": "Bearer k2"})
        assert allowed.text == identity_of("k2")
        assert (await client.get("/health")).text == "ip:127.0.0.1"
        preflight = await client.options(
            "/v1/whoami",
            headers={
                "Origin": "https://app.example",
                "Access-Control-Request-Method": "GET",
                "Access-Control-Request-Headers": "authorization",
            },
        )
        assert preflight.status_code == 200
        assert preflight.headers["access-control-allow-origin"] == "https://app.example"
        assert "authorization" in preflight.headers["access-control-allow-headers"]
        cors = await client.get(
            "/v1/whoami", headers={"Origin": "https://app.example", "Authorization": "Token k1"}
        )
        assert cors.headers["access-control-allow-origin"] == "https://app.example"
        assert "retry-after" in cors.headers["access-control-expose-headers"]


async def test_uploads_over_the_limit_get_413() -> None:
    config = SecurityConfig(limits=Limits(max_upload_bytes=1000))
    async with serving(secured_app(config, SessionGate(10, 10))) as host:
        async with httpx.AsyncClient(base_url=f"http://{host}") as client:
            small = await client.post("/upload", files={"file": ("a.wav", b"x" * 500)})
            assert (small.status_code, small.text) == (200, "1")
            declared = await client.post("/upload", files={"file": ("a.wav", b"x" * 2000)})
            assert declared.status_code == 413

        form = httpx.Request("POST", "/", files={"file": ("b.wav", b"y" * 5000)})
        body = form.read()

        def post_in_chunks() -> httpx.Response:  # no Content-Length: the body is counted as read
            chunks = (body[start : start + 100] for start in range(0, len(body), 100))
            headers = {"Content-Type": form.headers["content-type"]}
            return httpx.post(f"http://{host}/upload", content=chunks, headers=headers)

        streamed = await trio.to_thread.run_sync(post_in_chunks)
        assert streamed.status_code == 413


def test_a_connection_without_a_caller_is_the_least_privileged_one() -> None:
    nobody = Caller.of({"type": "http"})
    assert nobody == Caller.NOBODY == Caller(client="anonymous", sees_all=False, anonymous=True)
    assert nobody.tenant == "anonymous"
    scope: dict[str, object] = {"type": "http"}
    admin = Caller("key:admin", sees_all=True, anonymous=False)
    admin.admit(scope)
    assert Caller.of(scope) is admin and admin.tenant is None
