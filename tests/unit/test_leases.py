"""Replica leases and resume tokens in the SQLite store (issue 23): the SQL against a real file,
with explicit times where expiry matters (no sleeping), the `LeaseKeeper` through the store
actor, and a resumed session's recording reopened at its audio time."""

from __future__ import annotations

import sqlite3
import wave
from pathlib import Path
from typing import Any

import attrs
import pytest

from actors.store import leases, schema
from actors.store.actor import SessionRecord, StoredUtterance, open_store
from actors.store.leases import Busy, Claimed, hash_token
from actors.store.recording import create_recording, reopen_recording

ALICE, BOB = "key:alice", "key:bob"


def record(session_id: str, **changes: Any) -> SessionRecord:
    base = SessionRecord(
        id=session_id, route="/v1/stream", client=ALICE, model="tiny.en", language="en"
    )
    return attrs.evolve(base, **changes)


def final(index: int) -> StoredUtterance:
    return StoredUtterance(
        index=index, start=2.0 * index, end=2.0 * index + 1.5, text=f"final {index}",
        language="en", confidence=0.9,
    )  # fmt: skip


def database(path: Path) -> sqlite3.Connection:
    db = schema.connect(path / "chorus.sqlite3")
    leases.migrate(db)
    return db


def open_session(db: sqlite3.Connection, session_id: str, until: float | None) -> None:
    schema.insert_session(db, record(session_id))
    leases.take(db, session_id, "replica-a", until)
    leases.bind_token(db, session_id, hash_token("token-1"), ALICE)


def claim(db: sqlite3.Connection, token: str, client: str = ALICE, *, now: float) -> object:
    return leases.claim(
        db, hash_token(token), client, hash_token("token-2"), "replica-b",
        now=now, until=now + 30, stale=now + 10,
    )  # fmt: skip


def test_the_migration_is_idempotent(tmp_path: Path) -> None:
    db = database(tmp_path)
    leases.migrate(db)
    columns = {row[1] for row in db.execute("PRAGMA table_info(sessions)")}
    assert {"replica", "lease_until", "resume_hash", "resume_client"} <= columns
    assert "seq" in {row[1] for row in db.execute("PRAGMA table_info(utterances)")}


def test_a_released_session_is_claimed_once_with_its_finals_and_their_seq(tmp_path: Path) -> None:
    db = database(tmp_path)
    open_session(db, "s1", until=1030.0)
    for index, seq in [(0, 4), (1, 9)]:
        schema.insert_utterance(db, "s1", final(index))
        leases.mark_seq(db, "s1", index, seq)
    assert isinstance(claim(db, "token-1", now=1000.0), Busy)  # replica-a still runs it
    leases.release(db, "s1", 3.5, until=1030.0)
    claimed = claim(db, "token-1", now=1000.0)
    assert isinstance(claimed, Claimed) and claimed.session_id == "s1"
    assert [(seq, utterance.index) for seq, utterance in claimed.finals] == [(4, 0), (9, 1)]
    assert claimed.finals[1][1] == final(1)
    assert claim(db, "token-1", now=1000.0) is None  # used: the token rotated
    row = db.execute("SELECT replica, lease_until, resume_hash FROM sessions").fetchone()
    assert row == ("replica-b", 1030.0, hash_token("token-2"))


def test_a_replica_that_missed_its_renewals_loses_the_session_to_a_claim(tmp_path: Path) -> None:
    db = database(tmp_path)
    open_session(db, "s1", until=1030.0)
    assert isinstance(claim(db, "token-1", now=1015.0), Busy)  # renewed 15 s ago at most
    assert isinstance(claim(db, "token-1", now=1025.0), Claimed)  # two renewals missed


@pytest.mark.parametrize(
    ("token", "client", "now", "ended"),
    [
        ("token-1", BOB, 1000.0, False),  # another key
        ("token-1", ALICE, 1031.0, False),  # expired
        ("token-1", ALICE, 1000.0, True),  # the session was stopped
        ("garbage", ALICE, 1000.0, False),
    ],
)
def test_claims_are_refused_alike(
    tmp_path: Path, token: str, client: str, now: float, ended: bool
) -> None:
    db = database(tmp_path)
    open_session(db, "s1", until=1030.0)
    leases.release(db, "s1", 1.0, until=1030.0)
    if ended:
        db.execute("UPDATE sessions SET ended_at = 1000, end_reason = 'stop'")
    assert claim(db, token, client, now=now) is None


def test_only_lapsed_leases_are_swept(tmp_path: Path) -> None:
    db = database(tmp_path)
    open_session(db, "held", until=1030.0)
    schema.insert_session(db, record("lapsed"))
    leases.take(db, "lapsed", "replica-a", 990.0)
    schema.insert_utterance(db, "lapsed", final(0))
    schema.insert_session(db, record("unleased"))
    assert [row[0] for row in leases.lapsed_sessions(db, 1000.0)] == ["lapsed"]
    assert [row[3] for row in leases.lapsed_sessions(db, 1000.0)] == [1.5]  # its last final
    at_start = leases.lapsed_sessions(db, 1000.0, unleased=True)
    assert sorted(row[0] for row in at_start) == ["lapsed", "unleased"]


async def test_the_keeper_renews_what_it_holds_and_sweeps_what_lapsed(tmp_path: Path) -> None:
    async with open_store(tmp_path, lease_s=30.0) as store:
        await store.begin_session(record("live"))
        await store.begin_session(record("gone"))
        await store.add_utterance("gone", final(0), seq=3)
        await store.leases.release("gone", 2.5)
        assert store.statistics().held == 1
        other = sqlite3.connect(tmp_path / "chorus.sqlite3")
        with other:
            other.execute("UPDATE sessions SET lease_until = 0")  # everyone's lease lapsed
        other.close()
        assert await store.leases.keep() == 1  # `live` was renewed first
        gone = await store.get_session("gone")
        live = await store.get_session("live")
        assert store.statistics().swept == 1
    assert gone.session.end_reason == "interrupted" and gone.session.duration_s == 2.5
    assert live.session.ended_at is None


async def test_a_released_session_outlives_a_restart_and_a_crashed_one_does_not(
    tmp_path: Path,
) -> None:
    async with open_store(tmp_path, lease_s=30.0) as store:
        await store.begin_session(record("released"))
        await store.leases.release("released", 1.0)
    db = sqlite3.connect(tmp_path / "chorus.sqlite3")
    with db:
        db.execute(
            "INSERT INTO sessions (id, route, client, model, language, started_at)"
            " VALUES ('old', '/v1/stream', 'x', 'm', 'en', 1)"
        )  # a row from before leases: no lease at all
    db.close()
    async with open_store(tmp_path, lease_s=30.0) as store:
        assert store.statistics().interrupted_at_start == 1
        assert (await store.get_session("released")).session.ended_at is None
        assert (await store.get_session("old")).session.end_reason == "interrupted"
    async with open_store(tmp_path) as store:  # without leases, every open row is a crash's
        assert store.statistics().interrupted_at_start == 1


@pytest.mark.parametrize(("held", "at"), [(3000, 1000), (1000, 3000), (2000, 2000)])
async def test_a_reopened_recording_goes_on_at_its_audio_time(
    tmp_path: Path, held: int, at: int
) -> None:
    """What the file holds past `at` bytes is cut; a gap up to it is silence; then it goes on."""
    path = tmp_path / "s1.wav"
    first = await create_recording(path, 16000)
    await first.append(b"\x01\x00" * (held // 2))
    await first.aclose()
    again = await reopen_recording(path, 16000, at)
    await again.append(b"\x02\x00" * 100)
    await again.aclose()
    with wave.open(str(path), "rb") as reader:
        data = reader.readframes(reader.getnframes())
    kept = min(held, at)
    assert data == b"\x01\x00" * (kept // 2) + bytes(at - kept) + b"\x02\x00" * 100
    with pytest.raises(FileNotFoundError):
        await reopen_recording(tmp_path / "elsewhere.wav", 16000, at)
