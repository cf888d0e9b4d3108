"""Requests for the transcriber actor's tests with a fake model: queue them in an order behind
a gated model, and read back the batches the model saw."""

from __future__ import annotations

from functools import partial

import numpy as np
import trio
import trio.testing
from support.fakes import FakeModel

from actors.model.port import Priority, Request
from actors.transcriber.actor import TranscriberHandle


def request(seconds: float) -> Request:
    return Request(np.zeros(int(seconds * 16000), np.float32))


async def wait_entered(model: FakeModel) -> None:
    await trio.to_thread.run_sync(model.entered.wait, 10)


async def submit_in_order(
    nursery: trio.Nursery,
    transcriber: TranscriberHandle,
    order: list[tuple[Priority, float]],
) -> None:
    """Queue one request of each length with its priority, in this order (the model is busy)."""
    for priority, seconds in order:
        nursery.start_soon(partial(transcriber.transcribe, request(seconds), priority=priority))
        await trio.testing.wait_all_tasks_blocked()


async def queue_behind_a_busy_model(
    nursery: trio.Nursery,
    transcriber: TranscriberHandle,
    model: FakeModel,
    order: list[tuple[Priority, float]],
) -> None:
    """Hold the (gated) model on a 9 s request, queue `order` behind it, then open the gate."""
    nursery.start_soon(transcriber.transcribe, request(9.0))
    await wait_entered(model)
    await submit_in_order(nursery, transcriber, order)
    model.gate.set()


def batch_lengths(model: FakeModel) -> list[list[float]]:
    return [[len(r.audio) / 16000 for r in batch] for batch in model.batches]
