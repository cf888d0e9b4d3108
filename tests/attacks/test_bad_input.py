"""Every bad input on `/v1/stream` gets an `error` frame with a stable code; sessions go on."""

from __future__ import annotations

import base64
import json

import numpy as np
import pytest
import trio
from conftest import serve_app
from starlette.applications import Starlette
from support.audio_files import DATA, load, pcm16
from support.fakes import FakeModel
from support.ws_client import connect, receive_all, send_audio, send_json
from trio_websocket import WebSocketConnection

from service.app import create_app
from service.config import Settings

BAD_TEXT = [
    ("not json at all", "invalid_json"),
    ('{"type": "dance"}', "unknown_type"),
    ('{"no_type": 1}', "invalid_message"),
    ('{"type": "finalize", "extra": 1}', "invalid_message"),
    ('{"type": "config", "sample_rate": "fast"}', "invalid_message"),
    ('{"type": "config", "sample_rate": 96000}', "invalid_message"),
    ('{"type": "config", "encoding": "mp3"}', "invalid_message"),
    ('{"type": "config", "task": "translate"}', "unsupported_task"),
    ('{"type": "config", "language": "fr"}', "unsupported_language"),
    ('{"type": "audio", "data": "%%% not base64"}', "invalid_base64"),
    ('{"type": "audio", "data": ""}', "empty_frame"),
    ('{"type": "audio"}', "invalid_message"),
    ("[1, 2, 3]", "invalid_message"),
]


async def next_frame(ws: WebSocketConnection) -> dict[str, object]:
    with trio.fail_after(10):
        frame: dict[str, object] = json.loads(await ws.get_message())
        return frame


async def expect_error(ws: WebSocketConnection, code: str) -> dict[str, object]:
    frame = await next_frame(ws)
    assert frame["type"] == "error", frame
    assert frame["code"] == code, frame
    assert frame["fatal"] is False and frame["message"]
    return frame


@pytest.fixture
def app() -> Starlette:
    return create_app(Settings(model="fake"), model=FakeModel())


async def test_every_bad_frame_is_answered_and_the_session_goes_on(app: Starlette) -> None:
    speech = np.concatenate([load(DATA / "weather.wav"), np.zeros(16000, np.float32)])
    async with serve_app(app) as address, connect(f"ws://{address}/v1/stream") as ws:
        assert (await next_frame(ws))["type"] == "ready"
        for text, code in BAD_TEXT:
            await ws.send_message(text)
            await expect_error(ws, code)
        await ws.send_message(b"")
        await expect_error(ws, "empty_frame")
        await ws.send_message(b"\0" * (1024 * 1024 + 2))
        await expect_error(ws, "frame_too_large")
        await ws.send_message(json.dumps({"type": "ping", "id": "x" * 70_000}))
        await expect_error(ws, "frame_too_large")
        await ws.send_message(json.dumps({"type": "config", "sample_rate": 8000}))
        ready = await next_frame(ws)  # a valid config before audio is taken
        assert ready["type"] == "ready" and ready["sample_rate"] == 8000
        await ws.send_message(json.dumps({"type": "config", "sample_rate": 16000}))
        assert (await next_frame(ws))["sample_rate"] == 16000
        data = pcm16(speech)
        await ws.send_message(data[:1001])  # odd byte count: kept, joined to the next frame
        await expect_error(ws, "odd_byte_count")
        await ws.send_message(json.dumps({"type": "config", "language": "en"}))
        await expect_error(ws, "config_after_audio")
        await ws.send_message(data[1001:])
        await send_json(ws, {"type": "ping", "id": 7})
        await send_json(ws, {"type": "stop"})
        frames = await receive_all(ws)
    assert {"type": "pong", "id": 7} in [
        {k: v for k, v in f.items() if k in ("type", "id")} for f in frames
    ]
    finals = [f for f in frames if f["type"] == "final"]
    assert len(finals) == 1 and finals[0]["text"].startswith("speech of")
    stopped = frames[-1]
    assert stopped["type"] == "stopped"
    assert abs(stopped["duration_s"] - len(speech) / 16000) < 0.01  # no sample lost
    assert ws.closed is not None and ws.closed.code == 1000


@pytest.mark.parametrize(
    "query, code",
    [
        ("sample_rate=96000", "invalid_config"),
        ("sample_rate=abc", "invalid_config"),
        ("encoding=mp3", "invalid_config"),
        ("endpointing_ms=-5", "invalid_config"),
        ("task=translate", "unsupported_task"),
        ("language=de", "unsupported_language"),
    ],
)
async def test_bad_query_is_refused_with_a_reason(app: Starlette, query: str, code: str) -> None:
    async with serve_app(app) as address, connect(f"ws://{address}/v1/stream?{query}") as ws:
        frames = await receive_all(ws)
    assert [f["type"] for f in frames] == ["error"]
    assert frames[0]["code"] == code and frames[0]["fatal"] is True
    assert ws.closed is not None and ws.closed.code == 1008


async def test_a_bad_client_does_not_disturb_another_session(app: Starlette) -> None:
    speech = np.concatenate([load(DATA / "garden.wav"), np.zeros(16000, np.float32)])
    async with serve_app(app) as address:

        async def vandal() -> None:
            async with connect(f"ws://{address}/v1/stream") as ws:
                for text, _ in BAD_TEXT * 3:
                    await ws.send_message(text)
                await ws.send_message(b"\x01")
                await ws.send_message(base64.b64encode(b"junk"))

        async with trio.open_nursery() as nursery, connect(f"ws://{address}/v1/stream") as ws:
            nursery.start_soon(vandal)
            await send_audio(ws, speech, pace=8.0)
            await send_json(ws, {"type": "stop"})
            frames = await receive_all(ws)
    assert [f["type"] for f in frames if f["type"] in ("final", "stopped")] == ["final", "stopped"]
    assert not [f for f in frames if f["type"] == "error"]
