"""Replica leases and resume tokens in the store (issue 23), on both backends (a real SQLite
file, a real PostgreSQL server: `store_database_url`): the SQL with explicit times where expiry
matters (no sleeping), the `LeaseKeeper` through the store actor, two replicas sweeping at once,
and a resumed session's recording reopened at its audio time."""

from __future__ import annotations

import fcntl
import sqlite3
import wave
from collections.abc import Callable, Collection, Iterator
from pathlib import Path
from typing import Any

import attrs
import pytest
import trio
import trio.testing

from actors.store import leases, schema
from actors.store.actor import SessionRecord, StoredUtterance, StoreError, open_store
from actors.store.database import Database, open_database
from actors.store.keeper import LeaseKeeper
from actors.store.leases import Busy, Claimed, hash_token
from actors.store.migrations import migrate
from actors.store.recording import RecordingBusy, create_recording, reopen_recording
from actors.store.recordings import LocalRecordings
from actors.store.sql import Connection

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


@pytest.fixture
def database(tmp_path: Path, store_database_url: str | None) -> Iterator[Database]:
    """The store's database (SQLite in `tmp_path`, or a new PostgreSQL one), migrated."""
    opened = open_database(tmp_path, store_database_url)
    migrate(opened)
    yield opened
    opened.close()


@pytest.fixture
def db(database: Database) -> Connection:
    return database.connection  # each statement commits on its own (autocommit)


def open_session(db: Connection, session_id: str, until: float | None) -> None:
    schema.insert_session(db, record(session_id))
    leases.take(db, session_id, "replica-a", until)
    leases.bind_token(db, session_id, hash_token("token-1"), ALICE)


def claim(db: Connection, token: str, client: str = ALICE, *, now: float) -> object:
    return leases.claim(
        db, hash_token(token), client, hash_token("token-2"), "replica-b",
        now=now, until=now + 30, stale=now + 10,
    )  # fmt: skip


def test_the_columns_are_a_migration_applied_once(database: Database, db: Connection) -> None:
    assert migrate(database) == []
    db.execute("SELECT replica, lease_until, resume_hash, resume_client FROM sessions LIMIT 0")
    db.execute("SELECT seq FROM utterances LIMIT 0")
    open_session(db, "s1", until=1030.0)
    schema.insert_session(db, record("s2"))
    with pytest.raises(Exception, match=r"(?i)unique"):  # a token hash names one session
        leases.bind_token(db, "s2", hash_token("token-1"), ALICE)


def test_a_released_session_is_claimed_once_with_its_finals_and_their_seq(db: Connection) -> None:
    open_session(db, "s1", until=1030.0)
    for index, seq in [(0, 4), (1, 9)]:
        schema.insert_utterance(db, "s1", final(index))
        leases.mark_seq(db, "s1", index, seq)
    assert isinstance(claim(db, "token-1", now=1000.0), Busy)  # replica-a still runs it
    leases.release(db, "s1", "replica-a", 3.5, until=1030.0)
    claimed = claim(db, "token-1", now=1000.0)
    assert isinstance(claimed, Claimed) and claimed.session_id == "s1"
    assert [(seq, utterance.index) for seq, utterance in claimed.finals] == [(4, 0), (9, 1)]
    assert claimed.finals[1][1] == final(1)
    assert isinstance(claim(db, "token-1", now=1000.0), Busy)  # good until a final is stored
    row = db.execute("SELECT replica, lease_until, resume_hash FROM sessions").fetchone()
    assert row == ("replica-b", 1030.0, hash_token("token-2"))
    schema.insert_utterance(db, "s1", final(2))
    leases.mark_seq(db, "s1", 2, 12)  # the new connection stored a final after its `ready`
    leases.release(db, "s1", "replica-b", 7.5, until=1030.0)
    assert claim(db, "token-1", now=1000.0) is None  # used: the token rotated


def test_a_resume_cut_before_its_ready_resumes_again_with_the_same_token(db: Connection) -> None:
    open_session(db, "s1", until=1030.0)
    leases.release(db, "s1", "replica-a", 3.5, until=1030.0)
    assert isinstance(claim(db, "token-1", now=1000.0), Claimed)
    leases.release(db, "s1", "replica-b", 3.5, until=1030.0)  # cut before the client read `ready`
    assert isinstance(claim(db, "token-1", now=1000.0), Claimed)
    leases.release(db, "s1", "replica-b", 3.5, until=1030.0)
    again = leases.claim(
        db, hash_token("token-2"), ALICE, hash_token("token-3"), "replica-c",
        now=1000.0, until=1030.0, stale=1010.0,
    )  # fmt: skip
    assert isinstance(again, Claimed)  # the client that did read it resumes with the new one


def test_a_replica_that_missed_its_renewals_loses_the_session_to_a_claim(db: Connection) -> None:
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
    db: Connection, token: str, client: str, now: float, ended: bool
) -> None:
    open_session(db, "s1", until=1030.0)
    leases.release(db, "s1", "replica-a", 1.0, until=1030.0)
    if ended:
        db.execute("UPDATE sessions SET ended_at = 1000, end_reason = 'stop'")
    assert claim(db, token, client, now=now) is None


def test_only_lapsed_leases_are_swept(db: Connection) -> None:
    open_session(db, "held", until=1030.0)
    schema.insert_session(db, record("lapsed"))
    leases.take(db, "lapsed", "replica-a", 990.0)
    schema.insert_utterance(db, "lapsed", final(0))
    schema.insert_session(db, record("released"))
    leases.take(db, "released", "replica-a", 1030.0)
    leases.release(db, "released", "replica-a", 2.5, until=995.0)
    schema.insert_session(db, record("unleased"))
    swept = leases.end_lapsed(db, 1000.0)
    assert sorted((row[0], row[3]) for row in swept) == [("lapsed", 1.5), ("released", 2.5)]
    assert leases.end_lapsed(db, 1000.0) == []  # ended once
    at_start = leases.end_lapsed(db, 1000.0, unleased=True)
    assert [row[0] for row in at_start] == ["unleased"]
    ended = db.execute(
        "SELECT id, end_reason, ended_at - started_at FROM sessions"
        " WHERE ended_at IS NOT NULL ORDER BY id"
    ).fetchall()
    assert [(id_, reason) for id_, reason, _ in ended] == [
        ("lapsed", "interrupted"), ("released", "interrupted"), ("unleased", "interrupted"),
    ]  # fmt: skip
    assert [length for _, _, length in ended] == pytest.approx([1.5, 2.5, 0.0])


async def test_the_keeper_renews_what_it_holds_and_sweeps_what_lapsed(
    tmp_path: Path, store_database_url: str | None
) -> None:
    async with open_store(tmp_path, lease_s=30.0, database_url=store_database_url) as store:
        await store.begin_session(record("live"))
        await store.begin_session(record("gone"))
        await store.add_utterance("gone", final(0), seq=3)
        await store.leases.release("gone", 2.5)
        assert store.statistics().held == 1
        other = open_database(tmp_path, store_database_url)
        other.connection.execute("UPDATE sessions SET lease_until = 0")  # everyone's lapsed
        other.close()
        assert await store.leases.keep() == 1  # `live` was renewed first
        gone = await store.get_session("gone")
        live = await store.get_session("live")
        assert store.statistics().swept == 1
    assert gone.session.end_reason == "interrupted" and gone.session.duration_s == 2.5
    assert live.session.ended_at is None


async def test_a_replica_that_lost_its_session_neither_releases_nor_ends_it_nor_renews_it(
    tmp_path: Path, store_database_url: str | None
) -> None:
    """Replica `a` missed its renewals and `b` claimed the session: `a` learns it at its next
    renewal, and its late release and end change nothing; `b` ends it."""
    directories = [tmp_path / "a", tmp_path / "b"] if store_database_url else [tmp_path] * 2
    async with (
        open_store(directories[0], lease_s=30.0, database_url=store_database_url) as a,
        open_store(directories[1], lease_s=30.0, database_url=store_database_url) as b,
    ):
        await a.begin_session(record("s1"), token_hash=hash_token("token-1"))
        other = open_database(tmp_path, store_database_url)
        other.connection.execute("UPDATE sessions SET lease_until = lease_until - 25")  # stale
        other.close()
        taken = await b.leases.claim(hash_token("token-1"), ALICE, hash_token("token-2"))
        assert isinstance(taken, Claimed) and a.statistics().held == 1
        assert await a.leases.keep() == 0
        assert a.statistics().held == 0  # not renewed any more
        await a.leases.release("s1", 1.0)
        await a.end_session("s1", "client_closed", 1.0)
        still = (await b.get_session("s1")).session
        await b.end_session("s1", "stop", 4.0)
        ended = (await b.get_session("s1")).session
    assert still.ended_at is None and still.duration_s is None
    assert (ended.end_reason, ended.duration_s) == ("stop", 4.0)


async def test_a_session_whose_row_did_not_commit_is_not_held(
    tmp_path: Path, store_database_url: str | None, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A database out of reach: the failed `begin_session` leaves nothing to renew."""

    def unreachable(*_: object) -> None:
        raise sqlite3.OperationalError("the database is out of reach")  # a driver's error

    async with open_store(tmp_path, lease_s=30.0, database_url=store_database_url) as store:
        await store.begin_session(record("stored"), token_hash=hash_token("token-1"))
        monkeypatch.setattr(schema, "insert_session", unreachable)
        for number in range(3):
            with pytest.raises(StoreError):
                await store.begin_session(record(f"lost-{number}"))
        assert store.statistics().held == 1


async def test_replicas_sweeping_at_once_end_a_lapsed_session_once(
    tmp_path: Path, store_database_url: str | None
) -> None:
    """Every replica sweeps; two at the same moment end each lapsed session once between them."""
    directories = [tmp_path / "a", tmp_path / "b"] if store_database_url else [tmp_path] * 2
    async with (
        open_store(directories[0], lease_s=30.0, database_url=store_database_url) as a,
        open_store(directories[1], lease_s=30.0, database_url=store_database_url) as b,
    ):
        for number in range(20):
            await a.begin_session(record(f"s{number}"))
            await a.leases.release(f"s{number}", 1.0)
        other = open_database(tmp_path, store_database_url)
        other.connection.execute("UPDATE sessions SET lease_until = 0")
        other.close()
        swept: list[int] = []

        async def sweep(keeper: Any) -> None:
            swept.append(await keeper.keep())

        async with trio.open_nursery() as nursery:
            for store in (a, b, a, b):
                nursery.start_soon(sweep, store.leases)
        page = await b.list_sessions(limit=100)
    assert sum(swept) == 20
    assert {session.end_reason for session in page.sessions} == {"interrupted"}


async def test_a_released_session_outlives_a_restart_and_a_crashed_one_does_not(
    tmp_path: Path, store_database_url: str | None
) -> None:
    """On SQLite, start-up ends the open rows whose lease lapsed or that never had one; on
    PostgreSQL, shared by replicas, it ends none (the sweep does, for lapsed leases)."""
    url = store_database_url
    async with open_store(tmp_path, lease_s=30.0, database_url=url) as store:
        await store.begin_session(record("released"))
        await store.leases.release("released", 1.0)
    other = open_database(tmp_path, url)
    other.connection.execute(
        "INSERT INTO sessions (id, route, client, model, language, started_at)"
        " VALUES ('old', '/v1/stream', 'x', 'm', 'en', 1)"
    )  # a row from before leases: no lease at all
    other.close()
    async with open_store(tmp_path, lease_s=30.0, database_url=url) as store:
        assert store.statistics().interrupted_at_start == (0 if url else 1)
        assert (await store.get_session("released")).session.ended_at is None
        old = (await store.get_session("old")).session
        assert old.end_reason == (None if url else "interrupted")
    async with open_store(tmp_path, database_url=url) as store:  # without leases
        # SQLite: every open row is a crash's; PostgreSQL: none is this start-up's to end
        assert store.statistics().interrupted_at_start == (0 if url else 1)


async def test_the_sweep_takes_the_duration_from_an_idle_recording_and_leaves_a_busy_one(
    tmp_path: Path, store_database_url: str | None
) -> None:
    url = store_database_url
    async with open_store(tmp_path, lease_s=30.0, database_url=url) as store:
        for session_id in ("idle", "busy"):
            await store.begin_session(record(session_id))
            writer = await store.open_recording(session_id, 16000)
            await writer.append(bytes(2 * 16000 * 3))  # 3 s
            if session_id == "idle":
                await writer.aclose()
                await store.leases.release(session_id, 1.0, recorded=True)
        other = open_database(tmp_path, url)
        other.connection.execute("UPDATE sessions SET lease_until = 0")
        other.close()
        header = store.audio_path("busy").read_bytes()[:44]
        assert await store.leases.keep() == 1  # the busy one is ended, its file left alone
        assert store.audio_path("busy").read_bytes()[:44] == header  # not repaired under it
        idle = (await store.get_session("idle")).session
        await writer.aclose()
    assert idle.end_reason == "interrupted" and idle.duration_s == pytest.approx(3.0)


async def test_a_recording_locked_at_its_sweep_is_repaired_at_a_later_one(
    tmp_path: Path, store_database_url: str | None
) -> None:
    """The sweep ends a session whose recording a writer elsewhere still locks (or an NFS
    server has yet to unlock): its header is fixed, and its end taken from it, once it is not."""
    url = store_database_url
    async with open_store(tmp_path, lease_s=30.0, database_url=url) as store:
        await store.begin_session(record("s1"))
        writer = await store.open_recording("s1", 16000)
        await writer.append(bytes(2 * 16000 * 3))  # 3 s
        await writer.aclose()
        path = store.audio_path("s1")
        with path.open("r+b") as file:
            file.seek(40)
            file.write(bytes(4))  # a header as a crash leaves it: no data size
        await store.leases.release("s1", 0.0, recorded=True)
        other = open_database(tmp_path, url)
        other.connection.execute("UPDATE sessions SET lease_until = 0")
        other.close()
        with path.open("rb") as locked:
            fcntl.flock(locked.fileno(), fcntl.LOCK_EX)
            await store.leases.keep()
        first = (await store.get_session("s1")).session
        await store.leases.keep()
        second = (await store.get_session("s1")).session
    assert first.end_reason == "interrupted" and first.duration_s == 0.0
    assert second.duration_s == pytest.approx(3.0)
    with wave.open(str(path), "rb") as reader:
        assert reader.getnframes() == 3 * 16000


class StuckRecordings(LocalRecordings):
    """An object store out of reach: `recover` never returns."""

    def __init__(self, directory: Path) -> None:
        super().__init__(directory)
        self.asked: list[frozenset[str]] = []

    async def recover(self, ended: Collection[str]) -> None:
        self.asked.append(frozenset(ended))
        await trio.sleep_forever()


async def test_recordings_that_cannot_be_kept_never_hold_up_the_renewals(
    tmp_path: Path, database: Database, db: Connection
) -> None:
    """The sweep ends a lapsed session whose recording cannot be uploaded; the next renewals
    still happen while that upload hangs (`keep_recordings` runs on its own)."""

    async def write(apply: Callable[[Connection], Any]) -> Any:
        return apply(db)

    recordings = StuckRecordings(tmp_path / "recordings")
    keeper = LeaseKeeper(write, recordings, lease_s=30.0)
    for session_id in ("live", "lapsed"):
        schema.insert_session(db, record(session_id))
        keeper.take(record(session_id))(db)
        keeper.taken(record(session_id))
    keeper.let_go("lapsed")
    db.execute("UPDATE sessions SET lease_until = 0")
    async with trio.open_nursery() as nursery:
        nursery.start_soon(keeper.keep_recordings)
        with trio.fail_after(10):  # a guard: without the fix the first `keep` never returns
            assert await keeper.keep() == 1
            await trio.testing.wait_all_tasks_blocked()
            assert recordings.asked == [frozenset({"lapsed"})]  # uploading, stuck
            db.execute("UPDATE sessions SET lease_until = 0 WHERE id = 'live'")
            assert await keeper.keep() == 0
        nursery.cancel_scope.cancel()
    (until,) = db.execute("SELECT lease_until FROM sessions WHERE id = 'live'").fetchone()
    assert until > 0 and keeper.held == 1  # renewed while the upload hung


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
    with path.open("rb") as writer:  # another process's writer still holds it
        fcntl.flock(writer.fileno(), fcntl.LOCK_EX)
        with pytest.raises(RecordingBusy):
            await reopen_recording(path, 16000, at)
