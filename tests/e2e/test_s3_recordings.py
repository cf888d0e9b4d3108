"""Recordings kept in an S3-compatible object store (issue 23), against a real server: moto's,
in a subprocess, over HTTP (`tests/support/s3_server.py`), with authentication on.

Two replicas share one database (PostgreSQL, each with its own data dir, or SQLite in one data
dir) and one bucket, each with its own spool: a session recorded on one is uploaded when it ends
and read, whole and by ranges, from the other, which deletes it; what a crash left in a spool is
uploaded at start-up once its session has ended; a key the server refuses costs a session its
recording and nothing else; an object store that cannot be reached is a 503 and keeps the row.
"""

from __future__ import annotations

import io
import logging
import secrets
import wave
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import trio
from conftest import fetch_recording
from support.replicas import SPEECH, on_database, record_session, replica
from support.s3_server import S3Server, start_s3_server

from actors.store.actor import SessionRecord, open_store
from actors.store.recording import wav_header
from actors.store.recordings import RecordingsConfig


@pytest.fixture(scope="module")
def s3() -> Iterator[S3Server]:
    with start_s3_server() as server:
        yield server


@pytest.fixture
def prefix() -> str:
    return f"test-{secrets.token_hex(4)}/audio"


def use_keys(monkeypatch: pytest.MonkeyPatch, server: S3Server, *, wrong: bool = False) -> None:
    for name, value in server.environment(wrong=wrong).items():
        monkeypatch.setenv(name, value)


def settings(server: S3Server, prefix: str, spool: Path) -> dict[str, Any]:
    return {
        "recordings_dir": spool,
        "recordings_url": f"s3://{server.bucket}/{prefix}",
        "s3_endpoint_url": server.url,
    }


async def test_a_recording_is_read_and_deleted_from_another_replica(
    tmp_path: Path,
    s3: S3Server,
    prefix: str,
    monkeypatch: pytest.MonkeyPatch,
    store_database_url: str | None,
) -> None:
    use_keys(monkeypatch, s3)
    a, b = (on_database(tmp_path, store_database_url, name) for name in "ab")
    spool_a, spool_b = tmp_path / "spool-a", tmp_path / "spool-b"
    async with (
        replica(**a, **settings(s3, prefix, spool_a)) as (address_a, _),
        replica(**b, **settings(s3, prefix, spool_b)) as (_, http),
    ):
        frames = await record_session(address_a)
        session_id = frames[0]["session_id"]
        url = f"/v1/sessions/{session_id}/audio"
        whole = await fetch_recording(http, url)  # from replica b, once the session has ended
        objects = await trio.to_thread.run_sync(s3.objects, prefix)
        assert list(objects) == [f"{prefix}/{session_id}.wav"]
        data = objects[f"{prefix}/{session_id}.wav"]
        assert not list(spool_a.iterdir()) and not list(spool_b.iterdir())
        assert (whole.status_code, whole.content) == (200, data)
        assert whole.headers["content-type"] == "audio/wav"
        assert whole.headers["accept-ranges"] == "bytes"
        with wave.open(io.BytesIO(data)) as reader:
            assert (reader.getframerate(), reader.getnframes()) == (16000, len(SPEECH))

        part = await http.get(url, headers={"Range": "bytes=44-1043"})
        assert (part.status_code, part.content) == (206, data[44:1044])
        assert part.headers["content-range"] == f"bytes 44-1043/{len(data)}"
        tail = await http.get(url, headers={"Range": "bytes=-100"})
        assert (tail.status_code, tail.content) == (206, data[-100:])
        beyond = await http.get(url, headers={"Range": f"bytes={len(data)}-"})
        assert beyond.status_code == 416
        assert beyond.headers["content-range"] == f"bytes */{len(data)}"
        assert (await http.get(url, headers={"Range": "seconds=1-2"})).status_code == 400
        stale = await http.get(url, headers={"Range": "bytes=0-9", "If-Range": '"stale"'})
        assert (stale.status_code, stale.content) == (200, data)
        head = await http.head(url)
        assert (head.status_code, head.headers["content-length"]) == (200, str(len(data)))

        assert (await http.delete(f"/v1/sessions/{session_id}")).status_code == 204
        assert await trio.to_thread.run_sync(s3.objects, prefix) == {}
        assert (await http.get(url)).status_code == 404
    assert [frame["type"] for frame in frames if frame["type"] in ("final", "error")] == ["final"]


async def test_a_recording_a_crash_left_in_the_spool_is_uploaded_at_start_up(
    tmp_path: Path,
    s3: S3Server,
    prefix: str,
    monkeypatch: pytest.MonkeyPatch,
    store_database_url: str | None,
) -> None:
    """SQLite: the crash's session is ended at start-up, and its recording uploaded. PostgreSQL
    (shared): start-up ends no session, so that one stays in the spool, its header fixed, and
    only a recording whose session had ended (its upload failed) is uploaded."""
    use_keys(monkeypatch, s3)
    spool, url = tmp_path / "spool", store_database_url
    audio = b"\x02\x00" * 16000
    async with open_store(tmp_path, recordings=RecordingsConfig(spool), database_url=url) as store:
        for session_id in ("crashed", "ended"):
            await store.begin_session(
                SessionRecord(
                    id=session_id, route="/v1/stream", client="c", model="m", language="en"
                )
            )
            async with await store.open_recording(session_id, 16000) as recording:
                await recording.append(audio)
        await store.end_session("ended", "stop", 1.0)  # its upload failed: still in the spool
    with (spool / "crashed.wav").open("r+b") as file:  # as a crash leaves it: sizes of zero
        file.write(wav_header(16000, 0))
    config = RecordingsConfig(spool, f"s3://{s3.bucket}/{prefix}", s3.url)
    uploaded = [spool / "ended.wav"] + ([spool / "crashed.wav"] if url is None else [])
    async with open_store(tmp_path, recordings=config, database_url=url) as store:
        with trio.fail_after(30):
            while any(path.exists() for path in uploaded):  # noqa: ASYNC110 - a thread uploads
                await trio.sleep(0.05)
        record = (await store.get_session("crashed")).session
    objects = await trio.to_thread.run_sync(s3.objects, prefix)
    wav = wav_header(16000, len(audio)) + audio
    if url is None:
        assert record.end_reason == "interrupted" and record.duration_s == pytest.approx(1.0)
        assert objects == {f"{prefix}/crashed.wav": wav, f"{prefix}/ended.wav": wav}
    else:  # perhaps live on another replica: the lease sweep's to end (issue 23)
        assert (record.ended_at, record.end_reason) == (None, None)
        assert objects == {f"{prefix}/ended.wav": wav}
        assert (spool / "crashed.wav").read_bytes() == wav


async def test_a_key_the_store_refuses_costs_the_session_its_recording_only(
    tmp_path: Path,
    s3: S3Server,
    prefix: str,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    use_keys(monkeypatch, s3, wrong=True)
    caplog.set_level(logging.ERROR, "chorus.recorder")
    async with replica(tmp_path, **settings(s3, prefix, tmp_path / "spool")) as (address, http):
        frames = await record_session(address)
        session_id = frames[0]["session_id"]
        stored = (await http.get(f"/v1/sessions/{session_id}")).json()
        audio = await fetch_recording(http, f"/v1/sessions/{session_id}/audio")
    (error,) = [frame for frame in frames if frame["type"] == "error"]
    assert (error["code"], error["fatal"]) == ("recording_stopped", False)
    assert [frame["type"] for frame in frames][-1] == "stopped"
    assert [frame for frame in frames if frame["type"] == "final"]  # the session went on
    assert stored["utterances"] and not stored["has_audio"] and audio.status_code == 404
    assert f"s3://{s3.bucket}/{prefix}" in caplog.text and "credentials" in caplog.text
    assert not list((tmp_path / "spool").iterdir())
    assert await trio.to_thread.run_sync(s3.objects, prefix) == {}


async def test_an_object_store_that_cannot_be_reached_is_a_503_and_keeps_the_row(
    tmp_path: Path, prefix: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    with start_s3_server() as own:
        use_keys(monkeypatch, own)
        async with replica(tmp_path, **settings(own, prefix, tmp_path / "spool")) as (
            address,
            http,
        ):
            frames = await record_session(address)
            session_id = frames[0]["session_id"]
            assert (await fetch_recording(http, f"/v1/sessions/{session_id}/audio")).is_success
            own.kill()
            audio = await http.get(f"/v1/sessions/{session_id}/audio")
            deleted = await http.delete(f"/v1/sessions/{session_id}")
            still = await http.get(f"/v1/sessions/{session_id}")
    for answer in (audio, deleted):
        assert (answer.status_code, answer.json()["error"]["code"]) == (
            503,
            "recordings_unavailable",
        )
    assert still.status_code == 200 and still.json()["has_audio"]
