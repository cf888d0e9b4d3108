"""Several replicas' stores on one real PostgreSQL server (loopback): they start together, see
each other's finals, leave each other's sessions alone, and live through the server's outage.

Each replica is a store with its own directory (its recordings) on the same database URL, as
replicas on separate machines would be.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import psycopg
import pytest
import trio
from support.postgres_server import PostgresServer

from actors.store.actor import (
    SessionRecord,
    StoredUtterance,
    StoreError,
    StoreHandle,
    open_store,
)
from actors.store.migrations import MIGRATIONS

WAV_HEADER_ONLY = b"RIFF" + bytes(32) + b"data" + bytes(4)


def record(session_id: str) -> SessionRecord:
    return SessionRecord(
        id=session_id, route="/v1/stream", client="key:a", model="tiny.en", language="en"
    )


def final(index: int, text: str) -> StoredUtterance:
    return StoredUtterance(index, 1.0 * index, 1.0 * index + 0.8, text, "en", 0.9)


@asynccontextmanager
async def replicas(tmp_path: Path, url: str, count: int) -> AsyncIterator[list[StoreHandle]]:
    """`count` stores on `url`, opened at the same moment (each one's start-up in its own
    thread), each with its own directory; in the order they opened."""
    stores: list[StoreHandle] = []
    all_open, done = trio.Event(), trio.Event()

    async def replica(number: int) -> None:
        async with open_store(tmp_path / f"replica-{number}", database_url=url) as store:
            stores.append(store)
            if len(stores) == count:
                all_open.set()
            await done.wait()

    async with trio.open_nursery() as nursery:
        for number in range(count):
            nursery.start_soon(replica, number)
        await all_open.wait()
        yield stores
        done.set()


def query(url: str, sql: str) -> list[tuple[object, ...]]:
    with psycopg.connect(url, autocommit=True) as db:
        return db.execute(sql).fetchall()


async def test_replicas_starting_at_once_on_an_empty_database_migrate_it_once(
    tmp_path: Path, postgres_server: PostgresServer
) -> None:
    url = postgres_server.create_database()
    async with replicas(tmp_path, url, 4) as stores:
        assert len(stores) == 4
        await stores[3].begin_session(record("s1"))
        assert [s.id for s in (await stores[0].list_sessions()).sessions] == ["s1"]
    rows = query(url, "SELECT version, name FROM schema_migrations ORDER BY version")
    assert rows == [(migration.version, migration.name) for migration in MIGRATIONS]


async def test_a_final_on_one_replica_is_read_on_another_which_leaves_its_session_open(
    tmp_path: Path, postgres_server: PostgresServer
) -> None:
    url = postgres_server.create_database()
    async with replicas(tmp_path, url, 2) as (one, two):
        await one.begin_session(record("live-on-one"))
        await one.add_utterance("live-on-one", final(0, "Hello from one."))
        page = await two.list_sessions(client="key:a")
        assert [(s.id, s.utterances, s.ended_at) for s in page.sessions] == [
            ("live-on-one", 1, None)
        ]
        assert (await two.get_session("live-on-one")).transcript == "Hello from one."
        # a third replica starts (a restart, a scale-out) while the session is live on one
        third = tmp_path / "replica-3" / "recordings"
        third.mkdir(parents=True)
        (third / "live-on-one.wav").write_bytes(WAV_HEADER_ONLY)  # its row exists: kept
        (third / "theirs.wav").write_bytes(WAV_HEADER_ONLY)  # no row: left alone, never removed
        async with open_store(tmp_path / "replica-3", database_url=url) as three:
            assert three.statistics().interrupted_at_start == 0
            assert (await three.get_session("live-on-one")).session.ended_at is None
        assert (third / "live-on-one.wav").exists()
        assert (third / "theirs.wav").read_bytes() == WAV_HEADER_ONLY
        await one.add_utterance("live-on-one", final(1, "Still here."))  # never ended under it
        await one.end_session("live-on-one", "stop", 2.0)
        detail = await two.get_session("live-on-one")
        assert (detail.transcript, detail.session.end_reason) == (
            "Hello from one. Still here.",
            "stop",
        )


async def test_a_lost_connection_fails_writes_alone_and_the_store_reconnects(
    tmp_path: Path, postgres_server: PostgresServer
) -> None:
    url = postgres_server.create_database()
    async with open_store(tmp_path, database_url=url) as store:
        await store.begin_session(record("s1"))
        await store.add_utterance("s1", final(0, "before"))
        # the server ends the store's connection between two writes: the next batch reconnects
        killed = query(
            url,
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
            " WHERE datname = current_database() AND application_name = 'chorus'",
        )
        assert killed == [(True,)]
        await store.add_utterance("s1", final(1, "after a kill"))
        # the server goes down: writes and reads fail with StoreError, the writer lives on
        postgres_server.stop()
        try:
            with pytest.raises(StoreError):
                await store.add_utterance("s1", final(2, "lost"))
            assert store.statistics().failing
            with pytest.raises(StoreError):
                await store.get_session("s1")
            with pytest.raises(StoreError):
                await store.add_utterance("s1", final(3, "lost too"))
        finally:
            postgres_server.start()
        await store.add_utterance("s1", final(4, "back"))  # on a new connection
        assert not store.statistics().failing
        detail = await store.get_session("s1")
    assert [u.text for u in detail.utterances] == ["before", "after a kill", "back"]
    stats = store.statistics()
    assert (stats.writes, stats.failed) == (6, 2)
