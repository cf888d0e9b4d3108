"""`support/hangs.py`: a hung trio test fails with where its tasks wait, and the run goes on."""

from __future__ import annotations

import pytest
import trio
from support.hangs import TestHung, task_tree, watch_for_hangs


async def test_the_task_tree_names_each_task_and_the_await_it_waits_in() -> None:
    async def waits_for_ever(event: trio.Event) -> None:
        await event.wait()

    event = trio.Event()
    async with trio.open_nursery() as nursery:
        nursery.start_soon(waits_for_ever, event, name="the-waiter")
        await trio.testing.wait_all_tasks_blocked()
        tree = task_tree(trio.lowlevel.current_root_task())
        event.set()
    text = "\n".join(tree)
    assert "task the-waiter" in text and "in waits_for_ever" in text and "in wait" in text


async def test_a_test_past_its_time_fails_with_its_stacks() -> None:
    """The watch runs on the wall clock and raises into the body that is still waiting."""
    with pytest.RaisesGroup(TestHung) as caught:
        async with watch_for_hangs(hang_s=0.2):
            await trio.sleep_forever()
    (failure,) = caught.value.exceptions
    assert "still running after 0 s" in str(failure) and "in sleep_forever" in str(failure)


async def test_a_test_that_ends_in_time_is_left_alone() -> None:
    async with watch_for_hangs(hang_s=30.0):
        await trio.sleep(0.01)


async def test_every_async_test_runs_under_the_watch() -> None:
    """`tests/conftest.py` gives pytest-trio `watched_run` as every async test's runner."""
    root = trio.lowlevel.current_root_task()
    assert root is not None
    children = [child for nursery in root.child_nurseries for child in nursery.child_tasks]
    assert any(child.name.endswith("watched_run.<locals>.watched") for child in children)
