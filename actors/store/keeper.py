"""`LeaseKeeper`: the sessions this replica holds, and the store calls that resume one.

One per `StoreHandle` (`handle.leases`), on the trio thread; its writes go through the
handle's write queue like every other (`actors/store/actor.py`), and the SQL is in
`actors/store/leases.py`. It keeps the set of sessions whose leases this replica renews: a
new session is held (`StoreHandle.begin_session`), an ended one is let go
(`StoreHandle.end_session`), a released one is let go without ending (`release`: its client
may resume it), and a claimed one is held again (`claim`). `keep`, which the store's periodic
nursery runs every `lease_s / 3`, renews them all in one UPDATE, then ends `interrupted` the
open sessions whose lease has lapsed (`interrupt`, shared with start-up recovery).
"""

from __future__ import annotations

import logging
import os
import secrets
import socket
import sqlite3
import time
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from actors.store import leases, schema
from actors.store.leases import Busy, Claimed
from actors.store.recording import SAMPLE_WIDTH, repair_wav
from actors.store.schema import SessionRecord

log = logging.getLogger("chorus.store")

Write = Callable[[Callable[[sqlite3.Connection], Any]], Awaitable[Any]]
OpenRow = tuple[str, float, int | None, float | None]


class LeaseKeeper:
    """The sessions this replica holds and their leases; `lease_s` 0: no leases, no resume."""

    def __init__(self, write: Write, recordings: Path, lease_s: float) -> None:
        self._write = write
        self._recordings = recordings
        self.lease_s = lease_s
        self.replica = f"{socket.gethostname()}:{os.getpid()}:{secrets.token_hex(4)}"
        self._held: set[str] = set()
        self.swept = 0

    @property
    def enabled(self) -> bool:
        return self.lease_s > 0

    @property
    def held(self) -> int:
        return len(self._held)

    def take(self, record: SessionRecord) -> Callable[[sqlite3.Connection], None]:
        """What `begin_session` runs after the insert: this replica holds the new session."""
        until = time.time() + self.lease_s if self.enabled else None
        if until is not None and record.ended_at is None:
            self._held.add(record.id)
        replica = self.replica
        return lambda db: leases.take(db, record.id, replica, until)

    def let_go(self, session_id: str) -> None:
        self._held.discard(session_id)

    async def bind(self, session_id: str, token_hash: str, client: str) -> None:
        """The resume token of a new session's first connection (its SHA-256), `client`'s."""
        await self._write(lambda db: leases.bind_token(db, session_id, token_hash, client))

    async def claim(self, token_hash: str, client: str, new_hash: str) -> Claimed | Busy | None:
        """Swap a live resume token for the next one and hold its session here
        (`leases.claim`); None refuses alike whatever was wrong."""
        now, replica = time.time(), self.replica
        claimed: Claimed | Busy | None = await self._write(
            lambda db: leases.claim(
                db,
                token_hash,
                client,
                new_hash,
                replica,
                now=now,
                until=now + self.lease_s,
                stale=now + self.lease_s / 3,
            )
        )
        if isinstance(claimed, Claimed):
            self._held.add(claimed.session_id)
        return claimed

    async def release(self, session_id: str, duration_s: float) -> None:
        """Let the session go without ending it: its client may resume it, here or on another
        replica, for `lease_s`; then the sweep ends it."""
        self.let_go(session_id)
        until = time.time() + self.lease_s
        await self._write(lambda db: leases.release(db, session_id, duration_s, until))

    async def keep(self) -> int:
        """Renew the leases held here, then end the open sessions whose lease has lapsed;
        returns how many were ended."""
        now = time.time()
        held, replica, until = list(self._held), self.replica, now + self.lease_s
        await self._write(lambda db: leases.hold(db, held, replica, until))
        recordings = self._recordings
        swept: int = await self._write(
            lambda db: interrupt(db, recordings, leases.lapsed_sessions(db, now))
        )
        self.swept += swept
        if swept:
            log.warning("ended %d open sessions whose lease lapsed as interrupted", swept)
        return swept


def interrupt(
    db: sqlite3.Connection,
    recordings: Path,
    interrupted: list[OpenRow],
) -> int:
    """End each (id, started_at, sample_rate, duration so far) `interrupted`, its duration and
    end from its WAV file when it has one here (the header repaired)."""
    for session_id, started, sample_rate, last_end in interrupted:
        duration = last_end or 0.0
        ended = started + duration
        path = recordings / f"{session_id}.wav"
        if sample_rate is not None and path.exists():
            audio_bytes = repair_wav(path)
            if audio_bytes is not None:
                duration = max(duration, audio_bytes / (SAMPLE_WIDTH * sample_rate))
                ended = max(started + duration, path.stat().st_mtime)
        ended_at = datetime.fromtimestamp(ended, UTC)
        schema.finish_session(db, session_id, "interrupted", duration, ended_at)
    return len(interrupted)


def recover(db: sqlite3.Connection, recordings: Path, lease_s: float) -> int:
    """Start-up: remove WAV files without a row, and end the open rows `interrupted`: without
    leases every one (a crash's), with them those whose lease lapsed or that had none."""
    now = time.time() if lease_s > 0 else float("inf")
    interrupted = leases.lapsed_sessions(db, now, unleased=True)
    known = schema.session_ids(db)
    for path in recordings.glob("*.wav"):
        if path.stem not in known:
            path.unlink(missing_ok=True)
    interrupt(db, recordings, interrupted)
    if interrupted:
        log.warning("marked %d sessions left open by a crash as interrupted", len(interrupted))
    return len(interrupted)
