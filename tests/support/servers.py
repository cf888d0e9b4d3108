"""Real `chorus serve` processes for the tests: a free port, a server started on tiny.en and
waited for until `/health` answers, and a stop by SIGTERM (SIGKILL after 15 s)."""

from __future__ import annotations

import os
import signal
import socket
import sys
from pathlib import Path

import httpx
import trio

ROOT = Path(__file__).resolve().parents[2]


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


async def start_server(
    data_dir: Path, port: int, env: dict[str, str] | None = None, module: str = "service.cli"
) -> trio.Process:
    """`python -m <module> serve …`: `chorus serve`, or a wrapper that takes its flags."""
    process = await trio.lowlevel.open_process(
        [
            sys.executable,
            "-m",
            module,
            "serve",
            "--model",
            "tiny.en",
            "--port",
            str(port),
            "--data-dir",
            str(data_dir),
            "--log-level",
            "warning",
        ],
        cwd=ROOT,
        env={**os.environ, **(env or {})},
    )
    async with httpx.AsyncClient() as http:
        with trio.fail_after(60):
            while True:
                try:
                    if (await http.get(f"http://127.0.0.1:{port}/health")).status_code == 200:
                        return process
                except httpx.TransportError:
                    pass
                await trio.sleep(0.2)


async def stop(process: trio.Process) -> None:
    process.send_signal(signal.SIGTERM)
    with trio.move_on_after(15):
        await process.wait()
    if process.returncode is None:
        process.kill()
