"""The store's two databases behind one shape: SQLite on local disk (the embedded default) or
PostgreSQL shared by replicas (`DATABASE_URL`).

`open_database()` connects and returns a `Database`: its `connection` (a `sql.Connection` for
the queries), transactions (`begin`, `commit`, `rollback`), `read()` for a query outside one,
and what differs between the two: `shared` (other processes write to it too, so start-up
recovery must not end their sessions), `lock_schema()` (how migrations serialise). Errors are
the drivers' own (`sql.DRIVER_ERRORS`; the actor turns them into `StoreError`). Nothing here
owns a task: the store actor's one worker thread makes every call (`actors/store/actor.py`).

PostgreSQL reconnects: a connection found closed, or lost before anything was done on it (at
`begin` or in a read), is replaced and the statement tried once more, so a server restart or a
`pg_terminate_backend` between batches costs nothing. A connection lost inside a transaction
fails that transaction (nobody can know what it committed); the next one reconnects.
"""

from __future__ import annotations

import abc
import contextlib
import logging
import sqlite3
from collections.abc import Callable
from pathlib import Path
from typing import Any, Literal, TypeVar
from urllib.parse import urlsplit

import psycopg
import psycopg.conninfo
import psycopg.pq

from actors.store.sql import Connection, PostgresConnection

__all__ = [
    "POSTGRES_SCHEMES",
    "Database",
    "Dialect",
    "PostgresDatabase",
    "SqliteDatabase",
    "check_database_url",
    "connection_options",
    "describe_url",
    "open_database",
]

log = logging.getLogger("chorus.store")
T = TypeVar("T")
Dialect = Literal["sqlite", "postgres"]
POSTGRES_SCHEMES = ("postgresql", "postgres")
SCHEMA_LOCK = 0x43686F727573  # pg_advisory_xact_lock key of the migrations ("Chorus")
# libpq's settings unless the URL says otherwise: give up connecting after 10 s, and find a
# server that went silent (a partition, a dead host) in about a minute rather than the OS's
# hours, so the writer thread (and every final waiting on it) is not held past that
CONNECTION_DEFAULTS: dict[str, str | int] = {
    "connect_timeout": 10,
    "application_name": "chorus",
    "keepalives_idle": 30,
    "keepalives_interval": 10,
    "keepalives_count": 3,
    "tcp_user_timeout": 60_000,  # ms that sent data may stay unacknowledged
}


class Database(abc.ABC):
    """One connection, used by one thread at a time; see the module docstring."""

    dialect: Dialect = "sqlite"
    shared = False  # written by other processes (replicas) too
    name = "database"  # for logs: no password

    @property
    @abc.abstractmethod
    def connection(self) -> Connection: ...

    @property
    @abc.abstractmethod
    def in_transaction(self) -> bool: ...

    @abc.abstractmethod
    def begin(self) -> None:
        """Start a write transaction."""

    def commit(self) -> None:
        self.connection.execute("COMMIT")

    def rollback(self) -> None:
        """End the open transaction, if any, undoing it (best effort on a lost connection)."""
        if self.in_transaction:
            self.connection.execute("ROLLBACK")

    def read(self, query: Callable[[Connection], T]) -> T:
        """Run a query outside a transaction."""
        return query(self.connection)

    @abc.abstractmethod
    def lock_schema(self) -> None:
        """Inside a transaction: hold other processes' migrations off until it ends."""

    @abc.abstractmethod
    def table_exists(self, table: str) -> bool: ...

    @abc.abstractmethod
    def close(self) -> None: ...


class SqliteDatabase(Database):
    """SQLite in WAL mode; commits are durable (synchronous=FULL). `BEGIN IMMEDIATE` takes the
    write lock at the start, so migrations and recovery serialise with other processes."""

    def __init__(self, path: Path) -> None:
        self.name = f"SQLite at {path}"
        db = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
        try:
            db.execute("PRAGMA journal_mode=WAL")
            db.execute("PRAGMA synchronous=FULL")
            db.execute("PRAGMA foreign_keys=ON")
            db.execute("PRAGMA busy_timeout=5000")
        except BaseException:
            db.close()
            raise
        self.raw = db

    @property
    def connection(self) -> Connection:
        return self.raw

    @property
    def in_transaction(self) -> bool:
        return self.raw.in_transaction

    def begin(self) -> None:
        self.raw.execute("BEGIN IMMEDIATE")

    def lock_schema(self) -> None:
        pass  # `BEGIN IMMEDIATE` took the database's one write lock already

    def table_exists(self, table: str) -> bool:
        found = self.raw.execute(
            "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = ?", (table,)
        )
        return found.fetchone() is not None

    def close(self) -> None:
        self.raw.close()


class PostgresDatabase(Database):
    """PostgreSQL through psycopg, in autocommit mode with explicit `BEGIN`/`COMMIT` (as the
    SQLite connection is), reconnecting as the module docstring says."""

    dialect: Dialect = "postgres"
    shared = True

    def __init__(self, url: str) -> None:
        self.name = f"PostgreSQL at {describe_url(url)}"
        self._conninfo = connection_options(url)
        self._adapter = PostgresConnection(self._connect())

    def _connect(self) -> psycopg.Connection[tuple[Any, ...]]:
        return psycopg.connect(self._conninfo, autocommit=True)

    def _reconnect(self) -> None:
        self._adapter.raw.close()
        self._adapter = PostgresConnection(self._connect())
        log.warning("store: reconnected to %s", self.name)

    def _with_reconnect(self, action: Callable[[], T]) -> T:
        """`action`, tried again once on a new connection when the old one is found lost."""
        if self._adapter.raw.closed:
            self._reconnect()
        try:
            return action()
        except psycopg.OperationalError:
            if not self._adapter.raw.closed:
                raise  # the statement's failure, not the connection's
        self._reconnect()
        return action()

    @property
    def connection(self) -> Connection:
        return self._adapter

    @property
    def in_transaction(self) -> bool:
        status = self._adapter.raw.info.transaction_status
        return status in (
            psycopg.pq.TransactionStatus.INTRANS,
            psycopg.pq.TransactionStatus.INERROR,
        )

    def begin(self) -> None:
        self._with_reconnect(lambda: self._adapter.execute("BEGIN"))

    def rollback(self) -> None:
        if self._adapter.raw.closed:
            return  # the server ended the transaction with the connection
        # lost on the way: the server rolls back what the connection left open
        with contextlib.suppress(psycopg.OperationalError):
            super().rollback()

    def read(self, query: Callable[[Connection], T]) -> T:
        return self._with_reconnect(lambda: query(self._adapter))

    def lock_schema(self) -> None:
        # released by the transaction's end; replicas starting at once migrate one by one
        self._adapter.execute("SELECT pg_advisory_xact_lock(?)", (SCHEMA_LOCK,))

    def table_exists(self, table: str) -> bool:
        found = self._adapter.execute("SELECT to_regclass(?) IS NOT NULL", (table,))
        row = found.fetchone()
        return row is not None and bool(row[0])

    def close(self) -> None:
        self._adapter.raw.close()


def connection_options(url: str) -> str:
    """libpq's connection string for `url`: its own settings over `CONNECTION_DEFAULTS`."""
    options = {**CONNECTION_DEFAULTS, **psycopg.conninfo.conninfo_to_dict(url)}
    return psycopg.conninfo.make_conninfo("", **options)


def describe_url(url: str) -> str:
    """`host:port/database` of a PostgreSQL URL, for logs (never its password)."""
    parts = urlsplit(url)
    return f"{parts.hostname or 'localhost'}:{parts.port or 5432}{parts.path or '/'}"


def check_database_url(url: str) -> str:
    """`url` if it names a PostgreSQL database; else a `ValueError` that says what to do."""
    if urlsplit(url).scheme not in POSTGRES_SCHEMES:
        raise ValueError(
            "DATABASE_URL must be a postgresql:// (or postgres://) URL; leave it unset for"
            " the embedded SQLite store in the data directory"
        )
    return url


def open_database(directory: Path, database_url: str | None = None) -> Database:
    """PostgreSQL when `database_url` is a `postgresql://` (or `postgres://`) URL, else SQLite
    in `directory` (blocking: run it in the store's thread)."""
    if database_url is None:
        return SqliteDatabase(directory / "chorus.sqlite3")
    return PostgresDatabase(check_database_url(database_url))
