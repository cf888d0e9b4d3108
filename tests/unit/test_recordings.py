"""Where recordings are kept (issue 23): a directory that replicas share, the settings that name
an object store (refused up front when they cannot be right), and the ranges the audio route
serves from a store that is not this machine's disk."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import attrs
import pytest
from support.servers import free_port

from actors.store.actor import SessionRecord, open_store
from actors.store.recordings import RecordingsConfig
from service.cli import main
from service.config import Settings
from service.policy.refusal import Refusal
from service.routes.stored_audio import RangeNotSatisfiable, byte_range


def record(session_id: str) -> SessionRecord:
    return SessionRecord(id=session_id, route="/v1/stream", client="c", model="m", language="en")


async def test_a_replica_never_removes_the_recordings_of_another_in_a_shared_directory(
    tmp_path: Path, store_database_url: str | None
) -> None:
    """Two replicas with one recordings directory, and their own SQLite databases or one
    PostgreSQL database: the second one's start-up leaves the first one's files alone,
    finished or still being written (its session open in the database they share), and the
    first one reads and deletes its own."""
    shared = RecordingsConfig(tmp_path / "nfs")
    pcm = bytes(range(256)) * 125
    url = store_database_url
    async with open_store(tmp_path / "a", recordings=shared, database_url=url) as first:
        await first.begin_session(record("done"))
        async with await first.open_recording("done", 16000) as recording:
            await recording.append(pcm)
        await first.end_session("done", "stop", 1.0)
        await first.begin_session(record("live"))
        live = await first.open_recording("live", 16000)
        await live.append(pcm + pcm)  # more than its buffer: on disk, its header not yet fixed
        before = {path.name: path.read_bytes() for path in shared.directory.iterdir()}
        assert len(before["live.wav"]) == 44 + 2 * len(pcm)
        async with open_store(tmp_path / "b", recordings=shared, database_url=url) as second:
            assert second.statistics().interrupted_at_start == 0
            assert await second.recording_store.locate("done") == shared.directory / "done.wav"
        assert {path.name: path.read_bytes() for path in shared.directory.iterdir()} == before
        await live.append(pcm)  # still its own to write
        await first.close_recording(live)
        await first.end_session("live", "stop", 2.0)
        async with await first.recording_store.read("live", 44 + 10, 44 + 20) as part:
            assert await part.receive_some() == (pcm * 3)[10:20]
            assert await part.receive_some() == b""
        await first.delete_session("done")
    assert sorted(path.name for path in shared.directory.iterdir()) == ["live.wav"]


async def test_a_purge_that_cannot_reach_the_bucket_keeps_the_rows_and_the_store_opens(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """Retention deletes the audio before the rows: with the object store down nothing goes,
    and the store still opens (its purge at start-up is logged, not raised)."""
    old = datetime.now(UTC) - timedelta(days=10)
    async with open_store(tmp_path) as store:
        await store.begin_session(attrs.evolve(record("old"), started_at=old))
        await store.close_recording(await store.open_recording("old", 16000))
        await store.end_session("old", "stop", 0.0, ended_at=old)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "key")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "secret")
    endpoint = f"http://127.0.0.1:{free_port()}"  # nothing listens there
    down = RecordingsConfig(tmp_path / "spool", "s3://chorus-audio/x", endpoint)
    async with open_store(tmp_path, retention_days=5, recordings=down) as store:
        assert [s.id for s in (await store.list_sessions()).sessions] == ["old"]
        assert store.statistics().purged == 0
    assert "retention purge failed: s3://chorus-audio/x" in caplog.text


def test_ranges_of_a_stored_recording() -> None:
    size = 1000
    assert byte_range("bytes=0-99", size) == (0, 100)
    assert byte_range("bytes=990-5000", size) == (990, 1000)  # cut at the end
    assert byte_range("bytes=500-", size) == (500, 1000)
    assert byte_range("bytes=-10", size) == (990, 1000)
    assert byte_range("bytes=-5000", size) == (0, 1000)
    assert byte_range("bytes=0-1, 5-9", size) is None  # several ranges: the whole recording
    for beyond in ("bytes=1000-", "bytes=1000-1001", "bytes=-0"):
        with pytest.raises(RangeNotSatisfiable):
            byte_range(beyond, size)
    for malformed in ("seconds=1-2", "bytes=", "bytes=a-b", "bytes=5-1", "bytes=1", "bytes=²-3"):
        with pytest.raises(Refusal) as refused:
            byte_range(malformed, size)
        assert refused.value.status_code == 400


@pytest.mark.parametrize(
    ("url", "reason"),
    [
        ("ftp://bucket/x", "is not s3://bucket/prefix"),
        ("s3:///x", "is not s3://bucket/prefix"),
        ("s3://bucket/x?versionId=1", "is not s3://bucket/prefix"),
        ("s3://key:secret@bucket/x", "is not a bucket name"),
        ("s3://b/x", "is not a bucket name"),
        ("s3://bucket/a/../b", "empty or dot segment"),
        ("s3://bucket/a//b", "empty or dot segment"),
    ],
)
def test_a_recordings_url_that_cannot_be_right_stops_the_server_before_it_starts(
    url: str, reason: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(ValueError, match=reason):
        Settings(recordings_url=url)
    monkeypatch.setenv("CHORUS_RECORDINGS_URL", url)
    assert main(["serve", "--model", "tiny.en"]) == 2
    assert reason in capsys.readouterr().err


def test_the_settings_name_where_recordings_are_kept(tmp_path: Path) -> None:
    assert Settings(data_dir=tmp_path).recordings == RecordingsConfig(tmp_path / "recordings")
    settings = Settings.from_env(
        {
            "CHORUS_RECORDINGS_DIR": str(tmp_path / "spool"),
            "CHORUS_RECORDINGS_URL": "s3://chorus-audio/replicas/",
            "CHORUS_S3_ENDPOINT_URL": "http://127.0.0.1:9000",
        }
    )
    assert settings.recordings == RecordingsConfig(
        tmp_path / "spool", "s3://chorus-audio/replicas/", "http://127.0.0.1:9000"
    )
