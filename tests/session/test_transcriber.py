"""The transcriber actor with a fake model: batching, order, abandonment, errors, backpressure."""

from __future__ import annotations

from functools import partial

import pytest
import trio
import trio.testing
from support.fakes import FakeModel
from support.transcriber_jobs import (
    batch_lengths,
    queue_behind_a_busy_model,
    request,
    wait_entered,
)

from actors.model.port import Priority
from actors.transcriber.actor import (
    Job,
    TranscriberClosed,
    TranscriberConfig,
    TranscriptionFailed,
    open_transcriber,
)
from actors.transcriber.schedule import FIRST_DEFERS_S, next_batch


async def test_batches_work_from_many_sessions() -> None:
    model = FakeModel()
    model.gate.clear()
    async with open_transcriber(model, TranscriberConfig(max_batch_size=8)) as transcriber:
        results: list[str] = []

        async def session(seconds: float) -> None:
            results.append((await transcriber.transcribe(request(seconds))).text)

        async with trio.open_nursery() as nursery:
            nursery.start_soon(session, 1.0)
            await wait_entered(model)  # the model is busy with the first
            for seconds in (2.0, 3.0, 4.0, 5.0):
                nursery.start_soon(session, seconds)
            await trio.testing.wait_all_tasks_blocked()
            model.gate.set()
        assert [len(batch) for batch in model.batches] == [1, 4]
        assert sorted(results) == [f"speech of {s:.1f} seconds" for s in (1, 2, 3, 4, 5)]
        stats = transcriber.statistics()
        assert (stats.batches, stats.items, stats.batch_sizes) == (2, 5, {1: 1, 4: 1})
        assert stats.mean_batch_size == 2.5


async def test_finals_before_partials_then_oldest_first() -> None:
    model = FakeModel()
    model.gate.clear()
    config = TranscriberConfig(max_batch_size=2)
    async with open_transcriber(model, config) as transcriber, trio.open_nursery() as nursery:
        order: list[tuple[Priority, float]] = [
            ("partial", 1.0),
            ("final", 2.0),
            ("background", 3.0),
            ("partial", 4.0),
            ("final", 5.0),
        ]
        nursery.start_soon(transcriber.transcribe, request(9.0))
        await wait_entered(model)
        for priority, seconds in order:
            nursery.start_soon(partial(transcriber.transcribe, request(seconds), priority=priority))
            await trio.testing.wait_all_tasks_blocked()
        model.gate.set()
    lengths = [[len(r.audio) / 16000 for r in batch] for batch in model.batches]
    assert lengths == [[9.0], [2.0, 5.0], [1.0, 4.0], [3.0]]


async def test_background_waits_for_live_work_and_runs_in_small_batches() -> None:
    model = FakeModel()
    model.gate.clear()
    config = TranscriberConfig(max_batch_size=8, background_batch_size=2)
    async with open_transcriber(model, config) as transcriber, trio.open_nursery() as nursery:
        nursery.start_soon(transcriber.transcribe, request(9.0))
        await wait_entered(model)
        for seconds in (1.0, 2.0, 3.0):
            nursery.start_soon(
                partial(transcriber.transcribe, request(seconds), priority="background")
            )
            await trio.testing.wait_all_tasks_blocked()
        nursery.start_soon(transcriber.transcribe, request(4.0))
        await trio.testing.wait_all_tasks_blocked()
        model.gate.set()
    lengths = [[len(r.audio) / 16000 for r in batch] for batch in model.batches]
    assert lengths == [[9.0], [4.0], [1.0, 2.0], [3.0]]


async def test_abandoned_jobs_never_reach_the_model() -> None:
    model = FakeModel()
    model.gate.clear()
    scope = trio.CancelScope()

    async def gives_up() -> None:
        with scope:
            await transcriber.transcribe(request(1.0))

    async with open_transcriber(model) as transcriber, trio.open_nursery() as nursery:
        nursery.start_soon(transcriber.transcribe, request(9.0))
        await wait_entered(model)
        nursery.start_soon(transcriber.transcribe, request(2.0))
        nursery.start_soon(gives_up)
        await trio.testing.wait_all_tasks_blocked()
        scope.cancel()
        await trio.testing.wait_all_tasks_blocked()
        model.gate.set()
    assert sorted(len(r.audio) / 16000 for r in model.seen) == [2.0, 9.0]
    assert transcriber.statistics().dropped == 1


async def test_model_error_reaches_every_waiting_caller_and_the_actor_goes_on() -> None:
    model = FakeModel(fail=lambda request: len(request.audio) == 16000 * 3)
    model.gate.clear()
    outcomes: dict[float, str] = {}

    async def caller(seconds: float) -> None:
        try:
            outcomes[seconds] = (await transcriber.transcribe(request(seconds))).text
        except TranscriptionFailed as error:
            outcomes[seconds] = f"failed: {error}"

    async with open_transcriber(model) as transcriber:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(caller, 1.0)
            await wait_entered(model)
            for seconds in (2.0, 3.0, 4.0):
                nursery.start_soon(caller, seconds)
            await trio.testing.wait_all_tasks_blocked()
            model.gate.set()
        assert outcomes[3.0] == "failed: RuntimeError: the fake model broke"
        assert outcomes[2.0] == "speech of 2.0 seconds"  # the poison is isolated
        assert outcomes[4.0] == "speech of 4.0 seconds"
        assert transcriber.statistics().failed == 1
        assert (await transcriber.transcribe(request(5.0))).text == "speech of 5.0 seconds"


async def test_every_caller_fails_when_all_requests_fail() -> None:
    model = FakeModel(fail=lambda request: True)
    failures = []
    async with open_transcriber(model) as transcriber, trio.open_nursery() as nursery:
        for seconds in (1.0, 2.0, 3.0):

            async def caller(s: float = seconds) -> None:
                with pytest.raises(TranscriptionFailed):
                    await transcriber.transcribe(request(s))
                failures.append(s)

            nursery.start_soon(caller)
    assert sorted(failures) == [1.0, 2.0, 3.0]


async def test_backpressure_bound_is_the_queue_size() -> None:
    """With the model busy, `queue_size` jobs wait in the channel; the next caller blocks."""
    model = FakeModel()
    model.gate.clear()
    config = TranscriberConfig(max_batch_size=1, queue_size=2)
    queued = 0
    async with open_transcriber(model, config) as transcriber, trio.open_nursery() as nursery:
        nursery.start_soon(transcriber.transcribe, request(1.0))
        await wait_entered(model)

        async def submit(seconds: float) -> None:
            nonlocal queued
            await transcriber._jobs.send(_job(seconds))
            queued += 1

        for seconds in (2.0, 3.0, 4.0, 5.0):
            nursery.start_soon(submit, seconds)
        await trio.testing.wait_all_tasks_blocked()
        assert queued == 2  # two buffered; the other two senders are blocked
        assert transcriber.statistics().queue == 2
        model.gate.set()
    assert queued == 4


def _job(seconds: float) -> Job:
    return Job(request(seconds), "final", trio.current_time())


async def test_closed_transcriber_says_so() -> None:
    model = FakeModel()
    async with open_transcriber(model) as transcriber:
        pass
    with pytest.raises(TranscriberClosed):
        await transcriber.transcribe(request(1.0))


ORDERS: list[tuple[list[tuple[Priority, float]], list[list[float]]]] = [
    # a batch returns as a whole, so finals run without partials; partial batches are small
    (
        [("partial", 1.0), ("partial", 2.0), ("final", 3.0), ("partial", 4.0), ("final", 5.0)],
        [[9.0], [3.0, 5.0], [1.0, 2.0], [4.0]],
    ),
    # finals (a first partial asked for just before them waits), then first partials (any
    # text at all for an utterance that shows none) with revisions filling their batch
    (
        [
            ("partial", 1.0),
            ("partial", 2.0),
            ("first_partial", 3.0),
            ("final", 4.0),
            ("first_partial", 5.0),
            ("first_partial", 6.0),
        ],
        [[9.0], [4.0], [3.0, 5.0], [6.0, 1.0], [2.0]],
    ),
    # with no final waiting, revisions fill a batch of first partials
    (
        [("partial", 1.0), ("first_partial", 3.0), ("partial", 2.0)],
        [[9.0], [3.0, 1.0], [2.0]],
    ),
]


@pytest.mark.parametrize(
    ("order", "batches"), ORDERS, ids=["finals_alone", "first_partials", "revisions_join"]
)
async def test_finals_then_first_partials_then_revisions(
    order: list[tuple[Priority, float]], batches: list[list[float]]
) -> None:
    model = FakeModel()
    model.gate.clear()
    config = TranscriberConfig(max_batch_size=8, partial_batch_size=2)
    async with open_transcriber(model, config) as transcriber, trio.open_nursery() as nursery:
        await queue_behind_a_busy_model(nursery, transcriber, model, order)
    assert batch_lengths(model) == batches


@pytest.mark.parametrize(("final_at", "first"), [(0.4, "final"), (0.6, "first_partial")])
def test_a_first_partial_waits_behind_finals_asked_for_up_to_half_a_second_later(
    final_at: float, first: Priority
) -> None:
    jobs = [
        Job(request(1.0), "first_partial", submitted=10.0),
        Job(request(2.0), "final", submitted=10.0 + final_at),
    ]
    assert FIRST_DEFERS_S == 0.5
    batch, rest = next_batch(jobs, TranscriberConfig().sizes)
    assert [job.priority for job in batch] == [first] and len(rest) == 1


async def test_uploads_wait_in_their_own_queue_never_in_front_of_live_work() -> None:
    """Twenty upload jobs while the model is busy: the live queue (which admission watches)
    stays empty, uploads wait in their own bounded channel, and a live final that comes
    after all of them is the next batch."""
    model = FakeModel()
    model.gate.clear()
    config = TranscriberConfig(queue_size=8, background_queue_size=4, background_batch_size=2)
    async with open_transcriber(model, config) as transcriber, trio.open_nursery() as nursery:
        nursery.start_soon(lambda: transcriber.transcribe(request(9.0), priority="background"))
        await wait_entered(model)
        for index in range(20):
            nursery.start_soon(
                partial(transcriber.transcribe, request(10.0 + index), priority="background")
            )
        await trio.testing.wait_all_tasks_blocked()
        statistics = transcriber.statistics()
        assert statistics.queue == 0 and statistics.background_queue == 4
        nursery.start_soon(lambda: transcriber.transcribe(request(1.0), priority="final"))
        await trio.testing.wait_all_tasks_blocked()
        assert transcriber.statistics().queue == 1  # not blocked behind the uploads
        model.gate.set()
    seconds = [[len(r.audio) / 16000 for r in batch] for batch in model.batches]
    assert seconds[0] == [9.0] and seconds[1] == [1.0]  # the final first, then the uploads
    assert sorted(s for batch in seconds[2:] for s in batch) == [10.0 + i for i in range(20)]
    assert all(len(batch) <= 2 for batch in seconds[2:])
