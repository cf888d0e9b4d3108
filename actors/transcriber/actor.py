"""The transcriber actor: one per loaded model, shared by every session and upload.

Ownership: `open_transcriber()` opens a nursery that owns `config.workers` tasks
(`_serve_batches`, one per model worker) and yields a `TranscriberHandle`. Callers put `Job`s
into a bounded channel (a full queue blocks them: that is the backpressure that reaches each
session's pipeline). The workers share one list of pending jobs (all on the trio thread, so no
lock): each idle worker takes what is waiting, drops jobs whose caller has gone, picks a batch
(`schedule.next_batch`), and runs it in a worker thread
(`trio.to_thread.run_sync` with a `CapacityLimiter(workers)`; never abandoned on cancel). A job
is taken by exactly one worker. The model must allow `workers` concurrent calls (the Whisper
adapter loads CTranslate2 with as many `inter_threads`, each with its share of the threads).
It never waits to fill a batch: an idle model takes whatever is there. Uploads submit
`background` work into a channel of their own (`background_queue_size`), which the workers
read only when no live work waits, one batch of at most `background_batch_size` at a time: a
long file delays a live final by one small batch at most, and uploads never fill the live
queue (which admission watches) nor stand in it ahead of a live final.

What runs next is `actors/transcriber/schedule.py`'s policy: finals and first drafts within
their bounds, then revisions (later drafts) earliest deadline first, uploads last. A revision
may be refreshed when it is taken (`Job.latest`): its session hands over the newest audio it
has, so a draft that waited is not stale when it runs.

A model error fails only the jobs of the batch that raised it: the batch is retried one job at a
time, so one bad request cannot fail its neighbours, and the jobs that still fail get
`TranscriptionFailed`. Leaving the `async with` closes the queue; the actor finishes what is
queued and exits. If the actor itself dies, every waiting caller gets `TranscriberClosed` and
the error surfaces to whoever opened it (the app lifespan).
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Protocol

import attrs
import trio

from actors.model.port import SAMPLE_RATE, Priority, Request, Result, SpeechModel
from actors.transcriber.schedule import HELD_BACK, BatchSizes, Budget, next_batch


class TranscriberClosed(Exception):
    """The transcriber is gone (shut down or crashed); no more results will come."""


class TranscriptionFailed(Exception):
    """The model raised on this request."""


@attrs.frozen
class TranscriberConfig:
    max_batch_size: int = 8
    queue_size: int = 64
    background_batch_size: int = 2  # uploads run in small batches, so live work waits little
    background_queue_size: int = 8  # upload jobs waiting; more block their uploads, not live work
    partial_batch_size: int = 8  # a batch of partials delays finals that arrive meanwhile
    workers: int = 1  # batches run at once on the model (CTranslate2 inter_threads)
    # share of the workers' time that revisions (later drafts) may use; None: any idle time
    partial_share: float | None = None
    partial_burst_s: float = 1.0  # model seconds of revisions the budget may save up

    @property
    def sizes(self) -> BatchSizes:
        return BatchSizes(
            finals=self.max_batch_size,
            drafts=self.partial_batch_size,
            background=self.background_batch_size,
        )


@attrs.frozen
class TranscriberStatistics:
    batches: int
    items: int
    batch_sizes: dict[int, int]
    queue: int  # live jobs waiting
    busy_s: float
    dropped: int
    failed: int
    running: int
    final_busy_s: float = 0.0  # model time spent on live finals (summed over workers)
    final_audio_s: float = 0.0  # audio seconds of the live finals answered
    partial_busy_s: float = 0.0  # model time spent on partials
    partials: int = 0  # partials answered
    partial_audio_s: float = 0.0  # audio seconds of the partials answered
    first_partials: int = 0  # first drafts of an utterance answered (counted in `partials` too)
    first_partial_busy_s: float = 0.0  # their share of the model time of their batches
    revisions_held_s: float = 0.0  # worker time spent waiting for the revisions' budget
    finals: int = 0  # live finals answered
    workers: int = 1
    background_queue: int = 0  # upload jobs waiting

    @property
    def mean_batch_size(self) -> float:
        return self.items / self.batches if self.batches else 0.0


Latest = Callable[[], Request | None]
"""Called when a job is taken into a batch: a newer request to run instead, or None."""


@attrs.define(eq=False)
class Job:
    request: Request
    priority: Priority
    submitted: float
    deadline: float = 0.0  # revisions: when their session's captions fall behind target
    latest: Latest | None = None
    done: trio.Event = attrs.field(factory=trio.Event)
    result: Result | None = None
    error: BaseException | None = None
    abandoned: bool = False

    def finish(self, result: Result | None = None, error: BaseException | None = None) -> None:
        self.result, self.error = result, error
        self.done.set()


@attrs.define
class _Counters:
    batches: int = 0
    items: int = 0
    batch_sizes: Counter[int] = attrs.field(factory=Counter)
    busy_s: float = 0.0
    dropped: int = 0
    failed: int = 0
    pending: int = 0
    pending_background: int = 0
    running: int = 0
    final_busy_s: float = 0.0
    final_audio_s: float = 0.0
    partial_busy_s: float = 0.0
    partials: int = 0
    partial_audio_s: float = 0.0
    first_partials: int = 0
    first_partial_busy_s: float = 0.0
    revisions_held_s: float = 0.0
    finals: int = 0
    workers: int = 1


class _Signal:
    """Wakes idle workers when a job arrives on either channel."""

    def __init__(self) -> None:
        self._event = trio.Event()

    def set(self) -> None:
        self._event.set()

    async def wait(self) -> None:
        await self._event.wait()
        if self._event.is_set():  # the first to wake re-arms; every woken worker re-checks
            self._event = trio.Event()


class Transcriber(Protocol):
    """What a session or a file asks of the transcriber: a `TranscriberHandle`, or a fake."""

    async def transcribe(
        self,
        request: Request,
        *,
        priority: Priority = "final",
        deadline: float | None = None,
        latest: Latest | None = None,
    ) -> Result: ...


class TranscriberHandle:
    """What sessions hold: submit work, read statistics."""

    def __init__(
        self,
        jobs: trio.MemorySendChannel[Job],
        background: trio.MemorySendChannel[Job],
        arrived: _Signal,
        counters: _Counters,
    ) -> None:
        self._jobs = jobs
        self._background = background
        self._arrived = arrived
        self._counters = counters

    async def transcribe(
        self,
        request: Request,
        *,
        priority: Priority = "final",
        deadline: float | None = None,
        latest: Latest | None = None,
    ) -> Result:
        """Queue `request` (waiting while the queue is full) and wait for its result.

        A revision (`partial`) runs by its `deadline` (trio clock; default: now), and
        `latest`, when given, is asked for a newer request as the job is taken into a batch.
        Cancelling the caller abandons the job: the actor drops it before the model sees it.
        """
        now = trio.current_time()
        job = Job(request, priority, now, now if deadline is None else deadline, latest)
        channel = self._background if priority == "background" else self._jobs
        try:
            await channel.send(job)
        except (trio.ClosedResourceError, trio.BrokenResourceError):
            raise TranscriberClosed("the transcriber is not running") from None
        self._arrived.set()
        try:
            await job.done.wait()
        finally:
            if not job.done.is_set():
                job.abandoned = True
        if job.error is not None:
            if isinstance(job.error, TranscriberClosed):
                raise TranscriberClosed(str(job.error))
            raise TranscriptionFailed(f"{type(job.error).__name__}: {job.error}") from job.error
        assert job.result is not None
        return job.result

    def statistics(self) -> TranscriberStatistics:
        counters = self._counters
        return TranscriberStatistics(
            batches=counters.batches,
            items=counters.items,
            batch_sizes=dict(sorted(counters.batch_sizes.items())),
            queue=self._jobs.statistics().current_buffer_used + counters.pending,
            background_queue=(
                self._background.statistics().current_buffer_used + counters.pending_background
            ),
            busy_s=round(counters.busy_s, 3),
            dropped=counters.dropped,
            failed=counters.failed,
            running=counters.running,
            final_busy_s=round(counters.final_busy_s, 3),
            final_audio_s=round(counters.final_audio_s, 3),
            partial_busy_s=round(counters.partial_busy_s, 3),
            partials=counters.partials,
            partial_audio_s=round(counters.partial_audio_s, 3),
            first_partials=counters.first_partials,
            first_partial_busy_s=round(counters.first_partial_busy_s, 3),
            revisions_held_s=round(counters.revisions_held_s, 3),
            finals=counters.finals,
            workers=counters.workers,
        )


@asynccontextmanager
async def open_transcriber(
    model: SpeechModel, config: TranscriberConfig = TranscriberConfig()
) -> AsyncIterator[TranscriberHandle]:
    jobs_send, jobs_recv = trio.open_memory_channel[Job](config.queue_size)
    background_send, background_recv = trio.open_memory_channel[Job](config.background_queue_size)
    queues = _Queues(jobs_recv, background_recv, _Signal())
    counters = _Counters(workers=max(1, config.workers))
    limiter = trio.CapacityLimiter(max(1, config.workers))
    budget = Budget.of(
        config.partial_share, config.partial_burst_s, counters.workers, trio.current_time()
    )
    pending: list[Job] = []  # taken from the channels, not yet in a batch; shared by the workers
    with jobs_recv, background_recv:
        try:
            async with trio.open_nursery() as nursery:
                for _ in range(max(1, config.workers)):
                    nursery.start_soon(
                        _serve_batches, model, queues, pending, limiter, config, counters, budget
                    )
                try:
                    with jobs_send, background_send:
                        yield TranscriberHandle(
                            jobs_send, background_send, queues.arrived, counters
                        )
                finally:
                    queues.arrived.set()  # idle workers see the channels closed and finish
        except BaseException as error:
            closed = TranscriberClosed(f"the transcriber stopped: {error!r}")
            for job in pending:
                job.finish(error=closed)
            _fail_waiting(jobs_recv, closed)
            _fail_waiting(background_recv, closed)
            raise


@attrs.frozen
class _Queues:
    live: trio.MemoryReceiveChannel[Job]
    background: trio.MemoryReceiveChannel[Job]
    arrived: _Signal


async def _serve_batches(
    model: SpeechModel,
    queues: _Queues,
    pending: list[Job],
    limiter: trio.CapacityLimiter,
    config: TranscriberConfig,
    counters: _Counters,
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
        held_s = 0.0 if budget is None or draining else budget.wait_s(trio.current_time())
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


def _fail_waiting(jobs: trio.MemoryReceiveChannel[Job], error: TranscriberClosed) -> None:
    while True:
        try:
            jobs.receive_nowait().finish(error=error)
        except (trio.WouldBlock, trio.EndOfChannel, trio.ClosedResourceError):
            return


async def _run_batch(
    model: SpeechModel,
    batch: list[Job],
    limiter: trio.CapacityLimiter,
    counters: _Counters,
    budget: Budget | None = None,
) -> None:
    try:
        results = await _call_model(model, batch, limiter, counters, budget)
    except Exception as error:
        if len(batch) == 1:
            counters.failed += 1
            batch[0].finish(error=error)
            return
        for job in batch:  # isolate the request that broke the batch
            await _run_batch(model, [job], limiter, counters, budget)
        return
    counters.batches += 1
    counters.items += len(batch)
    counters.batch_sizes[len(batch)] += 1
    for job, result in zip(batch, results, strict=True):
        job.finish(result=result)


async def _call_model(
    model: SpeechModel,
    batch: list[Job],
    limiter: trio.CapacityLimiter,
    counters: _Counters,
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
        elapsed = trio.current_time() - started
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
    if len(results) != len(batch):
        raise RuntimeError(f"model returned {len(results)} results for {len(batch)} requests")
    return results
