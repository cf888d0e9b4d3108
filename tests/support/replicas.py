"""Replicas for the recordings tests (issue 23): fake-model apps on 127.0.0.1:0 that share one
database (PostgreSQL, each replica with its own data dir, as on separate machines; or one data
dir, SQLite in WAL mode standing in for it) and keep recordings where their settings say, and a
recorded live session."""

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


def on_database(tmp_path: Path, database_url: str | None, name: str) -> dict[str, Any]:
    """Settings for replica `name` on the database replicas share: PostgreSQL at
    `database_url` with a data dir of its own, or (None) SQLite in one data dir for all."""
    if database_url is None:
        return {"data_dir": tmp_path / "shared"}
    return {"data_dir": tmp_path / name, "database_url": database_url}


async def record_session(address: str) -> list[dict[str, Any]]:
    """A live session on `/v1/stream` with `record=true`, to its `stopped`: every frame."""
    async with connect(f"ws://{address}/v1/stream?record=true") as ws:
        await send_audio(ws, SPEECH, chunk_s=0.5)
        await ws.send_message(json.dumps({"type": "stop"}))
        return await receive_all(ws)
