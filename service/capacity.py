"""Admission by measured capacity: refuse a new session before anyone falls behind.

`CapacityMeter` is a plain record owned by the app (one per transcriber), updated lazily from
the transcriber's counters whenever admission or `/health` asks, at most once a second; no task
of its own. It learns two rates, each a time-weighted moving average (`halflife_s`):

- **cost**: model seconds of live work (finals and the partials that led to them) per second
  of final audio (`live_busy_s / final_audio_s` between two looks). With `workers` model
  workers the model can serve `workers / cost` seconds of speech per wall second;
  `utilization` (default 0.85) of that is what admission plans for. Partials thin out as load
  grows (one in flight per session, finals first), so the cost measured at moderate load falls
  and the capacity rises with it: admission starts prudent and learns.
- **speech per session**: the share of live sessions' audio that the segmenter cut into
  utterances (speech seconds ÷ audio seconds, over sessions that have sent `settle_s` or more);
  clients stream in real time, so that is the speech each session sends per wall second.
  Until it has been measured, `default_speech_fraction` (0.8) is assumed, so a burst of new
  sessions that have not spoken yet does not look free.

A new session fits when `(live + 1) × speech per session ≤ capacity`. Until the first finals
have been measured nothing is refused here (the lag rule in `service/admission.py` still is).
`statistics()` is what `/health` and `/metrics` show, `headroom` included: how many more
sessions fit now.
"""

from __future__ import annotations

import math
from collections.abc import Iterable

import attrs


@attrs.frozen
class CapacityStatistics:
    cost: float | None  # model seconds of live work per second of final audio
    capacity_speech_s_per_s: float | None  # what admission plans to serve
    offered_speech_s_per_s: float  # what live sessions send, by the speech-per-session estimate
    speech_per_session: float
    live_sessions: int
    headroom: int | None  # more sessions that fit now; None while not yet measured


@attrs.define
class CapacityMeter:
    workers: int = 1
    utilization: float = 0.85
    default_speech_fraction: float = 0.8
    halflife_s: float = 30.0
    min_audio_s: float = 2.0  # final audio between two looks before a cost sample counts
    settle_s: float = 5.0  # sessions younger than this tell nothing of their speech share
    cost: float | None = None
    speech_fraction: float | None = None
    _last_time: float | None = None
    _last_busy: float = 0.0
    _last_audio: float = 0.0

    def observe(
        self,
        now: float,
        live_busy_s: float,
        final_audio_s: float,
        sessions: Iterable[tuple[float, float]] = (),
    ) -> None:
        """Fold in the counters as they are at `now` (seconds, monotonic); `sessions` gives
        each live session's (speech seconds, audio seconds) so far."""
        if self._last_time is None:
            self._last_time, self._last_busy, self._last_audio = now, live_busy_s, final_audio_s
            return
        elapsed = now - self._last_time
        if elapsed < 1.0:
            return
        audio = final_audio_s - self._last_audio
        busy = live_busy_s - self._last_busy
        weight = 1.0 - math.exp(-elapsed * math.log(2) / self.halflife_s)
        if audio >= self.min_audio_s and busy > 0:
            sample = busy / audio
            self.cost = sample if self.cost is None else self.cost + weight * (sample - self.cost)
        settled = [(speech, heard) for speech, heard in sessions if heard >= self.settle_s]
        if settled:
            share = min(1.0, sum(s for s, _ in settled) / sum(h for _, h in settled))
            previous = self.speech_fraction
            self.speech_fraction = (
                share if previous is None else previous + weight * (share - previous)
            )
        self._last_time, self._last_busy, self._last_audio = now, live_busy_s, final_audio_s

    @property
    def per_session(self) -> float:
        """Seconds of speech per wall second that one more session is expected to send."""
        if self.speech_fraction is None:
            return self.default_speech_fraction
        return max(self.speech_fraction, 0.05)

    @property
    def capacity(self) -> float | None:
        """Seconds of speech per wall second that admission plans to serve."""
        if self.cost is None or self.cost <= 0:
            return None
        return self.workers * self.utilization / self.cost

    def headroom(self, live: int) -> int | None:
        capacity = self.capacity
        if capacity is None:
            return None
        return max(0, math.floor(capacity / self.per_session + 1e-9) - live)

    def admits(self, live: int) -> bool:
        """Would one more session fit? True while nothing has been measured."""
        headroom = self.headroom(live)
        return headroom is None or headroom >= 1

    def statistics(self, live: int) -> CapacityStatistics:
        capacity = self.capacity
        return CapacityStatistics(
            cost=None if self.cost is None else round(self.cost, 4),
            capacity_speech_s_per_s=None if capacity is None else round(capacity, 3),
            offered_speech_s_per_s=round(live * self.per_session, 3),
            speech_per_session=round(self.per_session, 3),
            live_sessions=live,
            headroom=self.headroom(live),
        )
