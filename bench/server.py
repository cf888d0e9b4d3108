"""The server under test: start it as a subprocess, ask `/health`, sample its CPU and memory.

`open_server()` owns one child process (in its own process group, output to a log file): it
yields once `/health` answers and, on exit or error, sends SIGTERM to that group, waits up to
`stop_timeout_s`, then SIGKILL. `sample_usage()` is a task that reads /proc (psutil) for the
server's process tree until cancelled. HTTP calls use the standard library in a worker thread,
so the bench needs no HTTP client of its own; they only ever go to loopback addresses.
"""

from __future__ import annotations

import contextlib
import http.client
import os
import signal
import socket
import subprocess
import tempfile
import urllib.error
import urllib.request
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from pathlib import Path
from urllib.parse import urlsplit

import attrs
import msgspec
import psutil  # type: ignore[import-untyped]
import trio

from bench.schema import Health, ServerUsage, health_decoder

LOOPBACK = {"127.0.0.1", "localhost", "::1"}
# Every bench client comes from 127.0.0.1: the servers the bench starts run with the per-client
# limits lifted (the total-session admission gate, which answers 503, stays as configured).
SERVER_ENV = {
    "CHORUS_MAX_SESSIONS_PER_CLIENT": "100000",
    "MAX_RECORDINGS_PER_MINUTE": "",
    "MAX_RECORDINGS_PER_HOUR": "",
    "MAX_RECORDINGS_PER_DAY": "",
}


class ServerFailed(RuntimeError):
    """The server process exited, or did not answer `/health` in time."""


@attrs.frozen
class ServerHandle:
    url: str  # http://127.0.0.1:PORT
    pid: int
    command: tuple[str, ...] = ()  # how the bench started it; empty for a running server
    given: Mapping[str, str] = attrs.field(factory=dict)  # the variables the bench set for it


def require_loopback(url: str) -> None:
    host = urlsplit(url).hostname or ""
    if host not in LOOPBACK:
        raise ValueError(f"the bench only talks to loopback servers, not {host!r}")


def require_process(pid: int) -> None:
    if not psutil.pid_exists(pid):
        raise ValueError(f"no process {pid} on this machine to sample")


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def _get(url: str, timeout_s: float) -> bytes:
    try:
        with urllib.request.urlopen(url, timeout=timeout_s) as response:
            body: bytes = response.read()
            return body
    except urllib.error.HTTPError as error:
        error.close()  # it holds the response and its socket
        raise


async def fetch_health(url: str, *, timeout_s: float = 5.0) -> Health | None:
    """`GET /health`, or None when the server does not answer it."""
    try:
        body = await trio.to_thread.run_sync(_get, url.rstrip("/") + "/health", timeout_s)
    except (OSError, urllib.error.URLError, http.client.HTTPException):
        return None
    try:
        return health_decoder.decode(body)
    except msgspec.DecodeError:
        return None


async def wait_idle(url: str, *, timeout_s: float = 30.0) -> None:
    """Wait until the server reports no live sessions (so runs do not overlap)."""
    with trio.move_on_after(timeout_s):
        while True:  # polling: the server is another process, with no event to wait on
            health = await fetch_health(url)
            if health is None or health.sessions == 0:
                return
            await trio.sleep(0.25)


@contextlib.asynccontextmanager
async def open_server(
    command: Sequence[str],
    *,
    log_path: Path,
    env: Mapping[str, str] | None = None,
    ready_timeout_s: float = 120.0,
    stop_timeout_s: float = 15.0,
    ready: Callable[[str], Awaitable[bool]] | None = None,
) -> AsyncIterator[ServerHandle]:
    """Run `command --host 127.0.0.1 --port PORT` until the block ends.

    Its data (`CHORUS_DATA_DIR`) goes to a temporary directory unless `env` names one, so
    benchmark sessions never land in a real store; `SERVER_ENV` lifts the per-client limits.
    It is up once `ready(url)` says so: by default, once `/health` answers.
    """
    port = free_port()
    argv = [*command, "--host", "127.0.0.1", "--port", str(port)]
    url = f"http://127.0.0.1:{port}"
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with log_path.open("wb") as log, tempfile.TemporaryDirectory(prefix="chorus-bench-") as data:
        given = {"CHORUS_DATA_DIR": data, **SERVER_ENV, **(env or {})}
        environment = {**os.environ, **given}
        process = await trio.lowlevel.open_process(
            argv, stdout=log, stderr=subprocess.STDOUT, start_new_session=True, env=environment
        )
        try:
            await _wait_ready(url, process, log_path, ready_timeout_s, ready or answers_health)
            yield ServerHandle(url=url, pid=process.pid, command=tuple(argv), given=given)
        finally:
            with trio.CancelScope(shield=True):
                await _stop(process, stop_timeout_s)


async def answers_health(url: str) -> bool:
    return await fetch_health(url, timeout_s=2.0) is not None


async def _wait_ready(
    url: str,
    process: trio.Process,
    log_path: Path,
    timeout_s: float,
    ready: Callable[[str], Awaitable[bool]],
) -> None:
    with trio.move_on_after(timeout_s):
        while process.poll() is None:
            if await ready(url):
                return
            await trio.sleep(0.25)
        tail = (await trio.Path(log_path).read_text(errors="replace"))[-2000:]
        raise ServerFailed(f"server exited with {process.returncode}:\n{tail}")
    raise ServerFailed(f"server at {url} was not ready within {timeout_s:g} s")


async def _stop(process: trio.Process, timeout_s: float) -> None:
    if process.poll() is not None:
        return
    # SIGTERM to the leader only (`uv run` forwards it; a second one could cut the drain
    # short), then SIGKILL to the whole group this bench created for the server.
    process.send_signal(signal.SIGTERM)
    with trio.move_on_after(timeout_s):
        await process.wait()
    with contextlib.suppress(ProcessLookupError):  # stragglers, or a leader that would not stop
        os.killpg(process.pid, signal.SIGKILL)
    await process.wait()


@attrs.define
class UsageSampler:
    """CPU and resident memory of a process and its children, summed."""

    pid: int
    interval_s: float = 0.25
    peak_rss: int = 0
    samples: int = 0
    _cpu_start: float = 0.0
    _wall_start: float = 0.0

    def _tree(self) -> list[psutil.Process]:
        try:
            root = psutil.Process(self.pid)
            return [root, *root.children(recursive=True)]
        except psutil.Error:
            return []

    def _cpu_s(self) -> float:
        total = 0.0
        for process in self._tree():
            with contextlib.suppress(psutil.Error):
                times = process.cpu_times()
                total += times.user + times.system
        return total

    def _sample_rss(self) -> None:
        rss = 0
        for process in self._tree():
            with contextlib.suppress(psutil.Error):
                rss += process.memory_info().rss
        self.peak_rss = max(self.peak_rss, rss)
        self.samples += 1

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Sample until cancelled; `usage()` reads the result."""
        self._cpu_start = self._cpu_s()
        self._wall_start = trio.current_time()
        self._sample_rss()
        task_status.started()
        while True:
            await trio.sleep(self.interval_s)
            self._sample_rss()

    def usage(self) -> ServerUsage:
        wall = max(trio.current_time() - self._wall_start, 1e-9)
        self._sample_rss()
        cores = max(self._cpu_s() - self._cpu_start, 0.0) / wall
        return ServerUsage(
            pid=self.pid,
            cpu_cores=cores,
            cpu_percent=100.0 * cores / (psutil.cpu_count() or 1),
            peak_rss_mb=self.peak_rss / 2**20,
            samples=self.samples,
        )
