"""`WS /v1/twilio` against hostile or odd input, on a real server on loopback with the fake
model: a message over the route's small bound, a timestamp too long to be one, a malformed Host
under a signature, a percent-encoded path as Twilio signed it, and an open server that is sent
a key anyway."""

from __future__ import annotations

import base64
import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import httpx
import pytest
from conftest import serve_app
from support.fakes import FakeModel
from support.ws_client import connect_from, rejected
from trio_websocket import ConnectionClosed, WebSocketConnection

from protocol.codec import ProtocolError
from protocol.dialects.twilio import TwilioCodec, signature, signature_matches
from service.app import create_app
from service.config import Settings
from service.policy.hosts import AllowedHosts
from service.policy.security import SecurityConfig

TOKEN = "twilio-auth-token"
CALL, STREAM = "CA" + "e" * 32, "MZ" + "e" * 32


@asynccontextmanager
async def server(data_dir: Path, *, token: str = "") -> AsyncIterator[str]:
    """A server with no API keys, any Host (`CHORUS_ALLOWED_HOSTS=*`: a malformed one reaches
    the route), and a Twilio token only when given one."""
    settings = Settings(model="fake", data_dir=data_dir, twilio_auth_token=token)
    security = SecurityConfig(hosts=AllowedHosts(any=True))  # behind a proxy: any Host
    async with serve_app(create_app(settings, model=FakeModel(), security=security)) as address:
        yield address


def start(parameters: dict[str, str]) -> list[str]:
    details = {"streamSid": STREAM, "callSid": CALL, "tracks": ["inbound", "outbound"]}
    return [
        json.dumps({"event": "connected", "protocol": "Call", "version": "1.0.0"}),
        json.dumps({"event": "start", "start": details | {"customParameters": parameters}}),
    ]


def media(timestamp: str) -> str:
    payload = base64.b64encode(b"\xff" * 160).decode()
    details = {"track": "inbound", "timestamp": timestamp, "payload": payload}
    return json.dumps({"event": "media", "media": details})


async def play(ws: WebSocketConnection, messages: list[str]) -> int | None:
    """Send every message, then read until the server closes; its close code."""
    try:
        for message in messages:
            await ws.send_message(message)
        while True:
            await ws.get_message()
    except ConnectionClosed as closed:
        return closed.reason.code if closed.reason is not None else None


async def call(address: str, messages: list[str], path: str = "/v1/twilio") -> int | None:
    host, port = address.split(":")
    async with connect_from("127.0.0.1", host, int(port), path) as ws:
        return await play(ws, messages)


def test_a_timestamp_longer_than_twelve_digits_is_a_protocol_error() -> None:
    codec = TwilioCodec(["inbound"])
    assert len(codec.decode(media("9" * 12))) == 1
    for stamp in ("1" * 13, "1" * 5000):  # 5000 digits: past int()'s own limit
        with pytest.raises(ProtocolError) as refused:
            codec.decode(media(stamp))
        assert refused.value.code == "invalid_message"


def test_a_malformed_host_matches_no_signature() -> None:
    for url in ("wss://h:99999/v1/twilio", "wss://[::1/v1/twilio"):
        assert not signature_matches(TOKEN, url, signature(TOKEN, url))  # no URL Twilio asks


async def test_an_open_server_takes_a_stream_with_a_key_and_refuses_odd_input(
    tmp_path: Path,
) -> None:
    async with server(tmp_path) as address:
        stop = json.dumps({"event": "stop", "stop": {}})
        keyed = await call(address, [*start({"chorus_key": "any"}), media("0"), stop])
        async with httpx.AsyncClient(base_url=f"http://{address}") as http:
            stored = await http.get(f"/v1/sessions/{CALL}")
        # a timestamp no call has: refused, not a server error; the call goes on
        stamped = await call(address, [*start({}), media("1" * 5000), media("20"), stop])
        huge = await call(address, [*start({}), json.dumps({"event": "mark", "x": "y" * 17000})])
    assert keyed == 1000 and stored.status_code == 200
    assert stamped == 1000
    assert huge == 1009  # over the route's 16 KiB


async def test_signatures_with_odd_hosts_and_percent_encoded_paths(tmp_path: Path) -> None:
    async with server(tmp_path, token=TOKEN) as address:
        refusals = []
        for host in ("h:99999", "[::1"):
            signed = [("X-Twilio-Signature", signature(TOKEN, f"wss://{host}/v1/twilio"))]
            refusals.append(await rejected(f"ws://{address}/v1/twilio", signed, host=host))
        host, port = address.split(":")
        raw = "/v1/tw%69lio"  # the route, as Twilio requested it and signed it
        signed = [("X-Twilio-Signature", signature(TOKEN, f"wss://{address}{raw}"))]
        stop = json.dumps({"event": "stop", "stop": {}})
        async with connect_from("127.0.0.1", host, int(port), raw, signed) as ws:
            code = await play(ws, [*start({}), media("0"), stop])
    assert [refusal.status_code for refusal in refusals] == [403, 403]
    assert all(b"invalid_signature" in refusal.body for refusal in refusals)
    assert code == 1000
