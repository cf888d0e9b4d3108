"""A trio test that hangs fails with its tasks' stacks, instead of ending the whole run.

pytest-timeout (300 s, thread method) ends a hung run with `os._exit` and the main thread's
stack, which for a trio test is only the run loop waiting in epoll: which await hung is lost,
and so is every later test. `tests/conftest.py` runs every async test with `watched_run`
instead of `trio.run`: it watches the test (its fixtures included) in real time from a thread,
so a test on trio's `MockClock` is watched too. Past `HANG_REPORT_S` it fails the test with
`TestHung`, whose message is the trio task tree with each task's awaits (`task_tree`); the run
goes on with the next test.
"""

from __future__ import annotations

import threading
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any, TypeVar

import trio

T = TypeVar("T")

TRIO_CORE = str(Path(trio.__file__).parent / "_core")

HANG_REPORT_S = 240.0  # before pytest-timeout's 300 s (pyproject.toml) ends the whole run


class TestHung(Exception):
    """A test ran past `HANG_REPORT_S`; the message is where each of its tasks waited."""

    __test__ = False  # not a test class, whatever its name


def task_tree(task: trio.lowlevel.Task | None, depth: int = 0) -> list[str]:
    """`task` and its descendants, one line per task and one per frame it awaits in (none
    for no task: outside a run there is no root task)."""
    if task is None:
        return []
    indent = "  " * depth
    lines = [f"{indent}task {task.name}"]
    for frame, line in task.iter_await_frames():
        code = frame.f_code
        if TRIO_CORE in code.co_filename:
            continue  # the run loop's own frames say nothing of what the test waits for
        lines.append(f"{indent}  {code.co_filename}:{line} in {code.co_name}")
    for nursery in task.child_nurseries:
        for child in nursery.child_tasks:
            lines += task_tree(child, depth + 1)
    return lines


@asynccontextmanager
async def watch_for_hangs(hang_s: float = HANG_REPORT_S) -> AsyncIterator[None]:
    """Past `hang_s` (wall time) raises `TestHung` with the task tree, cancelling the body."""
    done = threading.Event()

    async def watch() -> None:
        hung = await trio.to_thread.run_sync(lambda: not done.wait(hang_s), abandon_on_cancel=True)
        if hung:
            tree = "\n".join(task_tree(trio.lowlevel.current_root_task()))
            raise TestHung(f"still running after {hang_s:.0f} s; its tasks:\n{tree}")

    async with trio.open_nursery() as nursery:
        nursery.start_soon(watch)
        try:
            yield
        finally:
            done.set()
            nursery.cancel_scope.cancel()


def watched_run(function: Callable[[], Awaitable[T]], **options: Any) -> T:
    """`trio.run(function, **options)` with the run watched for hangs: the runner pytest-trio
    is given for every async test."""

    async def watched() -> T:
        async with watch_for_hangs():
            return await function()

    return trio.run(watched, **options)
