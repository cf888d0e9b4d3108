"""What a server under test was given, for the report: its command line, the settings among its
environment variables, and its model threads, so that a figure names the server it came from.

Plain functions, no tasks. For a server the bench starts (`bench.server.open_server`), the
command and the variables the bench set are known, and the bench's own environment and the
`.env` file in its working directory (which Chorus's settings read, under the environment) are
what the child inherits. For a server that was already running, its command line and
environment are read from /proc (psutil) when its pid is given and this user may read them.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path

import psutil  # type: ignore[import-untyped]

from bench.schema import ServerLaunch

# The variables that change how a server under test runs: Chorus's settings and limits, and
# the thread and instruction-set knobs of the libraries under the model.
SETTING_PREFIXES = (
    "CHORUS_",
    "MAX_RECORDINGS_",
    "OMP_",
    "OPENBLAS_",
    "MKL_",
    "CT2_",
    "ONEDNN_",
    "HF_HUB_OFFLINE",
)
THREAD_FLAGS = ("--cpu-threads", "--omp-threads")
THREAD_VARIABLES = ("CHORUS_CPU_THREADS", "OMP_NUM_THREADS")


def settings_of(environment: Mapping[str, str]) -> dict[str, str]:
    """The variables among `environment` that change how a server runs, sorted by name."""
    return {
        name: value
        for name, value in sorted(environment.items())
        if name.startswith(SETTING_PREFIXES)
    }


def dotenv_settings(path: Path) -> dict[str, str]:
    """`CHORUS_*` lines of a `.env` file (what Chorus's settings read under the environment)."""
    try:
        text = path.read_text(encoding="utf-8")
    except OSError:
        return {}
    found = {}
    for line in text.splitlines():
        name, equals, value = line.strip().partition("=")
        if equals and name.strip().startswith("CHORUS_"):
            found[name.strip()] = value.strip().strip("'\"") + " (.env)"
    return found


def threads_of(command: Sequence[str], environment: Mapping[str, str]) -> str:
    """The server's model threads, in words, from its flags or its environment."""
    for index, word in enumerate(command):
        for flag in THREAD_FLAGS:
            if word == flag and index + 1 < len(command):
                return f"{command[index + 1]} ({flag})"
            if word.startswith(flag + "="):
                return f"{word.split('=', 1)[1]} ({flag})"
    for name in THREAD_VARIABLES:
        if environment.get(name):
            return f"{environment[name]} ({name})"
    cpus = os.cpu_count() or 1
    return f"its default (Chorus: min(CPUs, 8) = {min(cpus, 8)}, shared among its model workers)"


def started_launch(
    command: Sequence[str],
    given: Mapping[str, str],
    *,
    inherited: Mapping[str, str] | None = None,
    dotenv: Path | None = Path(".env"),
) -> ServerLaunch:
    """A server the bench started with `command`, the variables in `given` set over what it
    inherits (`inherited`, by default this process's environment, over `dotenv`'s lines)."""
    environment = {
        **(dotenv_settings(dotenv) if dotenv is not None else {}),
        **settings_of(os.environ if inherited is None else inherited),
        **given,
    }
    settings = settings_of(environment)
    return ServerLaunch(
        how="started by the bench",
        command=list(command),
        environment=settings,
        threads=threads_of(command, settings),
    )


def running_launch(pid: int | None) -> ServerLaunch:
    """A server that was already running: what /proc says about `pid`, when it may be read."""
    if pid is None:
        return ServerLaunch(
            how="already running, pid not given",
            command=[],
            environment={},
            threads="unknown",
        )
    try:
        process = psutil.Process(pid)
        command = list(process.cmdline())
        environment = settings_of(process.environ())
    except psutil.Error as error:
        return ServerLaunch(
            how=f"already running (pid {pid}; /proc unreadable: {type(error).__name__})",
            command=[],
            environment={},
            threads="unknown",
        )
    return ServerLaunch(
        how=f"already running (pid {pid})",
        command=command,
        environment=environment,
        threads=threads_of(command, environment),
    )
