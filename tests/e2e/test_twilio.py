"""Twilio Media Streams on `WS /v1/twilio`, and following a live session on
`GET /v1/sessions/{id}/events`, against a server on loopback with tiny.en.

The client is Twilio-shaped: a raw WebSocket sending Twilio's JSON messages (`connected`,
`start`, `media` with base64 μ-law of telephone-band speech on both tracks, `mark`, `stop`),
signed as Twilio signs a stream's handshake. The caller says one thing, the agent another,
starting later (Twilio sends no outbound media before it plays, so the outbound track's
first `timestamp` is late: the server pads by it)."""

from __future__ import annotations

import base64
import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
import trio
import trio.testing
from conftest import serve_app
from support.audio_files import DATA, g711_encode, load, telephone_band
from support.dialect_helpers import overlap
from support.ws_client import connect_from, rejected
from trio_websocket import ConnectionClosed, WebSocketConnection

from actors.model.port import SpeechModel
from protocol.dialects.twilio import TwilioCodec, signature, signature_matches
from protocol.multichannel import ChannelAudio
from service.app import create_app
from service.config import Settings
from service.policy.identity import ApiKeys
from service.policy.security import SecurityConfig

TOKEN = "twilio-auth-token"
KEYS = "alice:alice-key,twilio:twilio-key"
CALLER = "the weather today is sunny with a light breeze from the west"
AGENT = "please return the library books before friday afternoon"
AGENT_STARTS_MS = 4000


def mulaw(name: str) -> bytes:
    return bytes(g711_encode(telephone_band(load(DATA / f"{name}.wav")), "mulaw"))


def call_messages(call_sid: str, parameters: dict[str, str]) -> list[str]:
    """Twilio's messages for a call: the caller from 0 ms, the agent from 4 s; 20 ms chunks."""
    stream_sid = "MZ" + "1" * 32
    caller = mulaw("weather") + b"\xff" * 8000  # a second of silence after
    agent = mulaw("library") + b"\xff" * 8000
    start = {
        "accountSid": "AC" + "0" * 32,
        "streamSid": stream_sid,
        "callSid": call_sid,
        "tracks": ["inbound", "outbound"],
        "customParameters": parameters,
        "mediaFormat": {"encoding": "audio/x-mulaw", "sampleRate": 8000, "channels": 1},
    }
    messages: list[dict[str, Any]] = [
        {"event": "connected", "protocol": "Call", "version": "1.0.0"},
        {"event": "start", "sequenceNumber": "1", "start": start, "streamSid": stream_sid},
    ]
    chunks = []
    for track, audio, first_ms in (("inbound", caller, 0), ("outbound", agent, AGENT_STARTS_MS)):
        for index, offset in enumerate(range(0, len(audio), 160)):
            at = first_ms + offset // 8
            media = {
                "track": track,
                "chunk": str(index + 1),
                "timestamp": str(at),
                "payload": base64.b64encode(audio[offset : offset + 160]).decode(),
            }
            chunks.append((at, {"event": "media", "streamSid": stream_sid, "media": media}))
    chunks.sort(key=lambda chunk: chunk[0])
    messages += [message for _, message in chunks]
    messages.append({"event": "mark", "streamSid": stream_sid, "mark": {"name": "greeting"}})
    messages.append({"event": "stop", "streamSid": stream_sid, "stop": {"callSid": call_sid}})
    for number, message in enumerate(messages[1:], start=1):
        message["sequenceNumber"] = str(number)
    return [json.dumps(message) for message in messages]


@asynccontextmanager
async def twilio_server(model: SpeechModel, data_dir: Path) -> AsyncIterator[str]:
    settings = Settings(model="tiny.en", data_dir=data_dir, twilio_auth_token=TOKEN)
    keys = ApiKeys.from_env({"CHORUS_API_KEYS": KEYS, "CHORUS_ADMIN_KEYS": "admin-key"})
    app = create_app(settings, model=model, security=SecurityConfig(api_keys=keys))
    async with serve_app(app) as address:
        yield address


async def play(ws: WebSocketConnection, messages: list[str]) -> int | None:
    """Send every message, then read until the server closes; its close code."""
    for message in messages:
        await ws.send_message(message)
    try:
        while True:
            await ws.get_message()
    except ConnectionClosed as closed:
        return closed.reason.code if closed.reason is not None else None


async def follow(address: str, session_id: str, key: str) -> list[tuple[str, Any]]:
    """The session's events, until the server ends the stream (after `end`)."""
    events: list[tuple[str, Any]] = []
    headers = {"Authorization": f"Bearer {key}"}
    async with (
        httpx.AsyncClient(base_url=f"http://{address}", timeout=60) as http,
        http.stream("GET", f"/v1/sessions/{session_id}/events", headers=headers) as response,
    ):
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/event-stream")
        name = ""
        async for line in response.aiter_lines():
            if line.startswith("event: "):
                name = line.removeprefix("event: ")
            elif line.startswith("data: "):
                events.append((name, json.loads(line.removeprefix("data: "))))
    return events


async def wait_stored(http: httpx.AsyncClient, session_id: str, key: str) -> None:
    with trio.fail_after(30):
        while True:
            response = await http.get(f"/v1/sessions/{session_id}", headers=_auth(key))
            if response.status_code == 200:
                return
            await trio.sleep(0.02)


def _auth(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


def test_signatures_and_track_alignment() -> None:
    url = "wss://calls.example.com/v1/twilio"
    signed = signature(TOKEN, url)
    assert signature_matches(TOKEN, url, signed)
    assert signature_matches(TOKEN, "wss://calls.example.com:443/v1/twilio", signed)
    assert not signature_matches("another-token", url, signed)
    assert not signature_matches(TOKEN, url + "?x=1", signed)
    codec = TwilioCodec(["outbound", "inbound"])
    media = {"track": "outbound", "chunk": "1", "timestamp": "100", "payload": "AAE="}
    inbound, audio = codec.decode(json.dumps({"event": "media", "media": media}))
    assert audio == ChannelAudio(1, b"\xff" * 800 + b"\x00\x01")  # 100 ms of silence first
    assert inbound == ChannelAudio(0, b"\xff" * 800)  # one clock: the other track too
    media |= {"timestamp": "100", "track": "inbound"}
    [audio] = codec.decode(json.dumps({"event": "media", "media": media}))
    assert audio == ChannelAudio(0, b"\x00\x01")
    assert codec.decode(json.dumps({"event": "dtmf", "dtmf": {"digit": "1"}})) == []


async def test_a_signed_call_is_transcribed_by_channel_stored_and_followed(
    tiny_model: SpeechModel, tmp_path: Path
) -> None:
    call_sid = "CA" + "a" * 32
    messages = call_messages(call_sid, {})
    async with twilio_server(tiny_model, tmp_path) as address:
        host, port = address.split(":")
        headers = [("X-Twilio-Signature", signature(TOKEN, f"wss://{address}/v1/twilio"))]
        followed: list[tuple[str, Any]] = []
        async with (
            httpx.AsyncClient(base_url=f"http://{address}") as http,
            connect_from("127.0.0.1", host, int(port), "/v1/twilio", headers) as ws,
        ):
            for message in messages[:2]:  # connected, start: the session is stored
                await ws.send_message(message)
            await wait_stored(http, call_sid, "twilio-key")

            async def follower() -> None:
                followed.extend(await follow(address, call_sid, "twilio-key"))

            async with trio.open_nursery() as nursery:
                nursery.start_soon(follower)
                code = await play(ws, messages[2:])
            stored = (await http.get(f"/v1/sessions/{call_sid}", headers=_auth("admin-key"))).json()
            other = await http.get(f"/v1/sessions/{call_sid}/events", headers=_auth("alice-key"))
            replay = await follow(address, call_sid, "admin-key")
    assert code == 1000
    assert (stored["route"], stored["client"]) == ("/v1/twilio", "key:twilio")
    texts = {
        c: " ".join(u["text"] for u in stored["utterances"] if u["channel"] == c) for c in (0, 1)
    }
    assert overlap(texts[0], CALLER) >= 0.6 and overlap(texts[1], AGENT) >= 0.6, texts
    assert overlap(texts[0], AGENT) <= 0.3 and overlap(texts[1], CALLER) <= 0.3, texts
    agent = [u for u in stored["utterances"] if u["channel"] == 1]
    assert agent[0]["start"] >= AGENT_STARTS_MS / 1000 - 0.5  # aligned by `timestamp`
    # the follower saw every final once, as stored, then the end
    assert followed[-1] == ("end", {"reason": "ended"})
    live = [data for name, data in followed if name == "final"]  # as they came
    assert sorted(live, key=lambda final: final["index"]) == stored["utterances"]
    assert replay[-1] == ("end", {"reason": "ended"})
    assert [data for name, data in replay if name == "final"] == stored["utterances"]
    assert other.status_code == 404  # another tenant: as if there were no such session


async def test_wrong_signatures_and_keys_are_refused_before_any_audio(
    tiny_model: SpeechModel, tmp_path: Path
) -> None:
    async with twilio_server(tiny_model, tmp_path) as address:
        host, port = address.split(":")
        forged = [("X-Twilio-Signature", signature("not-the-token", f"wss://{address}/v1/twilio"))]
        refusal = await rejected(f"ws://{address}/v1/twilio", forged)
        codes = {}
        cases: tuple[tuple[str, dict[str, str]], ...] = (
            ("wrong", {"chorus_key": "mallory"}),
            ("none", {}),
            ("language", {"chorus_key": "alice-key", "language": "Klingon!"}),
            ("english-only", {"chorus_key": "alice-key", "language": "de"}),
        )
        for name, parameters in cases:
            messages = call_messages("CA" + "b" * 32, parameters)
            async with connect_from("127.0.0.1", host, int(port), "/v1/twilio") as ws:
                codes[name] = await play(ws, messages[:3])
        messages = call_messages("CA" + "c" * 32, {"chorus_key": "alice-key"})
        media = [m for m in messages if '"media"' in m][:50]  # one second of the call
        async with connect_from("127.0.0.1", host, int(port), "/v1/twilio") as ws:
            codes["key"] = await play(ws, [*messages[:2], *media, messages[-1]])
        async with httpx.AsyncClient(base_url=f"http://{address}") as http:
            alices = await http.get(f"/v1/sessions/{'CA' + 'c' * 32}", headers=_auth("alice-key"))
            refused = await http.get(f"/v1/sessions/{'CA' + 'b' * 32}", headers=_auth("admin-key"))
    assert refusal.status_code == 403 and b"invalid_signature" in refusal.body
    assert codes == {
        "wrong": 1008,
        "none": 1008,
        "language": 1008,
        "english-only": 1008,  # tiny.en speaks no German
        "key": 1000,
    }
    assert alices.status_code == 200 and alices.json()["client"] == "key:alice"
    assert refused.status_code == 404  # refused before a session began: nothing stored


@pytest.mark.parametrize("tracks", [["inbound", "inbound"], ["caller"], []])
def test_start_with_odd_tracks_is_refused(tracks: list[str]) -> None:
    from protocol.dialects.twilio import StartDetails, check_start

    start = StartDetails(streamSid="MZ1", callSid="CA1", tracks=tracks)
    assert check_start(start) is not None
    assert check_start(StartDetails(streamSid="MZ1", callSid="CA1", tracks=["outbound"])) is None


def test_payloads_pad_by_timestamp_no_further_than_the_gap_limit() -> None:
    codec = TwilioCodec(["inbound"])
    media = {"track": "inbound", "timestamp": str(10**9), "payload": "AA=="}
    [audio] = codec.decode(json.dumps({"event": "media", "media": media}))
    assert isinstance(audio, ChannelAudio) and len(audio.data) == 80_000 + 1
    assert np.frombuffer(audio.data[:-1], np.uint8).min() == 0xFF


async def test_a_native_session_is_followed_while_it_runs(
    tiny_model: SpeechModel, tmp_path: Path
) -> None:
    from support.dialect_helpers import serving
    from support.ws_client import connect, receive_all, send_audio, send_json

    audio = np.concatenate([load(DATA / "weather.wav"), np.zeros(16000, np.float32)])
    followed: list[tuple[str, Any]] = []
    async with (
        serving(tiny_model, tmp_path) as address,
        connect(f"ws://{address}/v1/stream?language=en") as ws,
    ):
        ready = json.loads(await ws.get_message())  # sent once the session is stored

        async def follower() -> None:
            followed.extend(await follow(address, ready["session_id"], "no-keys-here"))

        async with trio.open_nursery() as nursery:
            nursery.start_soon(follower)
            await send_audio(ws, audio)
            await send_json(ws, {"type": "stop"})
            frames = await receive_all(ws)
    finals = [frame["text"] for frame in frames if frame["type"] == "final"]
    assert finals and [data["text"] for name, data in followed if name == "final"] == finals
    assert followed[-1] == ("end", {"reason": "ended"})
    assert all("channel" not in data for _, data in followed)


async def test_streams_of_one_call_are_stored_and_followed_each_under_its_own_id(
    tiny_model: SpeechModel, tmp_path: Path
) -> None:
    call_sid, first, second = "CA" + "d" * 32, "MZ" + "1" * 32, "MZ" + "2" * 32
    both = call_messages(call_sid, {})
    caller_only = [m.replace(first, second) for m in both if '"track": "outbound"' not in m]
    # the same call three times; the third repeats the second's stream SID
    streams = [both, caller_only, [m.replace(first, second) for m in both]]
    ids = [call_sid, f"{call_sid}-{second}"]
    async with twilio_server(tiny_model, tmp_path) as address:
        host, port = address.split(":")
        headers = [("X-Twilio-Signature", signature(TOKEN, f"wss://{address}/v1/twilio"))]
        followed: dict[str, list[tuple[str, Any]]] = {}
        async with (
            httpx.AsyncClient(base_url=f"http://{address}") as http,
            connect_from("127.0.0.1", host, int(port), "/v1/twilio", headers) as one,
            connect_from("127.0.0.1", host, int(port), "/v1/twilio", headers) as two,
            connect_from("127.0.0.1", host, int(port), "/v1/twilio", headers) as three,
        ):
            for ws, messages, session_id in zip((one, two), streams, ids, strict=False):
                for message in messages[:2]:  # connected, start: stored, one after the other
                    await ws.send_message(message)
                await wait_stored(http, session_id, "twilio-key")
            for message in streams[2][:2]:
                await three.send_message(message)

            async def follower(session_id: str) -> None:
                followed[session_id] = await follow(address, session_id, "twilio-key")

            async with trio.open_nursery() as nursery:
                for session_id in ids:
                    nursery.start_soon(follower, session_id)
                await trio.testing.wait_all_tasks_blocked(0.05)  # both followers are in
                for ws, messages in zip((one, two, three), streams, strict=True):
                    nursery.start_soon(play, ws, messages[2:])
            stored = {
                session_id: (
                    await http.get(f"/v1/sessions/{session_id}", headers=_auth("admin-key"))
                ).json()
                for session_id in ids
            }
            listed = (await http.get("/v1/sessions", headers=_auth("admin-key"))).json()
    assert len([s for s in listed["sessions"] if s["route"] == "/v1/twilio"]) == 3
    for session_id in ids:  # each follower saw its own session's finals, and only those
        live = [data for name, data in followed[session_id] if name == "final"]
        assert sorted(live, key=lambda u: u["index"]) == stored[session_id]["utterances"]
        assert followed[session_id][-1] == ("end", {"reason": "ended"})
    assert {u["channel"] for u in stored[ids[0]]["utterances"]} == {0, 1}
    assert {u["channel"] for u in stored[ids[1]]["utterances"]} == {0}  # the caller only
