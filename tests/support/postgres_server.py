"""A real PostgreSQL server on a free loopback port, for the store's tests on PostgreSQL.

`start_postgres_server()` is a context manager: it runs `initdb` into a fresh temporary
directory, starts the server with `pg_ctl` (TCP on 127.0.0.1 only, its socket in that
directory, trust authentication, no fsync: nothing here outlives the tests), and on exit stops
it and removes the directory. `stop()` and `start()` take it down and bring it back on the same
port with the same data, as an outage would. `create_database()` gives each test its own.

The binaries come from PATH or `/usr/lib/postgresql/*/bin` (Debian's `postgresql` package).
`initdb` refuses to run as root, so under root they run as the `postgres` user (else `nobody`)
through `runuser`, with the directory handed to that user. Without the binaries the tests skip,
unless `CHORUS_REQUIRE_POSTGRES=1` (CI), where they fail instead: `apt-get install postgresql`.

The fixtures (imported by `tests/conftest.py`): `postgres_server`, one server for the whole run,
and `store_database_url`, parametrised over the store's two backends: None for SQLite, or the
URL of a new, empty PostgreSQL database for each test.
"""

from __future__ import annotations

import contextlib
import glob
import itertools
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import psycopg
import pytest

USER = "postgres"  # the database superuser that initdb creates
_databases = itertools.count()


def postgres_bin_dir() -> Path:
    """The directory of `initdb` and `pg_ctl`: on PATH, else the newest Debian install."""
    found = shutil.which("initdb")
    if found is not None and shutil.which("pg_ctl") is not None:
        return Path(found).parent
    installed = sorted(
        glob.glob("/usr/lib/postgresql/*/bin/initdb"),
        key=lambda path: int(Path(path).parts[-3]) if Path(path).parts[-3].isdigit() else 0,
    )
    if installed:
        return Path(installed[-1]).parent
    message = "PostgreSQL is not installed (apt-get install postgresql)"
    if os.environ.get("CHORUS_REQUIRE_POSTGRES") == "1":
        pytest.fail(message + " and CHORUS_REQUIRE_POSTGRES=1")
    pytest.skip(message)


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def _unprivileged_user() -> pwd.struct_passwd | None:
    """Who runs the server binaries: None (ourselves) unless we are root."""
    if os.geteuid() != 0:
        return None
    for name in ("postgres", "nobody"):
        try:
            return pwd.getpwnam(name)
        except KeyError:
            continue
    raise RuntimeError("running as root, and neither a postgres nor a nobody user exists")


class PostgresServer:
    def __init__(self, bin_dir: Path, directory: Path) -> None:
        self.port = _free_port()
        self.directory = directory
        self.data = directory / "data"
        self.log = directory / "server.log"
        self.admin_url = self.url("postgres")
        self._bin_dir = bin_dir
        self._user = _unprivileged_user()

    def url(self, database: str) -> str:
        return f"postgresql://{USER}@127.0.0.1:{self.port}/{database}"

    def _run(self, program: str, *arguments: str) -> None:
        command = [str(self._bin_dir / program), *arguments]
        if self._user is not None:
            command = ["runuser", "-u", self._user.pw_name, "--", *command]
        result = subprocess.run(command, capture_output=True, text=True, check=False)
        if result.returncode != 0:
            log = self.log.read_text() if self.log.exists() else ""
            raise RuntimeError(f"{program} failed: {result.stderr}{result.stdout}\n{log}")

    def initdb(self) -> None:
        if self._user is not None:
            os.chown(self.directory, self._user.pw_uid, self._user.pw_gid)
        self._run(
            "initdb",
            "-D", str(self.data),
            "-U", USER,
            "-A", "trust",
            "-E", "UTF8",
            "--no-locale",
            "--no-sync",
        )  # fmt: skip

    def start(self) -> None:
        options = (
            f"-p {self.port} -h 127.0.0.1 -k {self.directory}"
            " -c fsync=off -c synchronous_commit=off -c full_page_writes=off"
        )
        self._run("pg_ctl", "start", "-D", str(self.data), "-l", str(self.log), "-w", "-o", options)

    def stop(self) -> None:
        """A fast shutdown: open connections are cut, as in an outage or a failover."""
        self._run("pg_ctl", "stop", "-D", str(self.data), "-m", "fast", "-w")

    def create_database(self) -> str:
        """A new, empty database; returns its URL."""
        name = f"chorus_test_{os.getpid()}_{next(_databases)}"
        with psycopg.connect(self.admin_url, autocommit=True) as admin:
            admin.execute(f'CREATE DATABASE "{name}"')
        return self.url(name)


@contextmanager
def start_postgres_server() -> Iterator[PostgresServer]:
    bin_dir = postgres_bin_dir()
    # not under pytest's tmp_path: its parents are private to root, and the server's user must
    # reach its own directory
    directory = Path(tempfile.mkdtemp(prefix="chorus-pg-"))
    try:
        server = PostgresServer(bin_dir, directory)
        server.initdb()
        server.start()
        try:
            yield server
        finally:
            with contextlib.suppress(RuntimeError):  # stopped already by a test's outage
                server.stop()
    finally:
        shutil.rmtree(directory, ignore_errors=True)


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[PostgresServer]:
    with start_postgres_server() as server:
        yield server


@pytest.fixture(params=["sqlite", "postgresql"])
def store_database_url(request: pytest.FixtureRequest) -> str | None:
    """The store's backend for this test: None (SQLite in the test's directory), or the URL of
    a new PostgreSQL database."""
    if request.param == "sqlite":
        return None
    server: PostgresServer = request.getfixturevalue("postgres_server")
    return server.create_database()
