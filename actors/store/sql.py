"""One SQL layer over SQLite and PostgreSQL: what a query function may assume of "a connection".

The store's queries (`schema.py`, and any module beside it) are written once, with `?`
placeholders and SQL that both databases speak (`RETURNING` included), and take a `Connection`:
anything with `execute(sql, parameters)` returning a `Cursor` (`fetchone`, `fetchall`,
`rowcount`, iteration). A `sqlite3.Connection` is one as it is; `PostgresConnection` makes a
psycopg connection one by rewriting the placeholders. Column names that PostgreSQL reserves
(`"end"`) are quoted, which SQLite reads the same way.

The errors a query function may name are here too, the same on both: `INTEGRITY_ERRORS` (a
constraint refused the row; `violates_foreign_key` tells a missing parent) and `DRIVER_ERRORS`
(anything the database said). Nothing here owns a task or a thread: the connection belongs to
the store actor (`actors/store/actor.py`), which calls these from its one worker thread.
"""

from __future__ import annotations

import functools
import sqlite3
from collections.abc import Iterator, Sequence
from typing import Any, Protocol

import psycopg
import psycopg.errors

__all__ = [
    "DRIVER_ERRORS",
    "INTEGRITY_ERRORS",
    "Connection",
    "Cursor",
    "PostgresConnection",
    "to_pyformat",
    "violates_foreign_key",
]

INTEGRITY_ERRORS: tuple[type[Exception], ...] = (sqlite3.IntegrityError, psycopg.IntegrityError)
DRIVER_ERRORS: tuple[type[Exception], ...] = (sqlite3.Error, psycopg.Error)


class Cursor(Protocol):
    """What a query reads back: rows as tuples, and how many rows a write touched."""

    @property
    def rowcount(self) -> int: ...

    def fetchone(self) -> Any: ...

    def fetchall(self) -> list[Any]: ...

    def __iter__(self) -> Iterator[Any]: ...


class Connection(Protocol):
    """What query functions take: one statement per call, `?` placeholders."""

    def execute(self, sql: str, parameters: Sequence[Any] = (), /) -> Cursor: ...


def violates_foreign_key(error: Exception) -> bool:
    """Whether an integrity error is a foreign key's (the parent row is missing)."""
    if isinstance(error, psycopg.errors.ForeignKeyViolation):
        return True
    return (
        isinstance(error, sqlite3.IntegrityError)
        and error.sqlite_errorname == "SQLITE_CONSTRAINT_FOREIGNKEY"
    )


@functools.lru_cache(maxsize=512)
def to_pyformat(sql: str) -> str:
    """`sql` with psycopg's placeholders: each `?` outside quotes becomes `%s`, and every `%`
    (quoted or not: psycopg reads them all) is doubled."""
    out: list[str] = []
    quote = ""
    for char in sql:
        if quote:
            quote = "" if char == quote else quote
        elif char in "'\"":
            quote = char
        elif char == "?":
            out.append("%s")
            continue
        out.append("%%" if char == "%" else char)
    if quote:
        raise ValueError(f"unterminated quote in SQL: {sql!r}")
    return "".join(out)


class PostgresConnection:
    """A psycopg connection seen as a `Connection`: `?` placeholders, one statement a call.

    Parameters are always passed (an empty tuple when there are none), so psycopg treats the
    text the same way every time (`%` doubled by `to_pyformat`)."""

    def __init__(self, raw: psycopg.Connection[tuple[Any, ...]]) -> None:
        self.raw = raw

    def execute(
        self, sql: str, parameters: Sequence[Any] = (), /
    ) -> psycopg.Cursor[tuple[Any, ...]]:
        return self.raw.execute(to_pyformat(sql), tuple(parameters))
