"""The store's schema, as an ordered list of migrations applied at start-up, on both databases.

`MIGRATIONS` is the history: each `Migration` has a version (1, 2, … in order), a name, and
its statements for SQLite and for PostgreSQL (`both(...)` where the text is the same). A new
migration is one more entry at the end; an entry, once released, never changes.

`migrate()` runs in the store actor's thread before anything else touches the database (called
by `open_store`, `actors/store/actor.py`). In one transaction it takes the database's schema lock
(`BEGIN IMMEDIATE` on SQLite; `pg_advisory_xact_lock` on PostgreSQL, so replicas that start at
once migrate one after the other and the later ones find the work done), creates
`schema_migrations` (version, name, applied_at) if it is missing, and applies the migrations not
recorded there, each recorded as it is applied. Any failure rolls everything back: the database
is left as it was, and the store does not open.

A database made before migrations existed (the tables of version 1, no `schema_migrations`) is
adopted: version 1 is recorded as applied, and its tables and rows are kept as they are.
A database whose version is newer than this build's (a newer replica migrated it during a
rolling upgrade) is used as it is, with a warning: migrations add to the schema, so older code
keeps working on it.
"""

from __future__ import annotations

import logging
import time

import attrs

from actors.store.database import Database, Dialect

__all__ = ["MIGRATIONS", "Migration", "both", "migrate"]

log = logging.getLogger("chorus.store")


@attrs.frozen
class Migration:
    version: int
    name: str
    sqlite: tuple[str, ...]  # one statement each
    postgres: tuple[str, ...]

    def statements(self, dialect: Dialect) -> tuple[str, ...]:
        return self.sqlite if dialect == "sqlite" else self.postgres


def both(*statements: str) -> dict[str, tuple[str, ...]]:
    """The same statements for both databases: `Migration(n, name, **both(...))`."""
    return {"sqlite": statements, "postgres": statements}


_INDEXES = (
    "CREATE INDEX IF NOT EXISTS sessions_by_client ON sessions (client, seq)",
    "CREATE INDEX IF NOT EXISTS sessions_by_start ON sessions (started_at)",
    "CREATE INDEX IF NOT EXISTS sessions_page ON sessions (started_at, id)",
    "CREATE INDEX IF NOT EXISTS sessions_by_client_page ON sessions (client, started_at, id)",
)

# Version 1 as the store made it before migrations (SQLite); on PostgreSQL times are DOUBLE
# PRECISION (its REAL is 4 bytes, too coarse for epoch seconds) and ids compare bytewise
# (COLLATE "C", as SQLite does), so pages come in the same order on both.
_SESSIONS_SQLITE = """CREATE TABLE IF NOT EXISTS sessions (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    id TEXT NOT NULL UNIQUE,
    route TEXT NOT NULL,
    client TEXT NOT NULL,
    model TEXT NOT NULL,
    language TEXT NOT NULL,
    started_at REAL NOT NULL,
    ended_at REAL,
    end_reason TEXT,
    duration_s REAL,
    sample_rate INTEGER
)"""
_UTTERANCES_SQLITE = """CREATE TABLE IF NOT EXISTS utterances (
    session_id TEXT NOT NULL REFERENCES sessions (id) ON DELETE CASCADE,
    idx INTEGER NOT NULL,
    start REAL NOT NULL,
    end REAL NOT NULL,
    text TEXT NOT NULL,
    language TEXT NOT NULL,
    confidence REAL NOT NULL,
    words TEXT,
    PRIMARY KEY (session_id, idx)
) WITHOUT ROWID"""
_SESSIONS_POSTGRES = """CREATE TABLE IF NOT EXISTS sessions (
    seq BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    id TEXT COLLATE "C" NOT NULL UNIQUE,
    route TEXT NOT NULL,
    client TEXT NOT NULL,
    model TEXT NOT NULL,
    language TEXT NOT NULL,
    started_at DOUBLE PRECISION NOT NULL,
    ended_at DOUBLE PRECISION,
    end_reason TEXT,
    duration_s DOUBLE PRECISION,
    sample_rate INTEGER
)"""
_UTTERANCES_POSTGRES = """CREATE TABLE IF NOT EXISTS utterances (
    session_id TEXT COLLATE "C" NOT NULL REFERENCES sessions (id) ON DELETE CASCADE,
    idx INTEGER NOT NULL,
    start DOUBLE PRECISION NOT NULL,
    "end" DOUBLE PRECISION NOT NULL,
    text TEXT NOT NULL,
    language TEXT NOT NULL,
    confidence DOUBLE PRECISION NOT NULL,
    words TEXT,
    PRIMARY KEY (session_id, idx)
)"""

# Version 2, replica leases and resume tokens (`leases.py`, issue 23): who runs a session and
# until when, the SHA-256 of its live resume token and whose key it is, each final's native
# `seq`. The same text on both: one column an ALTER (SQLite's only form), `DOUBLE PRECISION` is
# REAL to SQLite, and a hash is hex, so its collation does not matter.
_LEASES = (
    "ALTER TABLE sessions ADD COLUMN replica TEXT",
    "ALTER TABLE sessions ADD COLUMN lease_until DOUBLE PRECISION",
    "ALTER TABLE sessions ADD COLUMN resume_hash TEXT",
    "ALTER TABLE sessions ADD COLUMN resume_client TEXT",
    "ALTER TABLE utterances ADD COLUMN seq INTEGER",
    "CREATE UNIQUE INDEX IF NOT EXISTS sessions_by_resume_hash ON sessions (resume_hash)",
    "CREATE INDEX IF NOT EXISTS sessions_open_by_lease ON sessions (ended_at, lease_until)",
)

MIGRATIONS: tuple[Migration, ...] = (
    Migration(
        1,
        "sessions and their finals",
        sqlite=(_SESSIONS_SQLITE, *_INDEXES, _UTTERANCES_SQLITE),
        postgres=(_SESSIONS_POSTGRES, *_INDEXES, _UTTERANCES_POSTGRES),
    ),
    Migration(2, "replica leases and resume tokens", **both(*_LEASES)),
    # a multichannel session's finals (a stereo call) say which channel spoke them
    Migration(
        3, "the channel of a final", **both("ALTER TABLE utterances ADD COLUMN channel INTEGER")
    ),
    # the token a resume claimed with stays good until the new connection has stored a final
    # (its client may never have read the `ready` with the next one: `leases.claim`)
    Migration(
        4,
        "the resume token a claim replaced",
        **both(
            "ALTER TABLE sessions ADD COLUMN resume_prev_hash TEXT",
            "CREATE INDEX IF NOT EXISTS sessions_by_resume_prev_hash"
            " ON sessions (resume_prev_hash)",
        ),
    ),
)

_TABLE = """CREATE TABLE IF NOT EXISTS schema_migrations (
    version INTEGER PRIMARY KEY,
    name TEXT NOT NULL,
    applied_at DOUBLE PRECISION NOT NULL
)"""


def _check_order(migrations: tuple[Migration, ...]) -> None:
    versions = [migration.version for migration in migrations]
    if versions != list(range(1, len(migrations) + 1)):
        raise ValueError(f"migrations must be numbered 1, 2, … in order, not {versions}")


def _record(database: Database, migration: Migration) -> None:
    database.connection.execute(
        "INSERT INTO schema_migrations (version, name, applied_at) VALUES (?, ?, ?)",
        (migration.version, migration.name, time.time()),
    )


def migrate(database: Database, migrations: tuple[Migration, ...] = MIGRATIONS) -> list[int]:
    """Bring the schema up to the last of `migrations`; returns the versions applied now
    (blocking: the store's thread). See the module docstring."""
    _check_order(migrations)
    db = database.connection
    database.begin()
    try:
        database.lock_schema()
        db.execute(_TABLE)
        done = {int(version) for (version,) in db.execute("SELECT version FROM schema_migrations")}
        if not done and database.table_exists("sessions"):
            _record(database, migrations[0])  # made before migrations: adopted as version 1
            done.add(migrations[0].version)
            log.info("store: adopted the existing tables as schema version 1")
        applied: list[int] = []
        for migration in migrations:
            if migration.version in done:
                continue
            for statement in migration.statements(database.dialect):
                db.execute(statement)
            _record(database, migration)
            applied.append(migration.version)
            log.info("store: applied migration %d (%s)", migration.version, migration.name)
        database.commit()
    except BaseException:
        database.rollback()
        raise
    newest = max(done, default=0)
    if newest > len(migrations):
        log.warning(
            "store: %s is at schema version %d, newer than this build's %d; using it as it is",
            database.name,
            newest,
            len(migrations),
        )
    return applied
