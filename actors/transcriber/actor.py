"""The transcriber actor: one per loaded model, shared by every session and upload.

Ownership: `open_transcriber()` opens a nursery that owns `config.workers` tasks
(`workers.serve_batches`, one per model worker) and yields a `TranscriberHandle`. Callers put `Job`s
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

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Protocol

import trio

from actors.model.port import Priority, Request, Result, SpeechModel
from actors.reply import snapshot
from actors.transcriber.jobs import (
    Counters,
    Job,
    Latest,
    TranscriberClosed,
    TranscriberConfig,
    TranscriberStatistics,
    TranscriptionFailed,
)
from actors.transcriber.schedule import Budget
from actors.transcriber.workers import Queues, Signal, fail_waiting, serve_batches

__all__ = [
    "Job",
    "Latest",
    "Transcriber",
    "TranscriberClosed",
    "TranscriberConfig",
    "TranscriberHandle",
    "TranscriberStatistics",
    "TranscriptionFailed",
    "open_transcriber",
]

_DEFAULTS = TranscriberConfig()


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
        arrived: Signal,
        counters: Counters,
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
            return await job.reply.wait()
        except TranscriberClosed as closed:
            raise TranscriberClosed(str(closed)) from None
        except Exception as error:
            raise TranscriptionFailed(f"{type(error).__name__}: {error}") from error
        finally:
            if not job.reply.done:
                job.abandoned = True

    def statistics(self) -> TranscriberStatistics:
        counters = self._counters
        return snapshot(
            TranscriberStatistics,
            counters,
            batch_sizes=dict(sorted(counters.batch_sizes.items())),
            queue=self._jobs.statistics().current_buffer_used + counters.pending,
            background_queue=(
                self._background.statistics().current_buffer_used + counters.pending_background
            ),
        )


@asynccontextmanager
async def open_transcriber(
    model: SpeechModel, config: TranscriberConfig = _DEFAULTS
) -> AsyncIterator[TranscriberHandle]:
    jobs_send, jobs_recv = trio.open_memory_channel[Job](config.queue_size)
    background_send, background_recv = trio.open_memory_channel[Job](config.background_queue_size)
    queues = Queues(jobs_recv, background_recv, Signal())
    counters = Counters(workers=max(1, config.workers))
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
                        serve_batches, model, queues, pending, limiter, config, counters, budget
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
                job.reply.fail(closed)
            fail_waiting(jobs_recv, closed)
            fail_waiting(background_recv, closed)
            raise
