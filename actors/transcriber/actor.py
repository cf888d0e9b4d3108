"""The transcriber actor: one per loaded model, shared by every session and upload.

Ownership: `open_transcriber()` opens a nursery that owns `config.workers` tasks
(`_serve_batches`, one per model worker) and yields a `TranscriberHandle`. Callers put `Job`s
into a bounded channel (a full queue blocks them: that is the backpressure that reaches each
session's pipeline). The workers share one list of pending jobs (all on the trio thread, so no
lock): each idle worker takes what is waiting, orders it (finals and first partials oldest
first, then other partials), drops jobs whose caller has gone, and runs one batch in a worker thread
(`trio.to_thread.run_sync` with a `CapacityLimiter(workers)`; never abandoned on cancel). A job
is taken by exactly one worker. The model must allow `workers` concurrent calls (the Whisper
adapter loads CTranslate2 with as many `inter_threads`, each with its share of the threads).
It never waits to fill a batch: an idle model takes whatever is there. Uploads submit
`background` work into a channel of their own (`background_queue_size`), which the workers
read only when no live work waits, one batch of at most `background_batch_size` at a time: a
long file delays a live final by one small batch at most, and uploads never fill the live
queue (which admission watches) nor stand in it ahead of a live final.

Revisions (`partial` jobs: a second or later draft of an open utterance) have a budget when
`partial_share` is set: a token bucket that earns `partial_share` of every worker's time and
is spent by the revisions' model time (a batch that mixes first drafts and revisions spends
the revisions' share of it). While it is empty a worker leaves revisions waiting (their
sessions' newer drafts replace them meanwhile) and runs only finals, first drafts and uploads;
so as sessions grow each one's revisions come further apart instead of crowding out the work
every session needs, and admission need not price them (`service/policy/capacity.py`). First
drafts are never held back: they are what shows a speaker that they are heard.

A model error fails only the jobs of the batch that raised it: the batch is retried one job at a
time, so one bad request cannot fail its neighbours, and the jobs that still fail get
`TranscriptionFailed`. Leaving the `async with` closes the queue; the actor finishes what is
queued and exits. If the actor itself dies, every waiting caller gets `TranscriberClosed` and
the error surfaces to whoever opened it (the app lifespan).
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Protocol

import attrs
import trio

from actors.model.port import SAMPLE_RATE, Priority, Request, Result, SpeechModel


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


@attrs.define(eq=False)
class Job:
    request: Request
    priority: Priority
    submitted: float
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

    async def transcribe(self, request: Request, *, priority: Priority = "final") -> Result: ...


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

    async def transcribe(self, request: Request, *, priority: Priority = "final") -> Result:
        """Queue `request` (waiting while the queue is full) and wait for its result.

        Cancelling the caller abandons the job: the actor drops it before the model sees it.
        """
        job = Job(request, priority, trio.current_time())
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
    budget = _Budget.of(config, trio.current_time())
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
    budget: _Budget | None,
) -> None:
    """One model worker: take the most urgent batch from the shared pending list, run it."""
    while True:
        live_open = _take_waiting(queues.live, pending, config.queue_size)
        background_open = True
        if all(job.priority in _HELD_BACK for job in pending):  # no live work that may run
            room = config.background_batch_size - sum(j.priority == "background" for j in pending)
            background_open = _take_waiting(queues.background, pending, len(pending) + room)
        kept = [job for job in pending if not job.abandoned]
        counters.dropped += len(pending) - len(kept)
        pending[:] = kept
        draining = not (live_open or background_open)  # closing: whatever waits runs
        held_s = 0.0 if budget is None or draining else budget.wait_s(trio.current_time())
        batch, rest = _next_batch(kept, config, revisions=held_s <= 0)
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
        await _run_batch(model, batch, limiter, counters, budget)


@attrs.define
class _Budget:
    """The revisions' share of model time: a token bucket in model seconds, shared by the
    workers (all on the trio thread)."""

    rate: float  # model seconds earned per wall second (share x workers)
    burst_s: float
    balance: float
    updated: float

    @classmethod
    def of(cls, config: TranscriberConfig, now: float) -> _Budget | None:
        if config.partial_share is None:
            return None
        rate = max(0.0, config.partial_share) * max(1, config.workers)
        burst = max(0.0, config.partial_burst_s)
        return cls(rate=rate, burst_s=burst, balance=burst, updated=now)  # starts saved up

    def _refill(self, now: float) -> None:
        self.balance = min(self.burst_s, self.balance + (now - self.updated) * self.rate)
        self.updated = now

    def wait_s(self, now: float) -> float:
        """0 when revisions may run now, else how long until they may (inf: never)."""
        self._refill(now)
        if self.balance > 0:
            return 0.0
        return math.inf if self.rate <= 0 else max(1e-3, -self.balance / self.rate)

    def spend(self, seconds: float, now: float) -> None:
        self._refill(now)
        self.balance -= seconds


_RANK = {"first_partial": 0, "final": 0, "partial": 1, "background": 2}
FIRST_DEFERS_S = 0.5  # a first partial waits behind finals asked for up to this much after it
_HELD_BACK = {"partial", "background"}  # what may wait while uploads run (revisions on budget)


def _next_batch(
    jobs: list[Job], config: TranscriberConfig, *, revisions: bool = True
) -> tuple[list[Job], list[Job]]:
    """Finals and first partials, then partials (only when `revisions`: their budget is not
    spent), oldest first; background work only when no live work may run.

    A first partial is a short draft (tiny.en on 2 cores: 0.04 model-s against 0.17 for a
    final) and the first text a speaker sees, so it waits only behind finals asked for less
    than `FIRST_DEFERS_S` after it. Measured with 96 tiny.en sessions offered to 2 cores
    (about 49 admitted at a time): behind every final, p95 first text 1.99 s (final 1.23 s);
    strictly oldest first, p95 final 2.29 s (first text 0.76 s); deferring 0.5 s, 1.64 s and
    0.81 s. Finals share a batch with nothing; first partials with each other and, when no
    final waits, with revisions. Returns (batch, the rest)."""
    jobs.sort(key=lambda job: (_RANK[job.priority], job.submitted))
    finals = [job for job in jobs if job.priority == "final"]
    firsts = [job for job in jobs if job.priority == "first_partial"]
    later = [job for job in jobs if job.priority == "partial"] if revisions else []
    if finals and (not firsts or finals[0].submitted <= firsts[0].submitted + FIRST_DEFERS_S):
        batch = finals[: config.max_batch_size]
    elif firsts or later:
        drafts = firsts if finals else [*firsts, *later]
        batch = drafts[: config.partial_batch_size]
    else:
        background = [job for job in jobs if job.priority == "background"]
        batch = background[: config.background_batch_size]
    taken = {id(job) for job in batch}
    return batch, [job for job in jobs if id(job) not in taken]


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
    budget: _Budget | None = None,
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
    budget: _Budget | None,
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
