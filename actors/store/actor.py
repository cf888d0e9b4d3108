"""The store actor: sessions, their finals and their recordings, in SQLite (WAL) or PostgreSQL
(`database_url`), and WAV files.

Ownership: `open_store()` opens one database connection (`actors/store/database.py`), applies the
schema's migrations (`migrations.py`), repairs what a crash left behind (`recovery.py`), and
runs a nursery that owns `run_writes` (`writer.py`; and `_purge_periodically` when a
retention is given), then yields a `StoreHandle`. The connection is used by one worker thread
at a time: every call that touches it goes through `trio.to_thread.run_sync` with the store's
`CapacityLimiter(1)` and is never abandoned on cancel.

Writes go through a bounded channel to `run_writes`, which takes everything waiting and commits
it in one transaction (one fsync for many finals; each write in its own savepoint, so one bad
write fails alone). `add_utterance()` returns once its transaction is committed, so a final
that the caller sends after it survives any crash. A cancelled caller does not undo its write.
Reads run directly in the thread, between write batches.

Leaving the `async with` cancels the periodic purge, closes the write queue, lets the writer
commit what is queued, and closes the database. If the writer dies, waiting callers get
`StoreClosed` and the error surfaces to whoever opened the store (the app lifespan).

A commit the database refuses (disk full, I/O error, a lost PostgreSQL connection; any error
the driver raises) fails its writes with `StoreError`, never the writer:
`statistics().failing` says so until a commit succeeds again, and callers decide what a lost
write means (a live session goes on unstored, `service/session/recorder.py`). A lost PostgreSQL
connection is replaced at the next batch or read (`database.py`). Recordings follow the
`RecordingPolicy` the store was opened with: `open_recording` refuses to start one below its
free-space floor (`LowDiskSpace`).

Recordings are written to the `RecordingStore`'s directory and kept where it says
(`actors/store/recordings.py`: that directory, which replicas may share, or an S3-compatible
object store; the routes read it through `recording_store`); `close_recording` keeps one,
and deleting a session deletes its audio first.
Start-up recovery (`recovery.py`): on SQLite, sessions that never ended (the process died) are
marked `interrupted`; on PostgreSQL, shared by replicas, open sessions are left to their own
replica. With leases (`lease_s` > 0), SQLite's start-up ends only the open sessions whose
lease lapsed (or that never had one); on both, the periodic `_keep_leases` renews this replica's
leases and ends lapsed sessions `interrupted` (`actors/store/keeper.py`), their recordings
kept as `close_recording` keeps one. On both, WAV headers are fixed and no WAV file is removed;
the recording store's `recover` then runs in the store's nursery (an object store uploads what
its spool kept).
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TypeVar

import attrs
import trio

from actors.reply import snapshot
from actors.store import leases, schema
from actors.store.database import Database, open_database
from actors.store.keeper import LeaseKeeper
from actors.store.migrations import migrate
from actors.store.recording import (
    DEFAULT_POLICY,
    RecordingPolicy,
    RecordingWriter,
    create_recording,
)
from actors.store.recordings import LocalRecordings, RecordingsConfig, RecordingStore
from actors.store.recovery import Recovered, recover
from actors.store.schema import (
    AlreadyStored,
    PagePosition,
    SessionDetail,
    SessionLive,
    SessionNotFound,
    SessionPage,
    SessionRecord,
    StoredUtterance,
    StoredWord,
)
from actors.store.sql import DRIVER_ERRORS, Connection
from actors.store.writer import Counters, StoreClosed, StoreError, Write, run_writes

__all__ = [
    "AlreadyStored",
    "PagePosition",
    "SessionDetail",
    "SessionLive",
    "SessionNotFound",
    "SessionPage",
    "SessionRecord",
    "StoreClosed",
    "StoreError",
    "StoreHandle",
    "StoreStatistics",
    "StoredUtterance",
    "StoredWord",
    "open_store",
]

log = logging.getLogger("chorus.store")
T = TypeVar("T")


@attrs.frozen
class StoreStatistics:
    writes: int
    batches: int
    largest_batch: int
    failed: int
    queue: int
    interrupted_at_start: int
    purged: int
    swept: int  # open sessions ended because their lease lapsed (since start)
    held: int  # sessions whose lease this replica renews now
    failing: bool  # the last commit failed (disk full, I/O error, database out of reach)


class StoreHandle:
    """What callers hold: async methods over the store actor."""

    def __init__(
        self,
        directory: Path,
        database: Database,
        jobs: trio.MemorySendChannel[Write],
        limiter: trio.CapacityLimiter,
        counters: Counters,
        recording_policy: RecordingPolicy = DEFAULT_POLICY,
        recording_store: RecordingStore | None = None,
        lease_s: float = 0.0,
    ) -> None:
        self.directory = directory
        self.recording_store = recording_store or LocalRecordings(directory / "recordings")
        self.recordings = self.recording_store.directory  # where recordings are written
        self.recording_policy = recording_policy
        self._database = database
        self._jobs = jobs
        self._limiter = limiter
        self._counters = counters
        self._closed = False
        self.leases = LeaseKeeper(self._write, self.recording_store, lease_s)

    async def _write(self, apply: Callable[[Connection], T]) -> T:
        job = Write(apply)
        try:
            await self._jobs.send(job)
        except (trio.ClosedResourceError, trio.BrokenResourceError):
            raise StoreClosed("the store is closed") from None
        return await job.reply.wait()  # type: ignore[no-any-return]

    async def _read(self, query: Callable[[Connection], T]) -> T:
        if self._closed:
            raise StoreClosed("the store is closed")
        try:
            return await trio.to_thread.run_sync(self._database.read, query, limiter=self._limiter)
        except DRIVER_ERRORS as error:
            raise StoreError(f"read failed: {error}") from error

    async def begin_session(self, record: SessionRecord, *, token_hash: str | None = None) -> None:
        """Insert the session's row, held by this replica (with leases on), and with
        `token_hash` its first connection's resume token, the record's client's: one
        transaction, so a stored session is resumable, or nothing is stored."""
        take = self.leases.take(record, token_hash)

        def begin(db: Connection) -> None:
            schema.insert_session(db, record)
            take(db)

        await self._write(begin)
        self.leases.taken(record)

    async def add_utterance(
        self, session_id: str, utterance: StoredUtterance, *, seq: int | None = None
    ) -> None:
        """Returns once the final is committed; `SessionNotFound`, `AlreadyStored`. `seq`: the
        native frame's, which a resumed connection replays it with."""

        def add(db: Connection) -> None:
            schema.insert_utterance(db, session_id, utterance)
            if seq is not None:
                leases.mark_seq(db, session_id, utterance.index, seq)

        await self._write(add)

    async def end_session(
        self,
        session_id: str,
        reason: str,
        duration_s: float,
        *,
        ended_at: datetime | None = None,
    ) -> None:
        """End the session; with leases, only while this replica holds it (`leases.finish`)."""
        when = ended_at or datetime.now(UTC)
        if self.leases.enabled:
            await self.leases.finish(session_id, reason, duration_s, when.timestamp())
            return
        self.leases.let_go(session_id)
        await self._write(
            lambda db: schema.finish_session(db, session_id, reason, duration_s, when)
        )

    def audio_path(self, session_id: str) -> Path:
        if not schema.SESSION_ID.match(session_id):
            raise SessionNotFound(session_id)
        return self.recordings / f"{session_id}.wav"

    async def open_recording(self, session_id: str, sample_rate: int) -> RecordingWriter:
        """Start the session's WAV file (16-bit mono PCM); close it before `end_session`.

        Raises `LowDiskSpace` below the policy's floor (nothing is marked or created), and the
        `OSError` of a file that cannot be created."""
        policy = self.recording_policy
        await self.recording_store.check()  # `RecordingsUnreachable`, an `OSError`
        await trio.to_thread.run_sync(policy.check_free_space, self.recordings)
        await self._write(lambda db: schema.mark_audio(db, session_id, sample_rate))
        path = self.audio_path(session_id)
        return await create_recording(path, sample_rate, policy=policy)

    async def close_recording(self, recording: RecordingWriter) -> None:
        """Close the WAV and keep it (an object store uploads it), before `end_session`: an
        ended session is readable on any replica. `OSError`: the file stays for recovery."""
        await recording.aclose()
        await self.recording_store.keep(recording.path)

    async def list_sessions(
        self, *, client: str | None = None, limit: int = 50, after: PagePosition | None = None
    ) -> SessionPage:
        """Newest first; `after` is a page's `next`. Raises ValueError for a bad limit."""
        if limit < 1:
            raise ValueError("limit must be at least 1")
        return await self._read(lambda db: schema.select_page(db, client, limit, after))

    async def get_session(self, session_id: str) -> SessionDetail:
        """Metadata and finals; raises `SessionNotFound`."""
        return await self._read(lambda db: schema.select_session(db, session_id))

    async def transcript(self, session_id: str) -> str:
        """The full transcript, built from the stored finals."""
        return (await self.get_session(session_id)).transcript

    async def delete_session(self, session_id: str) -> None:
        """Delete its recording, then the row and its finals; `SessionNotFound`,
        `SessionLive`, `RecordingsUnreachable` (the row stays)."""
        record = (await self.get_session(session_id)).session
        if record.ended_at is None:
            raise SessionLive(session_id)
        if record.has_audio:  # audio first: a crash before the row goes leaves no orphan
            await self.recording_store.delete([session_id])
        await self._write(lambda db: schema.delete_session_row(db, session_id))

    async def purge_older_than(self, days: float) -> int:
        """Delete ended sessions that started more than `days` ago (their recordings
        first); returns how many."""
        cutoff = datetime.now(UTC) - timedelta(days=days)
        ended = await self._read(lambda db: schema.ended_before(db, cutoff))
        if ended:
            await self.recording_store.delete(ended)
        deleted = await self._write(lambda db: schema.delete_rows(db, ended))
        self._counters.purged += len(deleted)
        if deleted:
            log.info("retention: deleted %d sessions older than %s days", len(deleted), days)
        return len(deleted)

    def statistics(self) -> StoreStatistics:
        return snapshot(
            StoreStatistics,
            self._counters,
            queue=self._jobs.statistics().current_buffer_used,
            held=self.leases.held,
            swept=self.leases.swept,
        )


@asynccontextmanager
async def open_store(
    directory: Path,
    *,
    retention_days: float | None = None,
    purge_every_s: float = 3600.0,
    queue_size: int = 256,
    recording: RecordingPolicy = DEFAULT_POLICY,
    recordings: RecordingsConfig | None = None,
    database_url: str | None = None,
    lease_s: float = 0.0,
) -> AsyncIterator[StoreHandle]:
    """Open (or create) the store: the database in `directory` (SQLite) or at `database_url`
    (`postgresql://…`), the recordings where `recordings` says (by default
    `directory/recordings`); see the module docstring. `lease_s` > 0 turns leases on
    (`CHORUS_RESUME_S`)."""
    limiter = trio.CapacityLimiter(1)
    counters = Counters()
    kept = await _recording_store(recordings or RecordingsConfig(directory / "recordings"))
    try:
        database, recovered = await trio.to_thread.run_sync(
            _open, directory, kept.directory, database_url, counters, lease_s, limiter=limiter
        )
    except BaseException:
        await kept.aclose()
        raise
    jobs_send, jobs_recv = trio.open_memory_channel[Write](queue_size)
    handle = StoreHandle(
        directory, database, jobs_send, limiter, counters, recording, kept, lease_s
    )
    handle.leases.spooled(recovered.still_open)
    try:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(run_writes, database, jobs_recv, limiter, counters)
            with jobs_send:
                if retention_days is not None:
                    await _purge(handle, retention_days)  # an unreachable bucket is logged
                async with trio.open_nursery() as periodic:
                    periodic.start_soon(kept.recover, recovered.ended)
                    if retention_days is not None:
                        periodic.start_soon(
                            _purge_periodically, handle, retention_days, purge_every_s
                        )
                    if lease_s > 0:
                        periodic.start_soon(_keep_leases, handle.leases)
                        periodic.start_soon(handle.leases.keep_recordings)
                    yield handle
                    periodic.cancel_scope.cancel()
    finally:
        handle._closed = True
        with trio.CancelScope(shield=True):
            await trio.to_thread.run_sync(database.close, limiter=limiter)
            await kept.aclose()


async def _recording_store(config: RecordingsConfig) -> RecordingStore:
    if not config.url:
        return LocalRecordings(config.directory)
    from actors.store.s3 import open_s3_recordings  # boto3 loads only for an object store

    return await open_s3_recordings(config)


def _open(
    directory: Path,
    recordings: Path,
    database_url: str | None,
    counters: Counters,
    lease_s: float,
) -> tuple[Database, Recovered]:
    """The database, migrated and recovered, and what recovery found in `recordings` (the
    ended sessions' files are what an object store's `recover` uploads)."""
    for folder in (directory, recordings):
        folder.mkdir(parents=True, exist_ok=True)
    database = open_database(directory, database_url)
    try:
        migrate(database)
        recovered = recover(database, recordings, lease_s)
    except BaseException:
        database.close()
        raise
    counters.interrupted_at_start = recovered.interrupted
    log.info("store: %s", database.name)
    return database, recovered


async def _keep_leases(keeper: LeaseKeeper) -> None:
    while True:
        await trio.sleep(keeper.renew_every_s)
        try:
            await keeper.keep()
        except StoreError as error:
            log.error("lease renewal failed: %s", error)


async def _purge_periodically(handle: StoreHandle, days: float, every_s: float) -> None:
    while True:
        await trio.sleep(every_s)
        await _purge(handle, days)


async def _purge(handle: StoreHandle, days: float) -> None:
    try:
        await handle.purge_older_than(days)
    except (StoreError, OSError) as error:
        log.error("retention purge failed: %s", error)
