"""The store's writer: batches of writes, each batch one transaction (owned by the store actor,
`actors/store/actor.py`).

`run_writes` runs in the store's nursery for as long as the store is open. It takes everything
waiting in the write channel (up to `MAX_BATCH`) and commits it in one transaction in the
store's thread (`trio.to_thread.run_sync` with the store's `CapacityLimiter(1)`), each write in
its own savepoint, so one bad write fails alone. A commit the database refuses (any error the
driver raises) fails its writes with `StoreError`, never the writer. When the writer stops
(cancelled or crashed), every write still waiting gets `StoreClosed`.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

import attrs
import trio

from actors.reply import Reply
from actors.store.database import Database
from actors.store.schema import SessionLive
from actors.store.sql import DRIVER_ERRORS, Connection

__all__ = ["Counters", "StoreClosed", "StoreError", "Write", "run_writes"]

log = logging.getLogger("chorus.store")
MAX_BATCH = 128
# what fails one write alone (its savepoint is rolled back): the database's refusal, or the
# store's own (`SessionNotFound`, `AlreadyStored`, `SessionLive`, a bad value)
WRITE_ERRORS: tuple[type[Exception], ...] = (*DRIVER_ERRORS, LookupError, SessionLive, ValueError)


class StoreClosed(Exception):
    """The store is shut down (or its writer died); nothing more is written."""


class StoreError(Exception):
    """A transaction could not be committed, or a read answered: disk full, I/O error, the
    PostgreSQL server out of reach."""


@attrs.frozen(eq=False)
class Write:
    """One write: what it does to the connection, and where its outcome goes."""

    apply: Callable[[Connection], Any]
    reply: Reply[Any] = attrs.field(factory=Reply)


Outcome = tuple[Any, BaseException | None]
"""A write's result, or the error it failed with (set in the store's thread, answered on
the trio thread)."""


@attrs.define
class Counters:
    """The store's figures (`StoreStatistics`): the writer's, start-up's and the purge's."""

    writes: int = 0
    batches: int = 0
    largest_batch: int = 0
    failed: int = 0
    interrupted_at_start: int = 0
    purged: int = 0
    failing: bool = False


async def run_writes(
    database: Database,
    jobs: trio.MemoryReceiveChannel[Write],
    limiter: trio.CapacityLimiter,
    counters: Counters,
) -> None:
    batch: list[Write] = []
    with jobs:
        try:
            async for first in jobs:
                batch = [first]
                while len(batch) < MAX_BATCH:
                    try:
                        batch.append(jobs.receive_nowait())
                    except (trio.WouldBlock, trio.EndOfChannel):
                        break
                outcomes = await trio.to_thread.run_sync(_commit, database, batch, limiter=limiter)
                errors = [error for _, error in outcomes if error is not None]
                counters.batches += 1
                counters.writes += len(batch)
                counters.largest_batch = max(counters.largest_batch, len(batch))
                counters.failed += len(errors)
                counters.failing = any(isinstance(error, StoreError) for error in errors)
                for job, (result, error) in zip(batch, outcomes, strict=True):
                    if error is None:
                        job.reply.set(result)
                    else:
                        job.reply.fail(error)
        finally:  # cancelled or crashed: nobody may wait forever on a write that will not come
            while True:
                try:
                    batch.append(jobs.receive_nowait())
                except (trio.WouldBlock, trio.EndOfChannel):
                    break
            for job in batch:
                if not job.reply.done:
                    job.reply.fail(StoreClosed("the store writer stopped"))


def _commit(database: Database, batch: list[Write]) -> list[Outcome]:
    """One transaction for the batch, one savepoint per write (runs in the store's thread)."""
    outcomes: list[Outcome] = []
    try:
        database.begin()  # PostgreSQL: on a new connection if the old one was lost
        db = database.connection
        for job in batch:
            db.execute("SAVEPOINT write")
            try:
                outcomes.append((job.apply(db), None))
            except WRITE_ERRORS as error:
                db.execute("ROLLBACK TO write")
                # the database's error rather than the write's: callers see a `StoreError`
                driver = isinstance(error, DRIVER_ERRORS)
                outcomes.append((None, StoreError(f"write failed: {error}") if driver else error))
            db.execute("RELEASE write")
        database.commit()
    except DRIVER_ERRORS as error:
        database.rollback()
        log.error("store commit failed: %s", error)
        return [(None, StoreError(f"commit failed: {error}")) for _ in batch]
    return outcomes
