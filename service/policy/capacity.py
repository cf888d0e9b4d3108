"""Admission by measured capacity: refuse a new session before anyone falls behind.

`CapacityMeter` is a plain record owned by the app (one per transcriber), updated lazily from
the transcriber's counters whenever admission or `/health` asks, at most once a second; no task
of its own. It learns, each as a time-weighted moving average (`halflife_s`):

- **final cost**: model seconds per second of final audio (`final_busy_s / final_audio_s`
  between two looks). Finals are what every session must get, whatever the load.
- **first draft cost**: model seconds per first draft of an utterance (its share of the
  batches it ran in). Every utterance gets one, whatever the load: it is the first text a
  speaker sees.
- **revision cost**: model seconds per later draft (its share of its batch; tail drafts
  batched across sessions, `service/session/drafting.py`). Liveness is priced: every second
  of speech needs one revision per `revision_every_s` (the app sets the sessions' draft
  cadence, `partial_interval_s`), or its text stands still while the person speaks.
- **speech per session**: the share of live sessions' audio that the segmenter cut into
  utterances (speech seconds ÷ audio seconds, over sessions that have sent `settle_s` or more);
  clients stream in real time, so that is the speech each session sends per wall second.
  Until measured, `default_speech_fraction` (0.8) is assumed, so a burst of new sessions that
  have not spoken yet does not look free.

Cost per second of speech = final cost + first draft cost ÷ mean utterance + revision cost ×
(1 ÷ `revision_every_s` − 1 ÷ mean utterance): an utterance asks for a draft every
`revision_every_s` of it, and the first of them is its first draft, priced already (at 8 live
tiny.en sessions the workers ran 1.12 revisions per second of speech, where 1 ÷ 0.8 s would have
priced 1.25; measured: docs/benchmarks.md). With `workers`
model workers the model serves `workers × utilization / cost` seconds of speech per wall
second (`utilization`, which the app sets from `CHORUS_ADMISSION_UTILIZATION`, 0.75), and a
new session fits when `(live + 1) × speech per session` stays within that. Busy time is wall
time in the worker threads, which share the cores with the event loop, so it overstates what
a second of speech takes of a core (measured plans: docs/benchmarks.md).

Until it has seen `trust_audio_s` (30 s) of finals the meter trusts no cost (the first finals
are short and cheap) and admits up to `cold_sessions` live sessions (the app sets 8; None: no
limit). The lag rule and the latency guard in `service/session/admission.py` (which reads
how long finals take, `service/policy/latency.py`) still apply. `statistics()` is what
`/health` and `/metrics` show.
"""

from __future__ import annotations

import math
from collections.abc import Iterable

import attrs

from actors.transcriber.actor import TranscriberStatistics


@attrs.frozen
class CapacityStatistics:
    cost: float | None  # model seconds per second of speech, drafts included
    final_cost: float | None  # model seconds per second of final audio
    first_draft_cost: float | None  # model seconds per first draft of an utterance
    revision_cost: float | None  # model seconds per later draft
    utterance_s: float | None  # mean length of a final
    capacity_speech_s_per_s: float | None  # what admission plans to serve
    offered_speech_s_per_s: float  # what live sessions send, by the speech-per-session estimate
    speech_per_session: float
    live_sessions: int
    headroom: int | None  # more sessions that fit now; None while not yet measured
    # the p95 wait of recent finals and how many it is of (`service/policy/latency.py`; the
    # meter does not see them: `capacity_statistics` adds them); None below its minimum
    final_wait_p95_s: float | None = None
    final_waits: int = 0


@attrs.frozen
class Counters:
    """What the meter reads from the transcriber's statistics, cumulative."""

    final_busy_s: float = 0.0
    final_audio_s: float = 0.0
    first_partial_busy_s: float = 0.0
    first_partials: int = 0
    finals: int = 0
    revision_busy_s: float = 0.0
    revisions: int = 0

    @classmethod
    def of(cls, stats: TranscriberStatistics) -> Counters:
        return cls(
            final_busy_s=stats.final_busy_s,
            final_audio_s=stats.final_audio_s,
            first_partial_busy_s=stats.first_partial_busy_s,
            first_partials=stats.first_partials,
            finals=stats.finals,
            revision_busy_s=max(0.0, stats.partial_busy_s - stats.first_partial_busy_s),
            revisions=max(0, stats.partials - stats.first_partials),
        )


@attrs.define
class CapacityMeter:
    workers: int = 1
    utilization: float = 0.75
    default_speech_fraction: float = 0.8
    halflife_s: float = 30.0
    min_audio_s: float = 2.0  # final audio between two looks before a cost sample counts
    min_drafts: int = 3  # first drafts between two looks before a cost sample counts
    settle_s: float = 5.0  # sessions younger than this tell nothing of their speech share
    trust_audio_s: float = 30.0  # final audio seen before the costs are trusted at all
    cold_sessions: int | None = None  # live sessions admitted while no cost is trusted
    revision_every_s: float | None = None  # speech seconds per revision priced; None: none
    final_cost: float | None = None
    first_draft_cost: float | None = None
    revision_cost: float | None = None
    utterance_s: float | None = None
    speech_fraction: float | None = None
    _last_time: float | None = None
    _last: Counters = Counters()

    def observe(
        self, now: float, counters: Counters, sessions: Iterable[tuple[float, float]] = ()
    ) -> None:
        """Fold in the counters as they are at `now` (seconds, monotonic); `sessions` gives
        each live session's (speech seconds, audio seconds) so far."""
        if self._last_time is None:
            self._last_time, self._last = now, counters
            return
        elapsed = now - self._last_time
        if elapsed < 1.0:
            return
        weight = 1.0 - math.exp(-elapsed * math.log(2) / self.halflife_s)
        audio = counters.final_audio_s - self._last.final_audio_s
        busy = counters.final_busy_s - self._last.final_busy_s
        if audio >= self.min_audio_s and busy > 0:
            self.final_cost = _average(self.final_cost, busy / audio, weight)
            finals = counters.finals - self._last.finals
            if finals > 0:
                self.utterance_s = _average(self.utterance_s, audio / finals, weight)
        drafts = counters.first_partials - self._last.first_partials
        busy = counters.first_partial_busy_s - self._last.first_partial_busy_s
        if drafts >= self.min_drafts and busy > 0:
            self.first_draft_cost = _average(self.first_draft_cost, busy / drafts, weight)
        revisions = counters.revisions - self._last.revisions
        busy = counters.revision_busy_s - self._last.revision_busy_s
        if revisions >= self.min_drafts and busy > 0:
            self.revision_cost = _average(self.revision_cost, busy / revisions, weight)
        settled = [(speech, heard) for speech, heard in sessions if heard >= self.settle_s]
        if settled:
            share = min(1.0, sum(s for s, _ in settled) / sum(h for _, h in settled))
            self.speech_fraction = _average(self.speech_fraction, share, weight)
        self._last_time, self._last = now, counters

    @property
    def per_session(self) -> float:
        """Seconds of speech per wall second that one more session is expected to send."""
        if self.speech_fraction is None:
            return self.default_speech_fraction
        return max(self.speech_fraction, 0.05)

    @property
    def cost(self) -> float | None:
        """Model seconds per second of speech: its final, its utterance's first draft, and the
        revisions that keep its captions on target."""
        if self.final_cost is None or self._last.final_audio_s < self.trust_audio_s:
            return None
        cost = self.final_cost
        if self.first_draft_cost:
            cost += self.first_draft_cost * self.first_drafts_per_speech_s
        if self.revision_cost:
            cost += self.revision_cost * self.revisions_per_speech_s
        return cost

    @property
    def first_drafts_per_speech_s(self) -> float:
        """First drafts priced per second of speech: one per utterance, once both are
        measured."""
        return 1.0 / self.utterance_s if self.first_draft_cost and self.utterance_s else 0.0

    @property
    def revisions_per_speech_s(self) -> float:
        """Revisions priced per second of speech: one per `revision_every_s`, less the first
        drafts priced; none without a cadence (the naive server drafts none)."""
        if not self.revision_every_s:
            return 0.0
        return max(0.0, 1.0 / self.revision_every_s - self.first_drafts_per_speech_s)

    @property
    def capacity(self) -> float | None:
        """Seconds of speech per wall second that admission plans to serve."""
        cost = self.cost
        if cost is None or cost <= 0:
            return None
        return self.workers * self.utilization / cost

    def headroom(self, live: int) -> int | None:
        capacity = self.capacity
        if capacity is None:
            return None
        return max(0, math.floor(capacity / self.per_session + 1e-9) - live)

    def allowance(self, live: int) -> int | None:
        """How many more sessions fit: the headroom, or while nothing is trusted what is left
        of `cold_sessions`; None: no limit (cold, without `cold_sessions`)."""
        headroom = self.headroom(live)
        if headroom is None and self.cold_sessions is not None:
            return max(0, self.cold_sessions - live)
        return headroom

    def admits(self, live: int) -> bool:
        """Would one more session fit? While nothing is trusted: up to `cold_sessions`."""
        allowance = self.allowance(live)
        return allowance is None or allowance >= 1

    def statistics(self, live: int) -> CapacityStatistics:
        return CapacityStatistics(
            cost=_rounded(self.cost, 4),
            final_cost=_rounded(self.final_cost, 4),
            first_draft_cost=_rounded(self.first_draft_cost, 4),
            revision_cost=_rounded(self.revision_cost, 4),
            utterance_s=_rounded(self.utterance_s, 3),
            capacity_speech_s_per_s=_rounded(self.capacity, 3),
            offered_speech_s_per_s=round(live * self.per_session, 3),
            speech_per_session=round(self.per_session, 3),
            live_sessions=live,
            headroom=self.headroom(live),
        )


def _average(previous: float | None, sample: float, weight: float) -> float:
    return sample if previous is None else previous + weight * (sample - previous)


def _rounded(value: float | None, digits: int) -> float | None:
    return None if value is None else round(value, digits)
