"""The store against a real database, SQLite (a file) and PostgreSQL (a real server on loopback,
`store_database_url`): sessions, finals, recordings, retention, crash recovery."""

from __future__ import annotations

import sqlite3
import sys
import wave
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import attrs
import pytest
import trio
import trio.testing

from actors.store.actor import (
    AlreadyStored,
    SessionLive,
    SessionNotFound,
    SessionRecord,
    StoreClosed,
    StoredUtterance,
    StoredWord,
    open_store,
)
from protocol.native import Final, Word

ROOT = Path(__file__).resolve().parents[2]


def record(session_id: str, client: str = "ip:127.0.0.1", **changes: Any) -> SessionRecord:
    base = SessionRecord(
        id=session_id, route="/v1/stream", client=client, model="tiny.en", language="en"
    )
    return attrs.evolve(base, **changes)


def utterance(index: int, text: str, words: bool = False) -> StoredUtterance:
    start = 2.0 * index
    return StoredUtterance(
        index=index,
        start=start,
        end=start + 1.5,
        text=text,
        language="en",
        confidence=0.9,
        words=(StoredWord(text.split()[0], start, start + 0.4, 0.8),) if words else None,
    )


async def test_a_session_and_its_finals_persist_across_restarts(
    tmp_path: Path, store_database_url: str | None
) -> None:
    async with open_store(tmp_path, database_url=store_database_url) as store:
        await store.begin_session(record("s1"))
        await store.add_utterance("s1", utterance(0, " Hello there.", words=True))
        await store.add_utterance("s1", utterance(1, "General Kenobi. "))
        await store.add_utterance("s1", utterance(2, "  "))
        await store.end_session("s1", "stop", 6.5)
    if store_database_url is None:
        db = sqlite3.connect(tmp_path / "chorus.sqlite3")
        assert db.execute("PRAGMA journal_mode").fetchone() == ("wal",)
        db.close()
    async with open_store(tmp_path, database_url=store_database_url) as store:
        detail = await store.get_session("s1")
        assert await store.transcript("s1") == "Hello there. General Kenobi."
    session = detail.session
    assert (session.id, session.route, session.client, session.model) == (
        "s1",
        "/v1/stream",
        "ip:127.0.0.1",
        "tiny.en",
    )
    assert (session.end_reason, session.duration_s, session.utterances) == ("stop", 6.5, 3)
    assert session.ended_at is not None and session.ended_at >= session.started_at
    assert not session.has_audio
    assert [u.index for u in detail.utterances] == [0, 1, 2]
    assert detail.utterances[0] == utterance(0, " Hello there.", words=True)
    assert detail.utterances[1].words is None


async def test_pages_are_newest_first_and_filter_by_client(
    tmp_path: Path, store_database_url: str | None
) -> None:
    async with open_store(tmp_path, database_url=store_database_url) as store:
        for number in range(7):
            await store.begin_session(record(f"s{number}", client=f"key:{number % 2}"))
        seen: list[str] = []
        position = None
        while True:
            page = await store.list_sessions(limit=3, after=position)
            seen += [session.id for session in page.sessions]
            if page.next is None:
                break
            position = page.next
        assert seen == [f"s{number}" for number in reversed(range(7))]
        odd = await store.list_sessions(client="key:1", limit=10)
        assert [s.id for s in odd.sessions] == ["s5", "s3", "s1"] and odd.next is None
        exact = await store.list_sessions(client="key:1", limit=3)
        assert exact.next is None
        with pytest.raises(ValueError, match="limit"):
            await store.list_sessions(limit=0)
        # sessions that started in the same microsecond are paged by id, none lost or repeated
        same = datetime(2024, 1, 1, tzinfo=UTC)
        for name in ("t1", "t2", "t3"):
            await store.begin_session(record(name, client="key:t", started_at=same))
        first = await store.list_sessions(client="key:t", limit=2)
        rest = await store.list_sessions(client="key:t", limit=2, after=first.next)
        assert [s.id for s in first.sessions + rest.sessions] == ["t3", "t2", "t1"]
        assert rest.next is None


async def test_one_bad_write_fails_alone_and_writes_are_batched(
    tmp_path: Path, store_database_url: str | None
) -> None:
    async with open_store(tmp_path, database_url=store_database_url) as store:
        await store.begin_session(record("s1"))
        errors: list[BaseException] = []

        async def add(session_id: str, index: int) -> None:
            try:
                await store.add_utterance(session_id, utterance(index, f"word {index}"))
            except (SessionNotFound, AlreadyStored) as error:
                errors.append(error)

        # Hold the writer's thread while the writes queue up (released before the nursery waits).
        async with trio.open_nursery() as nursery, store._limiter:
            for index in range(20):
                nursery.start_soon(add, "s1", index)
            nursery.start_soon(add, "missing", 0)
            nursery.start_soon(add, "s1", 0)  # a final is never written twice
            await trio.testing.wait_all_tasks_blocked()
        stats = store.statistics()
        assert sorted(type(error).__name__ for error in errors) == [
            "AlreadyStored",
            "SessionNotFound",
        ]
        assert (stats.writes, stats.failed) == (23, 2)  # counted before the checks below
        assert stats.batches <= 3  # begin_session, then the 22 waiting writes in one or two
        assert stats.largest_batch >= 11
        assert (await store.get_session("s1")).session.utterances == 20
        with pytest.raises(AlreadyStored):
            await store.begin_session(record("s1"))
        with pytest.raises(SessionNotFound):
            await store.end_session("missing", "stop", 1.0)
        with pytest.raises(SessionNotFound):
            await store.get_session("missing")
    with pytest.raises(StoreClosed):
        await store.get_session("s1")
    with pytest.raises(StoreClosed):
        await store.begin_session(record("s2"))


def test_a_final_frame_becomes_a_stored_utterance() -> None:
    final = Final(
        utterance=3,
        text=" hi",
        start=1.0,
        end=2.0,
        language="en",
        confidence=0.7,
        words=[Word(word="hi", start=1.1, end=1.5, confidence=0.6)],
    )
    assert StoredUtterance.from_final(final) == StoredUtterance(
        3, 1.0, 2.0, " hi", "en", 0.7, (StoredWord("hi", 1.1, 1.5, 0.6),)
    )


def test_session_ids_must_be_safe_file_names() -> None:
    for bad in ("../etc", "a/b", ".hidden", "", "x" * 200):
        with pytest.raises(ValueError):
            record(bad)


async def test_recording_delete_and_retention(
    tmp_path: Path, store_database_url: str | None
) -> None:
    old = datetime.now(UTC) - timedelta(days=10)
    async with open_store(tmp_path, database_url=store_database_url) as store:
        await store.begin_session(record("live-old", started_at=old))
        for session_id in ("old", "new"):
            started = old if session_id == "old" else datetime.now(UTC)
            await store.begin_session(record(session_id, started_at=started))
            async with await store.open_recording(session_id, 16000) as recording:
                await recording.append(b"\x01\x00" * 16000)
            await store.end_session(session_id, "stop", 1.0)
        assert store.audio_path("old").exists()
        assert (await store.get_session("new")).session.has_audio
        assert await store.purge_older_than(30) == 0
        assert await store.purge_older_than(5) == 1  # the live one stays
        assert not store.audio_path("old").exists()
        with pytest.raises(SessionNotFound):
            await store.get_session("old")
        with pytest.raises(SessionLive):
            await store.delete_session("live-old")
        await store.delete_session("new")
        assert not store.audio_path("new").exists()
        with pytest.raises(SessionNotFound):
            await store.delete_session("new")
        await store.end_session("live-old", "stop", 1.0)
        await store.begin_session(record("later-old", started_at=old, ended_at=old))
    async with open_store(
        tmp_path, retention_days=5, database_url=store_database_url
    ) as store:  # once at start-up
        assert (await store.list_sessions()).sessions == ()
        assert store.statistics().purged == 2
        await store.begin_session(record("periodic", started_at=old, ended_at=old))
    async with open_store(
        tmp_path, retention_days=5, purge_every_s=0.01, database_url=store_database_url
    ) as store:
        await store.begin_session(record("periodic-2", started_at=old, ended_at=old))
        with trio.fail_after(10):
            while (await store.list_sessions()).sessions:  # noqa: ASYNC110 - the purge is timed
                await trio.sleep(0.01)


CRASHING_SESSION = """
import os, signal, sys, trio
from pathlib import Path
from typing import Any
from actors.store.actor import SessionRecord, StoredUtterance, open_store

async def main() -> None:
    async with open_store(Path(sys.argv[1]), database_url=sys.argv[2] or None) as store:
        await store.begin_session(SessionRecord(
            id="crashed", route="/v1/stream", client="c", model="tiny.en", language="en"))
        recording = await store.open_recording("crashed", 16000)
        await recording.append(b"\\x02\\x00" * 32000)
        for index in range(3):
            await store.add_utterance("crashed", StoredUtterance(
                index=index, start=index * 0.5, end=index * 0.5 + 0.4, text=f"final {index}",
                language="en", confidence=0.5))
            print("sent", index, flush=True)  # what a client would have seen by now
        os.kill(os.getpid(), signal.SIGKILL)

trio.run(main)
"""


async def test_a_killed_process_loses_no_committed_final(
    tmp_path: Path, store_database_url: str | None
) -> None:
    (tmp_path / "recordings").mkdir()
    # a WAV this database does not know: another replica's, in a shared directory
    (tmp_path / "recordings" / "theirs.wav").write_bytes(b"not ours to delete")
    result = await trio.run_process(
        [sys.executable, "-c", CRASHING_SESSION, str(tmp_path), store_database_url or ""],
        cwd=ROOT,
        capture_stdout=True,
        check=False,
    )
    assert result.returncode == -9
    assert result.stdout.decode().split("\n")[:3] == ["sent 0", "sent 1", "sent 2"]
    async with open_store(tmp_path, database_url=store_database_url) as store:
        detail = await store.get_session("crashed")
        interrupted = store.statistics().interrupted_at_start
        assert (tmp_path / "recordings" / "theirs.wav").read_bytes() == b"not ours to delete"
        audio_path = store.audio_path("crashed")
    assert detail.transcript == "final 0 final 1 final 2"
    if store_database_url is None:  # this process's database: the crash's session is ended
        assert interrupted == 1
        assert detail.session.end_reason == "interrupted"
        assert detail.session.duration_s == pytest.approx(2.0)  # from the repaired recording
    else:  # shared by replicas: an open session is not start-up's to end (leases end it)
        assert interrupted == 0
        assert (detail.session.ended_at, detail.session.end_reason) == (None, None)
    with wave.open(str(audio_path), "rb") as reader:
        assert reader.getnframes() == 32000
        assert reader.readframes(3) == b"\x02\x00" * 3
