"""What the transcriber's callers and its workers share: the job record, the configuration,
the errors a caller may see, and the counters behind `statistics()`.

A `Job` is made by `TranscriberHandle.transcribe` (`actors/transcriber/actor.py`) on the
caller's side and answered through its `Reply` by exactly one worker
(`actors/transcriber/workers.py`); `abandoned` is the caller's word that nobody waits any more.
All of it lives on the trio thread, so nothing here is locked.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable

import attrs

from actors.model.port import Priority, Request, Result
from actors.reply import Reply
from actors.transcriber.schedule import BatchSizes


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
    # while only revisions wait (fewer than a batch), they wait until this long before the
    # earliest one's deadline, leaving the workers free for finals and first drafts; None:
    # they run as soon as a worker is free (the server sets it: `Settings.revision_lead_s`)
    revision_lead_s: float | None = None

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
    # worker time spent holding revisions back: their budget spent, or their lead not reached
    revisions_held_s: float = 0.0
    finals: int = 0  # live finals answered
    workers: int = 1
    background_queue: int = 0  # upload jobs waiting

    @property
    def mean_batch_size(self) -> float:
        return self.items / self.batches if self.batches else 0.0

    @property
    def model_s(self) -> dict[str, float]:
        """Model time so far by what it went to: live finals, first drafts of an utterance,
        revisions (later drafts) and the rest (uploads)."""
        revision = max(0.0, self.partial_busy_s - self.first_partial_busy_s)
        rest = max(0.0, self.busy_s - self.final_busy_s - self.partial_busy_s)
        return {
            "final": round(self.final_busy_s, 3),
            "first_draft": round(self.first_partial_busy_s, 3),
            "revision": round(revision, 3),
            "other": round(rest, 3),
        }


Latest = Callable[[], Request | None]
"""Called when a job is taken into a batch: a newer request to run instead, or None."""


@attrs.define(eq=False)
class Job:
    request: Request
    priority: Priority
    submitted: float
    deadline: float = 0.0  # revisions: when their session's captions fall behind target
    latest: Latest | None = None
    reply: Reply[Result] = attrs.field(factory=Reply)
    abandoned: bool = False


@attrs.define
class Counters:
    """What the workers count, mirrored by `TranscriberHandle.statistics()`."""

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
