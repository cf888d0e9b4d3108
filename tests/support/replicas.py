"""Replicas for the recordings tests (issue 23): fake-model apps on 127.0.0.1:0 that share one
database (one data dir: SQLite in WAL mode stands in here for the PostgreSQL that replicas
share) and keep recordings where their settings say, and a recorded live session."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import httpx
import numpy as np
from conftest import serve_app
from support.audio_files import DATA, load
from support.fakes import FakeModel
from support.ws_client import connect, receive_all, send_audio

from service.app import create_app
from service.config import Settings

# the garden clip (one final) and a second of silence: the audio a recording holds
SPEECH = np.concatenate([load(DATA / "garden.wav"), np.zeros(16000, np.float32)])


@asynccontextmanager
async def replica(data_dir: Path, **settings: Any) -> AsyncIterator[tuple[str, httpx.AsyncClient]]:
    """A fake-model app on `data_dir` with these settings; yields its address and a client."""
    app = create_app(
        Settings(model="fake", data_dir=data_dir, pace=0.0, **settings), model=FakeModel()
    )
    async with serve_app(app) as address, httpx.AsyncClient(base_url=f"http://{address}") as http:
        yield address, http


async def record_session(address: str) -> list[dict[str, Any]]:
    """A live session on `/v1/stream` with `record=true`, to its `stopped`: every frame."""
    async with connect(f"ws://{address}/v1/stream?record=true") as ws:
        await send_audio(ws, SPEECH, chunk_s=0.5)
        await ws.send_message(json.dumps({"type": "stop"}))
        return await receive_all(ws)
