"""Two Chorus apps on one real PostgreSQL (`DATABASE_URL`), as two replicas behind a balancer:
a session streamed to one is read, with its finals, from the other.

Each app is served by hypercorn on loopback with the fake model and real VAD, and keeps its own
data dir (its recordings); the database is a real PostgreSQL server (`support.postgres_server`).
"""

from __future__ import annotations

import json
from pathlib import Path

import httpx
import numpy as np
from conftest import fetch_recording, serve_app
from support.audio_files import DATA, load
from support.fakes import FakeModel
from support.postgres_server import PostgresServer
from support.ws_client import connect, receive_all, send_audio

from service.app import create_app
from service.config import Settings

GARDEN = load(DATA / "garden.wav")  # 3.9 s of speech: one final


async def test_a_session_on_one_replica_is_read_with_its_finals_from_another(
    tmp_path: Path, postgres_server: PostgresServer
) -> None:
    url = postgres_server.create_database()

    def replica(name: str) -> Settings:
        return Settings(model="fake", data_dir=tmp_path / name, pace=0.0, database_url=url)

    one = create_app(replica("one"), model=FakeModel())
    two = create_app(replica("two"), model=FakeModel())
    audio = np.concatenate([GARDEN, np.zeros(16000, np.float32)])
    async with serve_app(one) as address_one, serve_app(two) as address_two:
        async with connect(f"ws://{address_one}/v1/stream?record=true") as ws:
            await send_audio(ws, audio, chunk_s=0.5)
            await ws.send_message(json.dumps({"type": "stop"}))
            frames = await receive_all(ws)
        session_id = frames[0]["session_id"]
        finals = [frame["text"] for frame in frames if frame["type"] == "final"]
        async with httpx.AsyncClient(base_url=f"http://{address_one}") as http_one:
            # the recording is written once the session's row is ended
            assert (await fetch_recording(http_one, f"/v1/sessions/{session_id}/audio")).is_success
        async with httpx.AsyncClient(base_url=f"http://{address_two}") as http_two:
            listed = (await http_two.get("/v1/sessions")).json()["sessions"]
            stored = (await http_two.get(f"/v1/sessions/{session_id}")).json()
            elsewhere = await http_two.get(f"/v1/sessions/{session_id}/audio")
    assert finals and [session["id"] for session in listed] == [session_id]
    assert [utterance["text"] for utterance in stored["utterances"]] == finals
    assert stored["end_reason"] == "stop" and stored["has_audio"]
    # recordings stay on the replica that made them (its own data dir)
    assert elsewhere.status_code == 404
    assert not (tmp_path / "one" / "chorus.sqlite3").exists()
