"""Start-up recovery: what a crash of this process left in the database and the recordings'
directory.

`recover()` runs once in the store actor's thread while `open_store` opens the store
(`actors/store/actor.py`), after the migrations and before any write, in one transaction of
its own. What it returns tells the recording store's own `recover()` (an object store uploads
what is left in its spool) which sessions have ended; that one runs later, in the store's
nursery (`actors/store/recordings.py`).

No WAV file is removed here, on either database: one whose session this database does not know
may be another replica's, in a directory that replicas share, and deleting a session deletes
its audio before its row, so a crash never leaves audio whose row is gone (docs/operations.md,
"Recordings on several replicas"); such files are counted in the log and left alone. The files
are listed before the rows are read: a row is committed before its WAV is created, so a WAV
listed first has its row in the read, if it has one at all.

Open sessions depend on who else writes to the database:
- SQLite (`Database.shared` false) is this process's alone, so every session still open was
  left so by its crash: it is marked `interrupted`, with its duration from its recording (whose
  header is fixed from the file's length) or from its last final. With leases (`lease_s` > 0)
  only those whose lease lapsed, or that never had one, are: one whose lease still runs may be
  resumed by its client (`leases.py`), and the lease sweep ends it if it is not.
- PostgreSQL is shared by the replicas, and a session open there may be live on another one:
  nothing is marked. The recordings of open sessions found in this replica's directory get their
  headers fixed, except those still being written (their writer holds the file's lock: a session
  live on another replica, in a directory replicas share). Ending the rows of sessions whose
  replica died is the lease sweep's work (`keeper.py`: every replica sweeps, ending the open
  sessions whose lease lapsed with `interrupt`, the same as here), not start-up's.
"""

from __future__ import annotations

import logging
import math
import time
from pathlib import Path

import attrs

from actors.store import leases
from actors.store.database import Database
from actors.store.leases import OpenRow
from actors.store.recording import SAMPLE_WIDTH, repair_idle_wav, repair_idle_wav_bytes
from actors.store.schema import sessions_among
from actors.store.sql import Connection

__all__ = ["Recovered", "interrupt", "recover"]

log = logging.getLogger("chorus.store")


@attrs.frozen
class Recovered:
    """What `recover()` did and found."""

    interrupted: int  # sessions marked `interrupted` (only ever on SQLite)
    ended: frozenset[str]  # ended sessions with a WAV file in the recordings' directory
    still_open: frozenset[str] = frozenset()  # open ones with one (kept once they end)


def recover(database: Database, recordings: Path, lease_s: float = 0.0) -> Recovered:
    """Repair what a crash left (see the module docstring; blocking: the store's thread)."""
    database.begin()
    try:
        wavs = {path.stem: path for path in recordings.glob("*.wav")}
        rows = sessions_among(database.connection, wavs)
        interrupted: frozenset[str] = frozenset()
        if database.shared:
            # the lease sweep ends these rows; here only their headers are fixed
            _repair_open_recordings([wavs[id_] for id_, still_open in rows.items() if still_open])
        else:
            interrupted = _interrupt_open_sessions(database.connection, recordings, lease_s)
        database.commit()
    except BaseException:
        database.rollback()
        raise
    if unknown := len(wavs) - len(rows):
        log.info("%d recordings in %s have no session here: left alone", unknown, recordings)
    ended = {id_ for id_, still_open in rows.items() if not still_open} | interrupted
    still_open = {id_ for id_, still_open in rows.items() if still_open} - interrupted
    return Recovered(len(interrupted), frozenset(ended), frozenset(still_open))


def _repair_open_recordings(paths: list[Path]) -> None:
    """Fix the headers of these open sessions' recordings, except those still being written
    (another replica's live session, in a directory replicas share: its writer's lock)."""
    if live := sum(not repair_idle_wav(path) for path in paths):
        log.info("%d recordings of open sessions are being written elsewhere: left alone", live)


def _interrupt_open_sessions(db: Connection, recordings: Path, lease_s: float) -> frozenset[str]:
    """SQLite's start-up: end the open sessions a crash left, all of them without leases."""
    now = time.time() if lease_s > 0 else math.inf
    ended = interrupt(db, recordings, leases.end_lapsed(db, now, unleased=True))
    if ended:
        log.warning("marked %d sessions left open by a crash as interrupted", len(ended))
    return ended


def interrupt(db: Connection, recordings: Path, ended: list[OpenRow]) -> frozenset[str]:
    """Sessions just ended `interrupted` (`leases.end_lapsed`): each one's duration and end
    from its recording when that is in `recordings` and idle (its header fixed under the
    file's lock, `repair_idle_wav_bytes`); a file still being written is left alone. Returns
    those ended whose recording, if any here, is idle (the recording store may keep them)."""
    idle: set[str] = set()
    for session_id, started, sample_rate, so_far in ended:
        path = recordings / f"{session_id}.wav"
        audio_bytes = repair_idle_wav_bytes(path) if path.exists() else None
        if audio_bytes is False:
            continue
        idle.add(session_id)
        if sample_rate is None or audio_bytes is None:
            continue
        duration = max(so_far, audio_bytes / (SAMPLE_WIDTH * sample_rate))
        end = max(started + duration, path.stat().st_mtime)
        leases.correct_end(db, session_id, duration, end)
    return frozenset(idle)
