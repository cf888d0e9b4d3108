"""The store's schema migrations on both databases, its SQL layer, and where its URL comes from.

Migrations run against real databases: SQLite files and a real PostgreSQL on loopback
(`store_database_url`); an SQLite database made before migrations existed is adopted whole.
"""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest
import trio
from psycopg.conninfo import conninfo_to_dict

from actors.store.actor import SessionRecord, StoredUtterance, open_store
from actors.store.database import Database, connection_options, describe_url, open_database
from actors.store.migrations import MIGRATIONS, Migration, both, migrate
from actors.store.sql import DRIVER_ERRORS, to_pyformat
from service.config import Settings

# What `actors/store/schema.py` ran on every start before migrations existed, kept verbatim as
# the shape of the databases in the field that migration 1 adopts.
SCHEMA_BEFORE_MIGRATIONS = """
CREATE TABLE IF NOT EXISTS sessions (
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
);
CREATE INDEX IF NOT EXISTS sessions_by_client ON sessions (client, seq);
CREATE INDEX IF NOT EXISTS sessions_by_start ON sessions (started_at);
CREATE INDEX IF NOT EXISTS sessions_page ON sessions (started_at, id);
CREATE INDEX IF NOT EXISTS sessions_by_client_page ON sessions (client, started_at, id);
CREATE TABLE IF NOT EXISTS utterances (
    session_id TEXT NOT NULL REFERENCES sessions (id) ON DELETE CASCADE,
    idx INTEGER NOT NULL,
    start REAL NOT NULL,
    end REAL NOT NULL,
    text TEXT NOT NULL,
    language TEXT NOT NULL,
    confidence REAL NOT NULL,
    words TEXT,
    PRIMARY KEY (session_id, idx)
) WITHOUT ROWID;
"""

CURRENT = [migration.version for migration in MIGRATIONS]
NEXT = len(MIGRATIONS) + 1  # a migration this build does not have yet
ADD_NOTE = Migration(NEXT, "a note", **both("ALTER TABLE sessions ADD COLUMN note TEXT"))


async def test_an_sqlite_database_from_before_migrations_is_adopted_with_its_rows(
    tmp_path: Path,
) -> None:
    old = sqlite3.connect(tmp_path / "chorus.sqlite3")
    old.executescript(SCHEMA_BEFORE_MIGRATIONS)
    old.execute(
        "INSERT INTO sessions (id, route, client, model, language, started_at, ended_at,"
        " end_reason, duration_s) VALUES ('kept', '/v1/stream', 'c', 'base', 'en', 1.5e9,"
        " 1.5e9 + 4, 'stop', 4.0)"
    )
    old.execute(
        "INSERT INTO utterances VALUES ('kept', 0, 0.5, 1.5, 'from before', 'en', 0.9, NULL)"
    )
    old.commit()
    old.close()
    async with open_store(tmp_path) as store:
        detail = await store.get_session("kept")
        await store.begin_session(
            SessionRecord(id="new", route="/v1/stream", client="c", model="base", language="en")
        )
        await store.add_utterance("new", StoredUtterance(0, 0.0, 1.0, "after", "en", 0.8))
    assert detail.transcript == "from before"
    assert (detail.session.end_reason, detail.session.duration_s) == ("stop", 4.0)
    db = sqlite3.connect(tmp_path / "chorus.sqlite3")
    rows = db.execute("SELECT version, name FROM schema_migrations").fetchall()
    db.close()
    # adopted as version 1, then brought up to date
    assert rows == [(migration.version, migration.name) for migration in MIGRATIONS]


def open_migrated(directory: Path, url: str | None) -> Database:
    """A database with this build's schema (the store's start-up, without the store)."""
    database = open_database(directory, url)
    migrate(database)
    return database


def versions(database: Database) -> list[int]:
    return database.read(
        lambda db: [v for (v,) in db.execute("SELECT version FROM schema_migrations")]
    )


async def test_a_new_migration_is_applied_once_and_a_failing_one_not_at_all(
    tmp_path: Path, store_database_url: str | None
) -> None:
    database = await trio.to_thread.run_sync(open_migrated, tmp_path, store_database_url)
    try:
        assert versions(database) == CURRENT
        assert migrate(database) == []  # nothing new
        broken = Migration(
            NEXT + 1,
            "half of it fails",
            **both("ALTER TABLE sessions ADD COLUMN other TEXT", "ALTER TABLE nowhere ADD x TEXT"),
        )
        with pytest.raises(DRIVER_ERRORS, match="nowhere"):
            migrate(database, (*MIGRATIONS, ADD_NOTE, broken))
        assert versions(database) == CURRENT  # the whole transaction went, the good one too
        assert migrate(database, (*MIGRATIONS, ADD_NOTE)) == [NEXT]
        assert migrate(database, (*MIGRATIONS, ADD_NOTE)) == []
        assert versions(database) == [*CURRENT, NEXT]
        database.read(lambda db: db.execute("SELECT note FROM sessions").fetchall())
        with pytest.raises(DRIVER_ERRORS, match="other"):
            database.read(lambda db: db.execute("SELECT other FROM sessions").fetchall())
        assert migrate(database) == []  # a newer database: used as it is
    finally:
        database.close()


def test_migrations_are_numbered_in_order(tmp_path: Path) -> None:
    database = open_database(tmp_path)
    try:
        with pytest.raises(ValueError, match="numbered"):
            migrate(database, (*MIGRATIONS, Migration(NEXT + 1, "a gap", **both("SELECT 1"))))
        assert not database.table_exists("sessions")  # refused before anything ran
    finally:
        database.close()
    assert list(range(1, NEXT)) == CURRENT


def test_placeholders_become_psycopgs_outside_quotes_only() -> None:
    assert to_pyformat("SELECT ? WHERE a = ? AND b LIKE '%?' AND \"c?\" = 1") == (
        "SELECT %s WHERE a = %s AND b LIKE '%%?' AND \"c?\" = 1"
    )
    assert to_pyformat("SELECT 'it''s ?', ?") == "SELECT 'it''s ?', %s"
    with pytest.raises(ValueError, match="unterminated"):
        to_pyformat("SELECT 'oops ?")


def test_the_database_url_comes_from_the_environment_and_only_postgresql_is_taken() -> None:
    url = "postgresql://chorus:secret@db.internal:5433/chorus"
    assert Settings.from_env({}).database_url is None
    assert Settings.from_env({"DATABASE_URL": url}).database_url == url
    short = "postgres://chorus@db/chorus"
    both_set = {"DATABASE_URL": url, "CHORUS_DATABASE_URL": short}
    assert Settings.from_env(both_set).database_url == short
    assert "secret" not in repr(Settings.from_env({"DATABASE_URL": url}))
    assert describe_url(url) == "db.internal:5433/chorus"
    options = conninfo_to_dict(connection_options(url + "?connect_timeout=3&sslmode=require"))
    assert (options["host"], options["port"], options["password"]) == (
        "db.internal",
        "5433",
        "secret",
    )
    assert (options["connect_timeout"], options["sslmode"]) == ("3", "require")  # the URL's own
    assert (options["application_name"], options["tcp_user_timeout"]) == ("chorus", "60000")
    for wrong in ("sqlite:///data/chorus.sqlite3", "mysql://db/chorus", "db.internal:5432"):
        with pytest.raises(ValueError, match=r"postgresql://.*unset for the embedded SQLite"):
            Settings.from_env({"DATABASE_URL": wrong})
