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
  header is fixed from the file's length, `repair_wav`) or from its last final.
- PostgreSQL is shared by the replicas, and a session open there may be live on another one:
  nothing is marked. The recordings of open sessions found in this replica's directory get their
  headers fixed, except those still being written (their writer holds the file's lock: a session
  live on another replica, in a directory replicas share). Ending the rows of sessions whose
  replica died is the lease sweep's work (issue 23: a session's lease, renewed by the replica
  that serves it; a periodic sweep marks sessions whose lease expired `interrupted`), not
  start-up's.
"""

from __future__ import annotations

import logging
from datetime import UTC, datetime
from pathlib import Path

import attrs

from actors.store import schema
from actors.store.database import Database
from actors.store.recording import SAMPLE_WIDTH, repair_idle_wav, repair_wav

__all__ = ["Recovered", "recover"]

log = logging.getLogger("chorus.store")


@attrs.frozen
class Recovered:
    """What `recover()` did and found."""

    interrupted: int  # sessions marked `interrupted` (only ever on SQLite)
    ended: frozenset[str]  # ended sessions with a WAV file in the recordings' directory


def recover(database: Database, recordings: Path) -> Recovered:
    """Repair what a crash left (see the module docstring; blocking: the store's thread)."""
    database.begin()
    try:
        wavs = {path.stem: path for path in recordings.glob("*.wav")}
        rows = schema.sessions_among(database.connection, wavs)
        if database.shared:
            # the lease sweep ends these rows; here only their headers are fixed
            _repair_open_recordings([wavs[id_] for id_, still_open in rows.items() if still_open])
            interrupted = 0
        else:
            interrupted = _interrupt_open_sessions(database, recordings)
        database.commit()
    except BaseException:
        database.rollback()
        raise
    if unknown := len(wavs) - len(rows):
        log.info("%d recordings in %s have no session here: left alone", unknown, recordings)
    # on SQLite every session with a row has ended by now
    ended = {id_ for id_, still_open in rows.items() if not (still_open and database.shared)}
    return Recovered(interrupted, frozenset(ended))


def _repair_open_recordings(paths: list[Path]) -> None:
    """Fix the headers of these open sessions' recordings, except those still being written
    (another replica's live session, in a directory replicas share: its writer's lock)."""
    if live := sum(not repair_idle_wav(path) for path in paths):
        log.info("%d recordings of open sessions are being written elsewhere: left alone", live)


def _interrupt_open_sessions(database: Database, recordings: Path) -> int:
    db = database.connection
    interrupted = schema.open_sessions(db)
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
    if interrupted:
        log.warning("marked %d sessions left open by a crash as interrupted", len(interrupted))
    return len(interrupted)
