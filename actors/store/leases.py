"""Replica leases and resume tokens: the store's half of resuming a session (issue 23).

Everything here is blocking SQL that takes the connection first and runs in the store actor's
thread (`actors/store/actor.py` owns the connection, the set of sessions this replica holds, and
the periodic renewal and sweep). The SQL is portable (`?` placeholders, `RETURNING`,
`DOUBLE PRECISION` epoch seconds), so it runs unchanged on PostgreSQL.

- **Leases.** A session row names the replica that runs it and holds it until `lease_until`;
  the holder renews every lease it holds in one UPDATE. A row whose lease has lapsed while it
  is still open lost its replica (a crash) or its client (released and not resumed in time):
  the sweep ends it `interrupted` (`lapsed_sessions`).
- **Tokens.** Each connection gets a new random token; only its SHA-256 is stored, with the
  caller's identity. `claim` swaps a live token for the next one in one atomic UPDATE, so a
  token works once, for its own key, while the session is open and its lease runs. A session
  whose replica still runs it (`replica` set, lease fresh) is `Busy`: the resuming connection
  waits for that replica to store its last finals and let go (`release` clears `replica`).
"""

from __future__ import annotations

import hashlib
import sqlite3
from collections.abc import Collection

import attrs
import msgspec

from actors.store.schema import StoredUtterance, StoredWord

MIGRATION_SQL = """
ALTER TABLE sessions ADD COLUMN replica TEXT;
ALTER TABLE sessions ADD COLUMN lease_until DOUBLE PRECISION;
ALTER TABLE sessions ADD COLUMN resume_hash TEXT;
ALTER TABLE sessions ADD COLUMN resume_client TEXT;
ALTER TABLE utterances ADD COLUMN seq INTEGER;
CREATE UNIQUE INDEX IF NOT EXISTS sessions_by_resume_hash ON sessions (resume_hash);
CREATE INDEX IF NOT EXISTS sessions_open_by_lease ON sessions (ended_at, lease_until);
"""
"""The columns and indexes leases add, applied once (`migrate`); the `pg` branch's migration
list takes it over as one step."""

_words_decoder = msgspec.json.Decoder(tuple[StoredWord, ...])


def hash_token(token: str) -> str:
    """What the store keeps of a resume token: its SHA-256, hex."""
    return hashlib.sha256(token.encode()).hexdigest()


def migrate(db: sqlite3.Connection) -> None:
    """Apply `MIGRATION_SQL` unless it has been (idempotent; column check, portable)."""
    columns = {row[0] for row in db.execute("SELECT * FROM sessions LIMIT 0").description}
    if "lease_until" in columns:
        return
    for statement in filter(None, (part.strip() for part in MIGRATION_SQL.split(";"))):
        db.execute(statement)


@attrs.frozen
class Claimed:
    """A session a resume token was swapped for: its finals stored so far, with their `seq`."""

    session_id: str
    finals: tuple[tuple[int | None, StoredUtterance], ...]  # (seq, final), by index


@attrs.frozen
class Busy:
    """The token is good but the session's replica still runs it: try again shortly."""


def hold(db: sqlite3.Connection, session_ids: Collection[str], replica: str, until: float) -> None:
    """Renew this replica's leases on `session_ids` (those still open and still its own)."""
    if not session_ids:
        return
    marks = ", ".join("?" for _ in session_ids)
    db.execute(
        f"UPDATE sessions SET lease_until = ? WHERE id IN ({marks})"
        " AND ended_at IS NULL AND replica = ?",
        (until, *session_ids, replica),
    )


def take(db: sqlite3.Connection, session_id: str, replica: str, until: float | None) -> None:
    """A new session's row: held by `replica` until `until` (None: no lease, resume off)."""
    db.execute(
        "UPDATE sessions SET replica = ?, lease_until = ? WHERE id = ?",
        (replica, until, session_id),
    )


def bind_token(db: sqlite3.Connection, session_id: str, token_hash: str, client: str) -> None:
    """The token a new connection's `ready` carries, for `client`'s key only."""
    db.execute(
        "UPDATE sessions SET resume_hash = ?, resume_client = ? WHERE id = ?",
        (token_hash, client, session_id),
    )


def release(db: sqlite3.Connection, session_id: str, duration_s: float, until: float) -> None:
    """The client has gone and may come back: no replica runs the session now; it stays open
    until `until` (then the sweep ends it), with the duration it has so far."""
    db.execute(
        "UPDATE sessions SET replica = NULL, lease_until = ?, duration_s = ?"
        " WHERE id = ? AND ended_at IS NULL",
        (until, duration_s, session_id),
    )


def claim(
    db: sqlite3.Connection,
    token_hash: str,
    client: str,
    new_hash: str,
    replica: str,
    *,
    now: float,
    until: float,
    stale: float,
) -> Claimed | Busy | None:
    """Swap a live token for `new_hash` and hold the session for `replica` until `until`.

    The token must be `client`'s, its session open and its lease running (`>= now`); a session
    a replica still holds is taken only once that lease is stale (`< stale`: its holder has
    missed its renewals). None for every other case alike: unknown, used, expired, ended, or
    another key's token."""
    row = db.execute(
        "UPDATE sessions SET resume_hash = ?, replica = ?, lease_until = ?"
        " WHERE resume_hash = ? AND resume_client = ? AND ended_at IS NULL"
        " AND lease_until >= ? AND (replica IS NULL OR lease_until < ?) RETURNING id",
        (new_hash, replica, until, token_hash, client, now, stale),
    ).fetchone()
    if row is None:
        waiting = db.execute(
            "SELECT 1 FROM sessions WHERE resume_hash = ? AND resume_client = ?"
            " AND ended_at IS NULL AND lease_until >= ?",
            (token_hash, client, now),
        ).fetchone()
        return None if waiting is None else Busy()
    session_id = str(row[0])
    return Claimed(session_id, stored_finals(db, session_id))


def mark_seq(db: sqlite3.Connection, session_id: str, index: int, seq: int) -> None:
    """The native `seq` the final `index` was sent with."""
    db.execute(
        "UPDATE utterances SET seq = ? WHERE session_id = ? AND idx = ?", (seq, session_id, index)
    )


def stored_finals(
    db: sqlite3.Connection, session_id: str
) -> tuple[tuple[int | None, StoredUtterance], ...]:
    rows = db.execute(
        "SELECT seq, idx, start, end, text, language, confidence, words FROM utterances"
        " WHERE session_id = ? ORDER BY idx",
        (session_id,),
    ).fetchall()
    return tuple(
        (
            seq,
            StoredUtterance(
                index=index,
                start=start,
                end=end,
                text=text,
                language=language,
                confidence=confidence,
                words=None if words is None else _words_decoder.decode(words),
            ),
        )
        for seq, index, start, end, text, language, confidence, words in rows
    )


def lapsed_sessions(
    db: sqlite3.Connection, now: float, *, unleased: bool = False
) -> list[tuple[str, float, int | None, float | None]]:
    """Open sessions whose lease lapsed before `now` (and, with `unleased`, those that never
    had one: rows of a server that ran without leases, ended only at its start-up): (id,
    started_at, sample_rate, duration so far: the released one, else the last final's end)."""
    unleased_rows = " OR s.lease_until IS NULL" if unleased else ""
    return db.execute(
        "SELECT s.id, s.started_at, s.sample_rate, COALESCE(s.duration_s,"
        " (SELECT MAX(u.end) FROM utterances AS u WHERE u.session_id = s.id))"
        " FROM sessions AS s WHERE s.ended_at IS NULL"
        f" AND (s.lease_until < ?{unleased_rows})",
        (now,),
    ).fetchall()
