"""A real HAProxy in front of Chorus replicas on loopback, configured by `deploy/haproxy.cfg`.

`render_config()` is the shipped file with the addresses and ports of the test's replicas, a
stats socket in the test's directory, shorter check intervals, and optionally a `source`
address for the balancer's side (so a replica can trust it and not the test's own clients);
each replacement must match, so a change to the shipped file that the tests cannot follow
fails here instead of testing something else. `start_haproxy()` is an async context manager: it
starts `haproxy` on a free port, waits until its stats socket lists every replica, and stops
it on exit. Without the binary the tests skip, unless `CHORUS_REQUIRE_HAPROXY=1` (CI), where
they fail instead: `apt-get install haproxy`.
"""

from __future__ import annotations

import csv
import io
import os
import shutil
import signal
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from pathlib import Path

import attrs
import pytest
import trio
from support.servers import free_port

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy" / "haproxy.cfg"


def haproxy_binary() -> str:
    binary = shutil.which("haproxy") or shutil.which("haproxy", path="/usr/sbin:/usr/local/sbin")
    if binary is None:
        message = "haproxy is not installed (apt-get install haproxy)"
        if os.environ.get("CHORUS_REQUIRE_HAPROXY") == "1":
            pytest.fail(message + " and CHORUS_REQUIRE_HAPROXY=1")
        pytest.skip(message)
    return binary


@attrs.frozen
class Replica:
    """A Chorus replica as HAProxy sees it: its HTTP port and its agent's port, on 127.0.0.1."""

    port: int
    agent_port: int


def _replace(text: str, old: str, new: str, count: int = 1) -> str:
    assert text.count(old) == count, f"deploy/haproxy.cfg: {old!r} expected {count} time(s)"
    return text.replace(old, new)


def render_config(
    replicas: Sequence[Replica], port: int, stats_socket: Path, *, source: str | None = None
) -> str:
    """`deploy/haproxy.cfg` for `replicas` (chorus1, chorus2), the frontend on `port`."""
    text = DEPLOY.read_text()
    text = _replace(text, "bind :8080", f"bind 127.0.0.1:{port}")
    text = _replace(text, "/run/haproxy/chorus.sock", str(stats_socket))
    for number, replica in enumerate(replicas, start=1):
        name = f"server chorus{number} "
        line = next(line for line in text.splitlines() if line.strip().startswith(name))
        server = _replace(line, f"10.0.0.1{number}:8000", f"127.0.0.1:{replica.port}")
        server = _replace(server, "agent-port 8001", f"agent-port {replica.agent_port}")
        text = _replace(text, line, server)
    text = _replace(text, "agent-inter 1s", "agent-inter 100ms", count=len(replicas))
    text = _replace(text, "check inter 2s", "check inter 500ms", count=len(replicas))
    if source is not None:
        text = _replace(
            text, "    balance leastconn\n", f"    balance leastconn\n    source {source}\n"
        )
    return text


@attrs.frozen
class Haproxy:
    port: int
    stats_socket: Path
    log: Path

    async def servers(self) -> dict[str, tuple[str, int]]:
        """Each backend server's status (`UP`, `DRAIN (agent)`, `DOWN`…) and weight."""
        rows = csv.DictReader(io.StringIO((await self.ask("show stat")).removeprefix("# ")))
        return {
            row["svname"]: (row["status"], int(row["weight"] or 0))
            for row in rows
            if row["pxname"] == "chorus" and row["svname"] not in ("FRONTEND", "BACKEND")
        }

    async def statistics(self, server: str) -> dict[str, str]:
        """`server`'s row of `show stat` (HAProxy's counters: `hrsp_5xx`, `wredis`…)."""
        rows = csv.DictReader(io.StringIO((await self.ask("show stat")).removeprefix("# ")))
        return next(row for row in rows if row["pxname"] == "chorus" and row["svname"] == server)

    async def ask(self, command: str) -> str:
        """One command on the stats socket; its answer."""
        async with await trio.open_unix_socket(str(self.stats_socket)) as stream:
            await stream.send_all(command.encode() + b"\n")
            answer = b""
            while data := await stream.receive_some():
                answer += data
        return answer.decode()

    async def wait_for(self, server: str, status: str, weight: int | None = None) -> None:
        """Until HAProxy holds `server` in `status` (what its agent and health check said),
        and at `weight` when given."""
        with trio.fail_after(10):
            while True:
                now, weighs = (await self.servers())[server]
                if now == status and weight in (None, weighs):
                    return
                await trio.sleep(0.05)


@asynccontextmanager
async def start_haproxy(
    directory: Path, replicas: Sequence[Replica], *, source: str | None = None
) -> AsyncIterator[Haproxy]:
    """HAProxy on a free loopback port in front of `replicas`, until the block ends."""
    binary = haproxy_binary()
    port = free_port()
    config = directory / "haproxy.cfg"
    haproxy = Haproxy(port, directory / "haproxy.sock", directory / "haproxy.log")
    config.write_text(render_config(replicas, port, haproxy.stats_socket, source=source))
    with haproxy.log.open("wb") as log:
        process = await trio.lowlevel.open_process(
            [binary, "-f", str(config), "-db"], stdout=log, stderr=log
        )
    try:
        with trio.fail_after(20):
            while True:
                if process.poll() is not None:
                    raise RuntimeError(f"haproxy exited: {haproxy.log.read_text()}")
                try:
                    if all(status == "UP" for status, _ in (await haproxy.servers()).values()):
                        break
                except OSError:  # the socket is not there yet
                    pass
                await trio.sleep(0.05)
        yield haproxy
    finally:
        process.send_signal(signal.SIGTERM)
        with trio.move_on_after(5):
            await process.wait()
        if process.returncode is None:
            process.kill()
            await process.wait()
