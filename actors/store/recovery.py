"""Start-up recovery: what a crash left in the database and the recordings' directory.

Run by `actors.store.actor._open` in the store's thread, before anything else uses the
database: blocking calls on its connection, inside the transaction it opened for them.

Sessions that never ended (the process died) are marked `interrupted`, with their duration
from the recording or their last final, and their WAV headers are fixed from the files'
lengths (`repair_wav`). No WAV file is removed here: one whose session this database does not
know may be another replica's, in a directory that replicas share, and deleting a session
deletes its audio before its row, so a crash never leaves audio whose row is gone
(docs/operations.md, "Recordings on several replicas").
"""

from __future__ import annotations

import logging
import sqlite3
from datetime import UTC, datetime
from pathlib import Path

from actors.store import schema
from actors.store.recording import SAMPLE_WIDTH, repair_wav

log = logging.getLogger("chorus.store")


def mark_interrupted(db: sqlite3.Connection, recordings: Path) -> int:
    """End the sessions a crash left open as `interrupted`; returns how many."""
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


def ended_recordings(db: sqlite3.Connection, recordings: Path) -> set[str]:
    """The ended sessions of this database that have a WAV file in `recordings` (what an
    object store's `recover` uploads); the files of sessions it does not know are counted in
    the log and left alone."""
    files = {path.stem for path in recordings.glob("*.wav")}
    known = files & schema.session_ids(db)
    if unknown := len(files - known):
        log.info("%d recordings in %s have no session here: left alone", unknown, recordings)
    return known - {session_id for session_id, *_ in schema.open_sessions(db)}
