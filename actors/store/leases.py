"""Replica leases and resume tokens: the store's half of resuming a session (issue 23).

Everything here is blocking SQL that takes the connection first and runs in the store actor's
thread (`actors/store/actor.py` owns the connection; `keeper.py` the set of sessions this
replica holds, and the periodic renewal and sweep). The SQL is written once for SQLite and
PostgreSQL (`actors/store/sql.py`: `?` placeholders, `RETURNING`, `"end"` quoted); the columns
and indexes are migration 2 (`actors/store/migrations.py`).

- **Leases.** A session row names the replica that runs it and holds it until `lease_until`;
  the holder renews every lease it holds in one UPDATE. A row whose lease has lapsed while it
  is still open lost its replica (a crash) or its client (released and not resumed in time):
  the sweep ends it `interrupted` (`end_lapsed`), in one conditional UPDATE, so replicas that
  sweep at once end each session once.
- **Tokens.** Each connection gets a new random token; only its SHA-256 is stored, with the
  caller's identity. `claim` swaps a live token for the next one in one atomic UPDATE, for its
  own key, while the session is open and its lease runs. The token claimed with stays good
  (`resume_prev_hash`, migration 4) until the new connection stores a final (`mark_seen`): a
  client whose link dropped before it read the `ready` with the next token resumes with the
  one it has; once a final is stored, the old token is dead. A session
  whose replica still runs it (`replica` set, lease fresh) is `Busy`: the resuming connection
  waits for that replica to store its last finals and let go (`release` clears `replica`).
- **One owner.** A replica releases (`release`) or ends (`finish`) a session only while it
  holds it (`replica` is its own), and learns from `hold` which leases it still has: one that
  missed its renewals and lost a session to a claim leaves it to the replica that took it.
"""

from __future__ import annotations

import hashlib
from collections.abc import Collection

import attrs

from actors.store.schema import (
    UTTERANCE_COLUMNS,
    SessionNotFound,
    StoredUtterance,
    utterance_of,
)
from actors.store.sql import Connection


def hash_token(token: str) -> str:
    """What the store keeps of a resume token: its SHA-256, hex."""
    return hashlib.sha256(token.encode()).hexdigest()


@attrs.frozen
class Claimed:
    """A session a resume token was swapped for: its finals stored so far, with their `seq`."""

    session_id: str
    finals: tuple[tuple[int | None, StoredUtterance], ...]  # (seq, final), by index


@attrs.frozen
class Busy:
    """The token is good but the session's replica still runs it: try again shortly."""


def hold(
    db: Connection, session_ids: Collection[str], replica: str, until: float
) -> frozenset[str]:
    """Renew this replica's leases on `session_ids` (those still open and still its own);
    returns those renewed: the others have ended, or another replica has taken them."""
    if not session_ids:
        return frozenset()
    marks = ", ".join("?" for _ in session_ids)
    rows = db.execute(
        f"UPDATE sessions SET lease_until = ? WHERE id IN ({marks})"
        " AND ended_at IS NULL AND replica = ? RETURNING id",
        (until, *session_ids, replica),
    ).fetchall()
    return frozenset(str(id_) for (id_,) in rows)


def take(db: Connection, session_id: str, replica: str, until: float | None) -> None:
    """A new session's row: held by `replica` until `until` (None: no lease, resume off)."""
    db.execute(
        "UPDATE sessions SET replica = ?, lease_until = ? WHERE id = ?",
        (replica, until, session_id),
    )


def bind_token(db: Connection, session_id: str, token_hash: str, client: str) -> None:
    """The token a new connection's `ready` carries, for `client`'s key only."""
    db.execute(
        "UPDATE sessions SET resume_hash = ?, resume_client = ? WHERE id = ?",
        (token_hash, client, session_id),
    )


def release(db: Connection, session_id: str, replica: str, duration_s: float, until: float) -> bool:
    """The client has gone and may come back: no replica runs the session now; it stays open
    until `until` (then the sweep ends it), with the duration it has so far. False (nothing
    changed): `replica` no longer holds it (another took it over) or it has ended."""
    cursor = db.execute(
        "UPDATE sessions SET replica = NULL, lease_until = ?, duration_s = ?"
        " WHERE id = ? AND replica = ? AND ended_at IS NULL",
        (until, duration_s, session_id, replica),
    )
    return cursor.rowcount > 0


def finish(
    db: Connection, session_id: str, replica: str, reason: str, duration_s: float, ended_at: float
) -> bool:
    """End a session `replica` holds; False (nothing changed) when another replica has taken
    it over: that one ends it. `SessionNotFound` for no such session."""
    cursor = db.execute(
        "UPDATE sessions SET ended_at = ?, end_reason = ?, duration_s = ?"
        " WHERE id = ? AND replica = ?",
        (ended_at, reason, duration_s, session_id, replica),
    )
    if cursor.rowcount > 0:
        return True
    if db.execute("SELECT 1 FROM sessions WHERE id = ?", (session_id,)).fetchone() is None:
        raise SessionNotFound(session_id)
    return False


def claim(
    db: Connection,
    token_hash: str,
    client: str,
    new_hash: str,
    replica: str,
    *,
    now: float,
    until: float,
    stale: float,
) -> Claimed | Busy | None:
    """Swap a live token for `new_hash` and hold the session for `replica` until `until`; the
    token claimed with stays good until the new connection stores a final (`mark_seen`).

    The token must be `client`'s, its session open and its lease running (`>= now`); a session
    a replica still holds is taken only once that lease is stale (`< stale`: its holder has
    missed its renewals). None for every other case alike: unknown, used, expired, ended, or
    another key's token."""
    row = db.execute(
        "UPDATE sessions SET resume_hash = ?, resume_prev_hash = ?, replica = ?, lease_until = ?"
        " WHERE (resume_hash = ? OR resume_prev_hash = ?) AND resume_client = ?"
        " AND ended_at IS NULL AND lease_until >= ? AND (replica IS NULL OR lease_until < ?)"
        " RETURNING id",
        (new_hash, token_hash, replica, until, token_hash, token_hash, client, now, stale),
    ).fetchone()
    if row is None:
        waiting = db.execute(
            "SELECT 1 FROM sessions WHERE (resume_hash = ? OR resume_prev_hash = ?)"
            " AND resume_client = ? AND ended_at IS NULL AND lease_until >= ?",
            (token_hash, token_hash, client, now),
        ).fetchone()
        return None if waiting is None else Busy()
    session_id = str(row[0])
    return Claimed(session_id, stored_finals(db, session_id))


def mark_seq(db: Connection, session_id: str, index: int, seq: int) -> None:
    """The native `seq` the final `index` was sent with; the token the session was last
    claimed with is dead from now on (`mark_seen`)."""
    db.execute(
        "UPDATE utterances SET seq = ? WHERE session_id = ? AND idx = ?", (seq, session_id, index)
    )
    mark_seen(db, session_id)


def mark_seen(db: Connection, session_id: str) -> None:
    """The session's connection has stored a final after its `ready`: the token it was claimed
    with no longer resumes it."""
    db.execute(
        "UPDATE sessions SET resume_prev_hash = NULL WHERE id = ? AND resume_prev_hash IS NOT NULL",
        (session_id,),
    )


def stored_finals(
    db: Connection, session_id: str
) -> tuple[tuple[int | None, StoredUtterance], ...]:
    rows = db.execute(
        f"SELECT seq, {UTTERANCE_COLUMNS} FROM utterances WHERE session_id = ? ORDER BY idx",
        (session_id,),
    ).fetchall()
    return tuple((row[0], utterance_of(tuple(row[1:]))) for row in rows)


OpenRow = tuple[str, float, int | None, float]
"""An open session the sweep ended: (id, started_at, sample_rate, duration so far)."""

# the duration an open session has so far: the one it was released with, else its last final's
# end (evaluated before the UPDATE sets anything)
_SO_FAR = (
    'COALESCE(duration_s, (SELECT MAX(u."end") FROM utterances AS u'
    " WHERE u.session_id = sessions.id), 0)"
)


def end_lapsed(db: Connection, now: float, *, unleased: bool = False) -> list[OpenRow]:
    """End `interrupted` the open sessions whose lease lapsed before `now` (with `unleased`,
    also those that never had one: rows of a server that ran without leases, ended only at its
    start-up), at their start plus the duration they have so far; returns them.

    One conditional UPDATE: a replica sweeping at the same time waits for this transaction and
    then finds these rows ended, so each session is ended (and its recording kept) once."""
    unleased_rows = " OR lease_until IS NULL" if unleased else ""
    rows = db.execute(
        f"UPDATE sessions SET end_reason = 'interrupted', duration_s = {_SO_FAR},"
        f" ended_at = started_at + {_SO_FAR}"
        f" WHERE ended_at IS NULL AND (lease_until < ?{unleased_rows})"
        " RETURNING id, started_at, sample_rate, duration_s",
        (now,),
    ).fetchall()
    return [(str(id_), float(start), rate, float(so_far)) for id_, start, rate, so_far in rows]


def correct_end(db: Connection, session_id: str, duration_s: float, ended_at: float) -> None:
    """An ended session's duration and end, as its recording tells them."""
    db.execute(
        "UPDATE sessions SET duration_s = ?, ended_at = ? WHERE id = ?",
        (duration_s, ended_at, session_id),
    )
