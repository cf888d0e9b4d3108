"""Which waiting jobs run next: the transcriber's policy, sans-IO (no task of its own).

The workers of `actors/transcriber/actor.py` call `next_batch` on the trio thread with the jobs
that wait. Live work comes in three kinds, each with its own bound:

- **finals** (one per utterance, the text that is kept) and **first drafts** (the first text a
  speaker sees of an utterance) are bounded in latency: oldest first, a first draft waiting
  only behind finals asked for less than `FIRST_DEFERS_S` after it;
- **revisions** (later drafts of an open utterance) are what keeps the text moving while a
  person speaks. Each carries a deadline, the wall time at which its session's caption delay
  (how far the newest text shown is behind the audio) reaches the server's target; they run
  when no final or first draft waits, earliest deadline first, so the most overdue session
  goes next whatever its utterance's length, and under overload every session's captions
  fall behind together rather than a few starving;
- **background** work (uploads) runs only when no live work may.

While only revisions wait they run no sooner than `TranscriberConfig.revision_lead_s` before
the earliest deadline (`revision_wait_s`), so a final or first draft that arrives finds a
worker free.

A revisions' budget (`Budget`, `TranscriberConfig.partial_share`) can cap their share of the
model time; off by default, since admission prices the revisions that keep every session's
captions under target (`service/policy/capacity.py`).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Protocol, TypeVar

import attrs

from actors.model.port import Priority

FIRST_DEFERS_S = 0.5  # a first partial waits behind finals asked for up to this much after it
PRIORITIES = frozenset({"final", "first_partial", "partial", "background"})
HELD_BACK = frozenset({"partial", "background"})  # may wait while uploads run (or the budget)


class Waiting(Protocol):
    """What the policy reads of a job (`actors.transcriber.actor.Job`)."""

    @property
    def priority(self) -> Priority: ...

    @property
    def submitted(self) -> float: ...

    @property
    def deadline(self) -> float: ...


J = TypeVar("J", bound="Waiting")


@attrs.frozen
class BatchSizes:
    finals: int = 8
    drafts: int = 8
    background: int = 2


def next_batch(
    jobs: Sequence[J], sizes: BatchSizes, *, revisions: bool = True
) -> tuple[list[J], list[J]]:
    """The next batch and the rest, in their order.

    Finals share a batch with nothing; first drafts with each other and, when no final waits,
    with revisions (earliest deadline first); background work only when no live work may run
    (revisions may not while `revisions` is False: their budget is spent). A job of no known
    priority raises `KeyError`: the worker that cannot rank it dies, and the actor with it."""
    for job in jobs:
        if job.priority not in PRIORITIES:
            raise KeyError(f"no such priority: {job.priority!r}")
    finals = _oldest([job for job in jobs if job.priority == "final"])
    firsts = _oldest([job for job in jobs if job.priority == "first_partial"])
    later = (
        sorted((job for job in jobs if job.priority == "partial"), key=_deadline)
        if revisions
        else []
    )
    if finals and (not firsts or finals[0].submitted <= firsts[0].submitted + FIRST_DEFERS_S):
        batch = finals[: sizes.finals]
    elif firsts or later:
        drafts = firsts if finals else [*firsts, *later]
        batch = drafts[: sizes.drafts]
    else:
        batch = _oldest([job for job in jobs if job.priority == "background"])
        batch = batch[: sizes.background]
    taken = {id(job) for job in batch}
    return batch, [job for job in jobs if id(job) not in taken]


def revision_wait_s(
    jobs: Sequence[Waiting], sizes: BatchSizes, lead_s: float | None, now: float
) -> float:
    """How long the revisions waiting may wait: while only revisions wait, fewer than a batch
    of them, until `lead_s` before the earliest deadline. A worker that would have started a
    revision early is then free when a final or a first draft arrives, and the revision, when
    it runs, decodes its session's newest audio (measured: docs/benchmarks.md)."""
    if lead_s is None or not 0 < len(jobs) < sizes.drafts:
        return 0.0
    if any(job.priority != "partial" for job in jobs):
        return 0.0
    return max(0.0, min(job.deadline for job in jobs) - lead_s - now)


def _oldest(jobs: list[J]) -> list[J]:
    return sorted(jobs, key=_submitted)


def _submitted(job: Waiting) -> float:
    return job.submitted


def _deadline(job: Waiting) -> tuple[float, float]:
    return job.deadline, job.submitted


@attrs.define
class Budget:
    """The revisions' share of model time: a token bucket in model seconds, shared by the
    workers (all on the trio thread)."""

    rate: float  # model seconds earned per wall second (share x workers)
    burst_s: float
    balance: float
    updated: float

    @classmethod
    def of(cls, share: float | None, burst_s: float, workers: int, now: float) -> Budget | None:
        if share is None:
            return None
        rate = max(0.0, share) * max(1, workers)
        burst = max(0.0, burst_s)
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
