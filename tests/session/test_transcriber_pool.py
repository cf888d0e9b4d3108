"""The transcriber with several model workers: batches run at once, each job on one worker,
finals first for whichever worker is free, and a failing batch fails only its own jobs."""

from __future__ import annotations

import threading
from collections.abc import Sequence

import numpy as np
import pytest
import trio
import trio.testing
from support.transcriber_jobs import submit_in_order

from actors.model.port import Priority, Request, Result
from actors.transcriber.actor import TranscriberConfig, TranscriptionFailed, open_transcriber


def request(seconds: float) -> Request:
    return Request(np.zeros(int(seconds * 16000), np.float32))


def seconds_of(batch: list[Request]) -> list[float]:
    return [len(r.audio) / 16000 for r in batch]


class ConcurrentModel:
    """A fake model that lets several calls run at once; each waits until the test releases it."""

    name = "fake"
    multilingual = False
    languages: tuple[str, ...] = ("en",)
    workers = 1

    def __init__(self, fail_seconds: float | None = None) -> None:
        self._lock = threading.Lock()
        self.running = 0
        self.most_at_once = 0
        self.batches: list[list[Request]] = []
        self._entered = threading.Semaphore(0)
        self._release = threading.Semaphore(0)
        self._fail_seconds = fail_seconds

    def transcribe_batch(self, requests: Sequence[Request]) -> list[Result]:
        with self._lock:
            self.running += 1
            self.most_at_once = max(self.most_at_once, self.running)
            self.batches.append(list(requests))
        self._entered.release()
        self._release.acquire(timeout=30)
        with self._lock:
            self.running -= 1
        if any(len(r.audio) == (self._fail_seconds or 0) * 16000 for r in requests):
            raise RuntimeError("the fake model broke")
        return [Result(text=f"{len(r.audio) / 16000:.1f}", language="en") for r in requests]

    async def wait_entered(self, calls: int = 1) -> None:
        for _ in range(calls):
            assert await trio.to_thread.run_sync(self._entered.acquire, True, 10)

    def release(self, calls: int = 1) -> None:
        for _ in range(calls):
            self._release.release()


async def test_two_workers_run_two_batches_at_once_and_each_job_once() -> None:
    model = ConcurrentModel()
    config = TranscriberConfig(workers=2, max_batch_size=2)
    results: list[str] = []

    async def caller(seconds: float, priority: Priority = "final") -> None:
        results.append((await transcriber.transcribe(request(seconds), priority=priority)).text)

    async with open_transcriber(model, config) as transcriber:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(caller, 1.0)
            await model.wait_entered()
            nursery.start_soon(caller, 2.0)
            await model.wait_entered()  # the second worker took it while the first is busy
            assert model.running == 2
            assert transcriber.statistics().running == 2
            for seconds in (3.0, 4.0, 5.0, 6.0):
                nursery.start_soon(caller, seconds)
            await trio.testing.wait_all_tasks_blocked()
            model.release(2)
            await model.wait_entered(2)
            model.release(2)
        seen = [s for batch in model.batches for s in seconds_of(batch)]
        assert sorted(seen) == [1.0, 2.0, 3.0, 4.0, 5.0, 6.0]  # every job exactly once
        assert sorted(results) == ["1.0", "2.0", "3.0", "4.0", "5.0", "6.0"]
        assert model.most_at_once == 2
        assert transcriber.statistics().items == 6


async def test_a_free_worker_takes_finals_before_partials() -> None:
    model = ConcurrentModel()
    config = TranscriberConfig(workers=2, max_batch_size=8, partial_batch_size=2)
    async with open_transcriber(model, config) as transcriber, trio.open_nursery() as nursery:
        nursery.start_soon(transcriber.transcribe, request(9.0))
        await model.wait_entered()
        nursery.start_soon(transcriber.transcribe, request(8.0))
        await model.wait_entered()  # both workers busy
        await submit_in_order(
            nursery,
            transcriber,
            [
                ("partial", 1.0),
                ("final", 2.0),
                ("partial", 3.0),
                ("final", 4.0),
                ("background", 5.0),
            ],
        )
        model.release()  # one worker comes free: it takes the finals
        await model.wait_entered()
        assert seconds_of(model.batches[2]) == [2.0, 4.0]
        model.release()  # the other worker: the partials, oldest first
        await model.wait_entered()
        assert seconds_of(model.batches[3]) == [1.0, 3.0]
        model.release(2)
        await model.wait_entered()  # and only then the background job
        assert seconds_of(model.batches[4]) == [5.0]
        model.release()


async def test_a_failing_batch_on_one_worker_fails_only_its_own_jobs() -> None:
    model = ConcurrentModel(fail_seconds=3.0)
    config = TranscriberConfig(workers=2, max_batch_size=1)
    outcomes: dict[float, str] = {}

    async def caller(seconds: float) -> None:
        try:
            outcomes[seconds] = (await transcriber.transcribe(request(seconds))).text
        except TranscriptionFailed as error:
            outcomes[seconds] = f"failed: {error}"

    async with open_transcriber(model, config) as transcriber:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(caller, 3.0)
            await model.wait_entered()
            nursery.start_soon(caller, 2.0)
            await model.wait_entered()
            model.release(2)  # the poisoned batch and its neighbour finish together
            nursery.start_soon(caller, 4.0)
            await model.wait_entered()
            model.release()
        assert outcomes == {
            3.0: "failed: RuntimeError: the fake model broke",
            2.0: "2.0",
            4.0: "4.0",
        }
        assert transcriber.statistics().failed == 1


@pytest.mark.parametrize("workers", [1, 2, 3])
async def test_every_worker_ends_when_the_queue_closes(workers: int) -> None:
    model = ConcurrentModel()
    config = TranscriberConfig(workers=workers)
    async with open_transcriber(model, config) as transcriber, trio.open_nursery() as nursery:
        nursery.start_soon(transcriber.transcribe, request(1.0))
        await model.wait_entered()
        model.release()
    assert transcriber.statistics().running == 0
