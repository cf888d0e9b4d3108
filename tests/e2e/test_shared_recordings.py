"""Recordings on a directory that replicas share (`CHORUS_RECORDINGS_DIR`, issue 23): two
replicas with one database (SQLite, or PostgreSQL with a data dir each) and one recordings
directory (an NFS mount in production); a session recorded on one is `session_live` on the
other while it runs, then served there, by ranges too, and deleted there."""

from __future__ import annotations

import json
from pathlib import Path

from conftest import fetch_recording
from support.replicas import SPEECH, on_database, replica
from support.ws_client import connect, receive_all, send_audio


async def test_a_recording_on_a_shared_directory_is_served_by_another_replica(
    tmp_path: Path, store_database_url: str | None
) -> None:
    a, b = (on_database(tmp_path, store_database_url, name) for name in "ab")
    shared = tmp_path / "nfs"
    async with (
        replica(**a, recordings_dir=shared) as (address_a, _),
        replica(**b, recordings_dir=shared) as (_, http),
    ):
        async with connect(f"ws://{address_a}/v1/stream?record=true") as ws:
            session_id = json.loads(await ws.get_message())["session_id"]
            await send_audio(ws, SPEECH[:16000], chunk_s=0.5)
            live = await http.get(f"/v1/sessions/{session_id}/audio")
            await send_audio(ws, SPEECH[16000:], chunk_s=0.5)
            await ws.send_message(json.dumps({"type": "stop"}))
            frames = await receive_all(ws)
        url = f"/v1/sessions/{session_id}/audio"
        whole = await fetch_recording(http, url)
        part = await http.get(url, headers={"Range": "bytes=44-99"})
        on_disk = (shared / f"{session_id}.wav").read_bytes()
        assert (await http.delete(f"/v1/sessions/{session_id}")).status_code == 204
        gone = await http.get(url)
    assert (live.status_code, live.json()["error"]["code"]) == (409, "session_live")
    assert frames[-1]["type"] == "stopped"
    assert (whole.status_code, whole.content) == (200, on_disk)
    assert len(on_disk) == 44 + 2 * len(SPEECH)
    for data_dir in {a["data_dir"], b["data_dir"]}:
        assert not (data_dir / "recordings").exists()  # only in the shared directory
    assert (part.status_code, part.content) == (206, whole.content[44:100])
    assert part.headers["content-range"] == f"bytes 44-99/{len(whole.content)}"
    assert gone.status_code == 404 and not list(shared.iterdir())
