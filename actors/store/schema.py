"""The store's records and its queries, the same on SQLite and PostgreSQL (blocking; run in the
store's thread).

Everything here takes a `Connection` (`actors/store/sql.py`: `?` placeholders, portable SQL)
and runs inside the store actor's worker thread (see `actors/store/actor.py`, which owns the
connection and the order of calls); the tables are made by `actors/store/migrations.py`. Times
are stored as UTC epoch seconds and come back as aware `datetime`s. Pages are newest first by
(`started_at`, `id`), and a page's `next` is the `PagePosition` of its last session: a keyset
position made of what the page showed, so it stays valid while sessions are added or deleted and
says nothing of sessions a filtered caller does not see (the global `seq` never leaves here).
"""

from __future__ import annotations

import re
from collections.abc import Collection
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

import attrs
import msgspec

from actors.store.sql import INTEGRITY_ERRORS, Connection, violates_foreign_key

if TYPE_CHECKING:
    from protocol.native import Final

SESSION_ID = re.compile(r"^[A-Za-z0-9_-][A-Za-z0-9_.-]{0,127}$")

_COLUMNS = """s.seq, s.id, s.route, s.client, s.model, s.language, s.started_at, s.ended_at,
    s.end_reason, s.duration_s, s.sample_rate,
    (SELECT COUNT(*) FROM utterances AS u WHERE u.session_id = s.id)"""


class SessionNotFound(LookupError):
    """No session with this id."""


class AlreadyStored(ValueError):
    """A session id or a final's index that is already in the store (finals are never revised)."""


class SessionLive(Exception):
    """The session has not ended yet, so it cannot be deleted."""


def _now() -> datetime:
    return datetime.now(UTC)


@attrs.frozen
class SessionRecord:
    id: str = attrs.field(validator=attrs.validators.matches_re(SESSION_ID))
    route: str
    client: str
    model: str
    language: str
    started_at: datetime = attrs.field(factory=_now)
    ended_at: datetime | None = None
    end_reason: str | None = None
    duration_s: float | None = None
    utterances: int = 0
    has_audio: bool = False


@attrs.frozen
class StoredWord:
    word: str
    start: float
    end: float
    confidence: float


@attrs.frozen
class StoredUtterance:
    index: int
    start: float
    end: float
    text: str
    language: str
    confidence: float
    words: tuple[StoredWord, ...] | None = None
    channel: int | None = None  # a multichannel session's channel; None: a single channel

    @classmethod
    def from_final(cls, final: Final) -> StoredUtterance:
        """What the store keeps of a native `final` frame."""
        words = None
        if final.words is not None:
            words = tuple(StoredWord(w.word, w.start, w.end, w.confidence) for w in final.words)
        return cls(
            index=final.utterance,
            start=final.start,
            end=final.end,
            text=final.text,
            language=final.language,
            confidence=final.confidence,
            words=words,
            channel=None if isinstance(final.channel, msgspec.UnsetType) else final.channel,
        )


_words_decoder = msgspec.json.Decoder(tuple[StoredWord, ...])


def join_transcript(utterances: tuple[StoredUtterance, ...]) -> str:
    return " ".join(text for u in utterances if (text := u.text.strip()))


@attrs.frozen
class SessionDetail:
    session: SessionRecord
    utterances: tuple[StoredUtterance, ...]

    @property
    def transcript(self) -> str:
        return join_transcript(self.utterances)


@attrs.frozen
class PagePosition:
    """Where a page ended: the start time and id of its last session (the next page starts
    after it, in newest-first order)."""

    started_at: datetime
    id: str


@attrs.frozen
class SessionPage:
    sessions: tuple[SessionRecord, ...]
    next: PagePosition | None


def _time(value: float | None) -> datetime | None:
    return None if value is None else datetime.fromtimestamp(value, UTC)


def _session(row: tuple[Any, ...]) -> SessionRecord:
    (_, id_, route, client, model, language, started, ended, reason, duration, rate, count) = row
    return SessionRecord(
        id=id_,
        route=route,
        client=client,
        model=model,
        language=language,
        started_at=datetime.fromtimestamp(started, UTC),
        ended_at=_time(ended),
        end_reason=reason,
        duration_s=duration,
        utterances=count,
        has_audio=rate is not None,
    )


def insert_session(db: Connection, record: SessionRecord) -> None:
    try:
        _insert_session(db, record)
    except INTEGRITY_ERRORS:
        raise AlreadyStored(f"session {record.id} exists") from None


def _insert_session(db: Connection, record: SessionRecord) -> None:
    db.execute(
        "INSERT INTO sessions (id, route, client, model, language, started_at, ended_at,"
        " end_reason, duration_s) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
        (
            record.id,
            record.route,
            record.client,
            record.model,
            record.language,
            record.started_at.timestamp(),
            None if record.ended_at is None else record.ended_at.timestamp(),
            record.end_reason,
            record.duration_s,
        ),
    )


def insert_utterance(db: Connection, session_id: str, utterance: StoredUtterance) -> None:
    words = None if utterance.words is None else msgspec.json.encode(utterance.words).decode()
    try:
        db.execute(
            'INSERT INTO utterances (session_id, idx, start, "end", text, language, confidence,'
            " words, channel) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (
                session_id,
                utterance.index,
                utterance.start,
                utterance.end,
                utterance.text,
                utterance.language,
                utterance.confidence,
                words,
                utterance.channel,
            ),
        )
    except INTEGRITY_ERRORS as error:
        if violates_foreign_key(error):
            raise SessionNotFound(session_id) from None
        raise AlreadyStored(f"final {utterance.index} of {session_id} exists") from None


def finish_session(
    db: Connection, session_id: str, reason: str, duration_s: float, ended_at: datetime
) -> None:
    cursor = db.execute(
        "UPDATE sessions SET ended_at = ?, end_reason = ?, duration_s = ? WHERE id = ?",
        (ended_at.timestamp(), reason, duration_s, session_id),
    )
    if cursor.rowcount == 0:
        raise SessionNotFound(session_id)


def mark_audio(db: Connection, session_id: str, sample_rate: int) -> None:
    cursor = db.execute(
        "UPDATE sessions SET sample_rate = ? WHERE id = ?", (sample_rate, session_id)
    )
    if cursor.rowcount == 0:
        raise SessionNotFound(session_id)


def select_page(
    db: Connection, client: str | None, limit: int, after: PagePosition | None
) -> SessionPage:
    """Newest first (by start time, then id), from just after `after` when given."""
    where: list[str] = []
    params: list[object] = []
    if client is not None:
        where.append("s.client = ?")
        params.append(client)
    if after is not None:
        where.append("(s.started_at, s.id) < (?, ?)")
        params += [after.started_at.timestamp(), after.id]
    clause = f"WHERE {' AND '.join(where)}" if where else ""
    rows = db.execute(
        f"SELECT {_COLUMNS} FROM sessions AS s {clause}"
        " ORDER BY s.started_at DESC, s.id DESC LIMIT ?",
        (*params, limit + 1),
    ).fetchall()
    sessions = tuple(_session(row) for row in rows[:limit])
    last = sessions[-1] if len(rows) > limit else None
    next_page = None if last is None else PagePosition(last.started_at, last.id)
    return SessionPage(sessions, next_page)


UTTERANCE_COLUMNS = 'idx, start, "end", text, language, confidence, words, channel'
"""The columns `utterance_of` reads, in its order."""


def utterance_of(row: tuple[Any, ...]) -> StoredUtterance:
    """A stored final from a row of `UTTERANCE_COLUMNS`."""
    index, start, end, text, language, confidence, words, channel = row
    return StoredUtterance(
        index=index,
        start=start,
        end=end,
        text=text,
        language=language,
        confidence=confidence,
        words=None if words is None else _words_decoder.decode(words),
        channel=channel,
    )


def select_session(db: Connection, session_id: str) -> SessionDetail:
    row = db.execute(f"SELECT {_COLUMNS} FROM sessions AS s WHERE s.id = ?", (session_id,))
    found = row.fetchone()
    if found is None:
        raise SessionNotFound(session_id)
    utterances = tuple(
        utterance_of(row)
        for row in db.execute(
            f"SELECT {UTTERANCE_COLUMNS} FROM utterances WHERE session_id = ? ORDER BY idx",
            (session_id,),
        )
    )
    return SessionDetail(_session(found), utterances)


def delete_session_row(db: Connection, session_id: str) -> None:
    found = db.execute("SELECT ended_at FROM sessions WHERE id = ?", (session_id,)).fetchone()
    if found is None:
        raise SessionNotFound(session_id)
    if found[0] is None:
        raise SessionLive(session_id)
    db.execute("DELETE FROM sessions WHERE id = ?", (session_id,))


def delete_ended_before(db: Connection, cutoff: datetime) -> list[str]:
    """Delete the ended sessions that started before `cutoff`; returns their ids."""
    rows = db.execute(
        "DELETE FROM sessions WHERE started_at < ? AND ended_at IS NOT NULL RETURNING id",
        (cutoff.timestamp(),),
    ).fetchall()
    return [str(id_) for (id_,) in rows]


def ended_before(db: Connection, cutoff: datetime) -> list[str]:
    """The ended sessions that started before `cutoff` (the retention purge's)."""
    rows = db.execute(
        "SELECT id FROM sessions WHERE started_at < ? AND ended_at IS NOT NULL",
        (cutoff.timestamp(),),
    ).fetchall()
    return [str(id_) for (id_,) in rows]


def delete_rows(db: Connection, session_ids: list[str]) -> list[str]:
    """Delete these ended sessions (one deleted meanwhile is skipped); returns which went."""
    deleted = []
    for session_id in session_ids:
        try:
            delete_session_row(db, session_id)
        except SessionNotFound:
            continue
        deleted.append(session_id)
    return deleted


def open_sessions(db: Connection) -> list[tuple[str, float, int | None, float | None]]:
    """Sessions a crash left open: (id, started_at, sample_rate, end of the last utterance)."""
    return db.execute(
        "SELECT s.id, s.started_at, s.sample_rate,"
        ' (SELECT MAX(u."end") FROM utterances AS u WHERE u.session_id = s.id)'
        " FROM sessions AS s WHERE s.ended_at IS NULL"
    ).fetchall()


def sessions_among(db: Connection, ids: Collection[str]) -> dict[str, bool]:
    """Which of `ids` have a row: each one's id and whether it is still open (never ended)."""
    listed = list(ids)
    found: dict[str, bool] = {}
    for first in range(0, len(listed), 500):
        chunk = listed[first : first + 500]
        marks = ", ".join("?" * len(chunk))
        rows = db.execute(f"SELECT id, ended_at FROM sessions WHERE id IN ({marks})", chunk)
        found.update((str(id_), ended is None) for id_, ended in rows)
    return found
