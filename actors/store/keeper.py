"""`LeaseKeeper`: the sessions this replica holds, and the store calls that resume one.

One per `StoreHandle` (`handle.leases`), on the trio thread; its writes go through the
handle's write queue like every other (`actors/store/actor.py`), and the SQL is in
`actors/store/leases.py`. It keeps the set of sessions whose leases this replica renews: a
new session is held once its row has committed (`StoreHandle.begin_session`: `take`, then
`taken`), an ended one is let go (`StoreHandle.end_session`, `finish`), a released one is let
go without ending (`release`: its client may resume it), and a claimed one is held again
(`claim`); a session another replica took over (this one missed its renewals) is neither
released nor ended here, and stops being renewed once `keep` finds it gone. `keep`, which the
store's periodic nursery runs every `renew_every_s` on every replica (`lease_s / 3`, at most
`RENEW_EVERY_S`), renews them all in one UPDATE, then ends `interrupted` the open sessions
whose lease has lapsed, whichever replica ran them (`leases.end_lapsed`, one conditional
UPDATE: replicas sweeping at once end each one once; `recovery.interrupt`, shared with
start-up, takes their durations from idle recordings here; one whose recording a writer still
locks is tried again at each later sweep until it is idle).

Recordings follow the recording store's rules (`actors/store/recordings.py`): none is deleted,
one still being written is left alone, and the recording store `recover`s (an object store
uploads from its spool, in `keep_recordings`, a task of its own: never in the renewal loop)
those of the sessions this sweep ended, and those of sessions released
here (`spooled`: their client may come back to this replica, so the file stays in the spool)
once something has ended them: this sweep, another replica's, or a replica that resumed them.
"""

from __future__ import annotations

import logging
import os
import secrets
import socket
import time
from collections.abc import Awaitable, Callable, Collection
from typing import Any, NoReturn

import trio

from actors.store import leases
from actors.store.leases import Busy, Claimed, OpenRow
from actors.store.recordings import RecordingStore
from actors.store.recovery import interrupt
from actors.store.schema import SessionRecord, sessions_among
from actors.store.sql import Connection

log = logging.getLogger("chorus.store")

RENEW_EVERY_S = 2.0
"""How often a replica renews the leases it holds, at most: a claim takes a session from its
holder once the holder has missed `MISSED_RENEWALS` renewals, so a replica killed mid-session
lets its sessions resume elsewhere after about 4 s, within the claim's wait (`service/session/
resume.py`), however long `lease_s` lets a lost client come back."""
MISSED_RENEWALS = 2

Write = Callable[[Callable[[Connection], Any]], Awaitable[Any]]


class LeaseKeeper:
    """The sessions this replica holds and their leases; `lease_s` 0: no leases, no resume."""

    def __init__(self, write: Write, recordings: RecordingStore, lease_s: float) -> None:
        self._write = write
        self._recordings = recordings
        self.lease_s = lease_s
        self.renew_every_s = min(lease_s / 3, RENEW_EVERY_S)
        self.replica = f"{socket.gethostname()}:{os.getpid()}:{secrets.token_hex(4)}"
        self._held: set[str] = set()
        self._spooled: set[str] = set()  # released here, recording kept here until ended
        self._locked: dict[str, OpenRow] = {}  # swept, their recordings locked: tried again
        self._recover: set[str] = set()  # ended: their recordings wait for `keep_recordings`
        self._recover_wanted = trio.Event()
        self.swept = 0

    @property
    def enabled(self) -> bool:
        return self.lease_s > 0

    @property
    def held(self) -> int:
        return len(self._held)

    def take(
        self, record: SessionRecord, token_hash: str | None = None
    ) -> Callable[[Connection], None]:
        """What `begin_session` runs after the insert, in its transaction: this replica holds
        the new session, and its first connection's resume token (hashed) is the client's.
        Held (renewed) only once that has committed (`taken`)."""
        until = time.time() + self.lease_s if self.enabled else None
        replica = self.replica

        def take(db: Connection) -> None:
            leases.take(db, record.id, replica, until)
            if token_hash is not None:
                leases.bind_token(db, record.id, token_hash, record.client)

        return take

    def taken(self, record: SessionRecord) -> None:
        """The new session's row has committed: renew its lease from now on."""
        if self.enabled and record.ended_at is None:
            self._held.add(record.id)

    def let_go(self, session_id: str) -> None:
        self._held.discard(session_id)

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
                stale=now + self.lease_s - MISSED_RENEWALS * self.renew_every_s,
            )
        )
        if isinstance(claimed, Claimed):
            self._held.add(claimed.session_id)
        return claimed

    async def release(self, session_id: str, duration_s: float, *, recorded: bool = False) -> None:
        """Let the session go without ending it: its client may resume it, here or on another
        replica, for `lease_s`; then the sweep ends it. `recorded`: its recording (closed, not
        kept yet) stays here until the session ends, wherever it goes on (a session resumed here
        keeps it at its end as any other)."""
        self.let_go(session_id)
        if recorded:
            self._spooled.add(session_id)
        until, replica = time.time() + self.lease_s, self.replica
        if not await self._write(
            lambda db: leases.release(db, session_id, replica, duration_s, until)
        ):
            log.warning("session %s: not released: another replica has taken it", session_id)

    async def finish(
        self, session_id: str, reason: str, duration_s: float, ended_at: float
    ) -> None:
        """End a session this replica holds (`leases.finish`); one another replica has taken
        over is left to it (logged). `SessionNotFound`."""
        self.let_go(session_id)
        replica = self.replica
        if not await self._write(
            lambda db: leases.finish(db, session_id, replica, reason, duration_s, ended_at)
        ):
            log.warning("session %s: not ended (%s): another replica has taken it", session_id,
                        reason)  # fmt: skip

    def spooled(self, session_ids: Collection[str]) -> None:
        """Open sessions whose recordings start-up found here: kept once they end."""
        self._spooled.update(session_ids)

    async def keep(self) -> int:
        """Renew the leases held here, then end the open sessions whose lease has lapsed, and
        keep the recordings of those that ended (see the module docstring); returns how many
        this sweep ended."""
        now = time.time()
        held, replica, until = list(self._held), self.replica, now + self.lease_s
        renewed: frozenset[str] = frozenset()
        if held:  # an idle replica renews nothing: no transaction
            renewed = await self._write(lambda db: leases.hold(db, held, replica, until))
        if lost := set(held) - renewed:
            self._held -= lost
            log.warning("no longer holds %d sessions (ended, or taken over by another replica):"
                        " %s", len(lost), ", ".join(sorted(lost)))  # fmt: skip
        swept, repaired = await self._sweep(now)
        ended: set[str] = set()
        if spooled := list(self._spooled):  # most sweeps have none: no transaction for them
            rows: dict[str, bool] = await self._write(lambda db: sessions_among(db, spooled))
            ended = {id_ for id_ in spooled if not rows.get(id_, False)}
            self._spooled -= ended
        if swept or repaired or ended:
            self._recover |= swept | repaired | ended
            self._recover_wanted.set()
        return len(swept)

    async def _sweep(self, now: float) -> tuple[frozenset[str], frozenset[str]]:
        """End the lapsed sessions `interrupted` (`recovery.interrupt`), and try again those an
        earlier sweep ended whose recording was still locked (a writer elsewhere, or a lock an
        NFS server has yet to let go): the swept ones whose recording is idle, and the earlier
        ones whose recording is idle now (its header fixed, the session's end from it)."""
        directory, retry = self._recordings.directory, list(self._locked.values())

        def sweep(db: Connection) -> tuple[list[OpenRow], frozenset[str]]:
            lapsed = leases.end_lapsed(db, now)
            return lapsed, interrupt(db, directory, [*lapsed, *retry])

        lapsed, idle = await self._write(sweep)
        self._locked = {row[0]: row for row in (*lapsed, *retry) if row[0] not in idle}
        swept = idle & {row[0] for row in lapsed}
        repaired = idle - swept
        self.swept += len(swept)
        if swept:
            log.warning("ended %d open sessions whose lease lapsed as interrupted", len(swept))
        if repaired:
            log.info("repaired %d recordings a writer held at an earlier sweep", len(repaired))
        return swept, repaired

    async def keep_recordings(self) -> NoReturn:
        """Keep (an object store: upload) the recordings of the sessions `keep` found ended,
        one batch after another, never in the renewal loop: an object store out of reach
        (each upload waiting out its timeouts) must not make this replica miss its renewals.
        Run by the store's periodic nursery; what waits is a set of session ids, at most the
        sessions this replica's sweeps have ended since the last batch."""
        while True:
            await self._recover_wanted.wait()
            self._recover_wanted = trio.Event()
            batch, self._recover = frozenset(self._recover), set()
            await self._recordings.recover(batch)  # logs what it cannot keep
