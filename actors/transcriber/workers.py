"""The transcriber's model workers: `serve_batches` is one of them, a task in the nursery of
`open_transcriber()` (`actors/transcriber/actor.py`), which starts `config.workers` of them.

The workers share one list of pending jobs (all on the trio thread, so no lock): each idle
worker takes what is waiting, drops jobs whose caller has gone, picks a batch
(`schedule.next_batch`), and runs it in a worker thread (`trio.to_thread.run_sync` with the
actor's `CapacityLimiter(workers)`; never abandoned on cancel). A job is taken by exactly one
worker, and answered exactly once. Live jobs come through one channel, uploads' `background`
jobs through another, read only when no live work waits. A model error fails only the jobs of
the batch that raised it: the batch is retried one job at a time.
"""

from __future__ import annotations

import math

import attrs
import trio

from actors.model.port import SAMPLE_RATE, Result, SpeechModel
from actors.transcriber.jobs import Counters, Job, TranscriberClosed, TranscriberConfig
from actors.transcriber.schedule import HELD_BACK, Budget, next_batch, revision_wait_s


class Signal:
    """Wakes idle workers when a job arrives on either channel."""

    def __init__(self) -> None:
        self._event = trio.Event()

    def set(self) -> None:
        self._event.set()

    async def wait(self) -> None:
        await self._event.wait()
        if self._event.is_set():  # the first to wake re-arms; every woken worker re-checks
            self._event = trio.Event()


@attrs.frozen
class Queues:
    live: trio.MemoryReceiveChannel[Job]
    background: trio.MemoryReceiveChannel[Job]
    arrived: Signal


async def serve_batches(
    model: SpeechModel,
    queues: Queues,
    pending: list[Job],
    limiter: trio.CapacityLimiter,
    config: TranscriberConfig,
    counters: Counters,
    budget: Budget | None,
) -> None:
    """One model worker: take the most urgent batch from the shared pending list, run it."""
    while True:
        live_open = _take_waiting(queues.live, pending, config.queue_size)
        background_open = True
        if all(job.priority in HELD_BACK for job in pending):  # no live work that may run
            room = config.background_batch_size - sum(j.priority == "background" for j in pending)
            background_open = _take_waiting(queues.background, pending, len(pending) + room)
        kept = [job for job in pending if not job.abandoned]
        counters.dropped += len(pending) - len(kept)
        pending[:] = kept
        draining = not (live_open or background_open)  # closing: whatever waits runs
        now = trio.current_time()
        held_s = 0.0 if budget is None or draining else budget.wait_s(now)
        if held_s <= 0 and not draining:
            held_s = revision_wait_s(kept, config.sizes, config.revision_lead_s, now)
        batch, rest = next_batch(kept, config.sizes, revisions=held_s <= 0)
        if not batch:
            if draining:
                return
            waited = trio.current_time()
            with trio.move_on_after(held_s if kept else math.inf):
                await queues.arrived.wait()
            if kept:
                counters.revisions_held_s += trio.current_time() - waited
            continue
        pending[:] = rest
        counters.pending = sum(job.priority != "background" for job in pending)
        counters.pending_background = len(pending) - counters.pending
        _refresh(batch)
        await _run_batch(model, batch, limiter, counters, budget)


def fail_waiting(jobs: trio.MemoryReceiveChannel[Job], error: TranscriberClosed) -> None:
    """Answer every job still in `jobs` with `error` (the actor is gone)."""
    while True:
        try:
            jobs.receive_nowait().reply.fail(error)
        except (trio.WouldBlock, trio.EndOfChannel, trio.ClosedResourceError):
            return


def _refresh(batch: list[Job]) -> None:
    """Swap in the newest request of each job that offers one (its session's newest audio)."""
    for job in batch:
        if job.latest is not None:
            newer = job.latest()
            if newer is not None:
                job.request = newer


def _take_waiting(jobs: trio.MemoryReceiveChannel[Job], pending: list[Job], limit: int) -> bool:
    """Move waiting jobs into `pending` up to `limit`; False once `jobs` is closed and empty."""
    while len(pending) < limit:
        try:
            pending.append(jobs.receive_nowait())
        except trio.WouldBlock:
            return True
        except trio.EndOfChannel:
            return False
    return True


async def _run_batch(
    model: SpeechModel,
    batch: list[Job],
    limiter: trio.CapacityLimiter,
    counters: Counters,
    budget: Budget | None = None,
) -> None:
    try:
        results = await _call_model(model, batch, limiter, counters, budget)
    except Exception as error:
        if len(batch) == 1:
            counters.failed += 1
            batch[0].reply.fail(error)
            return
        for job in batch:  # isolate the request that broke the batch
            await _run_batch(model, [job], limiter, counters, budget)
        return
    counters.batches += 1
    counters.items += len(batch)
    counters.batch_sizes[len(batch)] += 1
    for job, result in zip(batch, results, strict=True):
        job.reply.set(result)


async def _call_model(
    model: SpeechModel,
    batch: list[Job],
    limiter: trio.CapacityLimiter,
    counters: Counters,
    budget: Budget | None,
) -> list[Result]:
    started = trio.current_time()
    counters.running += len(batch)
    try:
        results = await trio.to_thread.run_sync(
            model.transcribe_batch, [job.request for job in batch], limiter=limiter
        )
    finally:
        counters.running -= len(batch)
        _count(batch, trio.current_time() - started, counters, budget)
    if len(results) != len(batch):
        raise RuntimeError(f"model returned {len(results)} results for {len(batch)} requests")
    return results


def _count(batch: list[Job], elapsed: float, counters: Counters, budget: Budget | None) -> None:
    """Charge a batch's model time to its kind of work (and revisions to their budget)."""
    counters.busy_s += elapsed
    audio_s = sum(len(job.request.audio) for job in batch) / SAMPLE_RATE
    if batch[0].priority == "final":  # finals never share a batch with other work
        counters.final_busy_s += elapsed
        counters.final_audio_s += audio_s
        counters.finals += len(batch)
    elif batch[0].priority != "background":  # nor uploads with live work
        counters.partial_busy_s += elapsed
        counters.partials += len(batch)
        counters.partial_audio_s += audio_s
        firsts = sum(job.priority == "first_partial" for job in batch)
        counters.first_partials += firsts
        counters.first_partial_busy_s += elapsed * firsts / len(batch)
        if budget is not None and firsts < len(batch):
            budget.spend(elapsed * (len(batch) - firsts) / len(batch), trio.current_time())
