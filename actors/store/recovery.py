"""Start-up recovery: what a crash of this process left behind, and only that.

`recover()` runs once in the store actor's thread while `open_store` opens the store
(`actors/store/actor.py`), after the migrations and before any write, in one transaction of
its own.

Recordings are this process's own files (the local recordings directory), on either database:
a WAV whose session row is gone (a delete or a purge that died before its unlink) is removed;
a WAV whose row exists is never removed, whoever wrote the row. The files are listed before the
rows are read: a row is committed before its WAV is created, so a WAV listed first has its row
in the read, if it has one at all.

Open sessions depend on who else writes to the database:
- SQLite (`Database.shared` false) is this process's alone, so every session still open was
  left so by its crash: it is marked `interrupted`, with its duration from its recording (whose
  header is fixed from the file's length) or from its last final.
- PostgreSQL is shared by the replicas, and a session open there may be live on another one:
  nothing is marked. The recordings of this process's open sessions get their headers fixed,
  since nothing here writes to them any more. Ending the rows of sessions whose replica died is
  the lease sweep's work (issue 23: a session's lease, renewed by the replica that serves it;
  a periodic sweep marks sessions whose lease expired `interrupted`), not start-up's.
"""

from __future__ import annotations

import logging
from datetime import UTC, datetime
from pathlib import Path

from actors.store import schema
from actors.store.database import Database
from actors.store.recording import SAMPLE_WIDTH, repair_wav

__all__ = ["recover"]

log = logging.getLogger("chorus.store")


def recover(database: Database, recordings: Path) -> int:
    """Repair what a crash left (see the module docstring); returns how many sessions were
    marked `interrupted` (blocking: the store's thread)."""
    database.begin()
    try:
        wavs = {path.stem: path for path in recordings.glob("*.wav")}
        rows = schema.sessions_among(database.connection, wavs)
        for session_id, path in wavs.items():
            if session_id not in rows:
                path.unlink(missing_ok=True)
        if database.shared:
            # the lease sweep ends these rows; here only their headers are fixed
            for session_id, still_open in rows.items():
                if still_open:
                    repair_wav(wavs[session_id])
            interrupted = 0
        else:
            interrupted = _interrupt_open_sessions(database, recordings)
        database.commit()
    except BaseException:
        database.rollback()
        raise
    return interrupted


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
