"""How long finals take now, across every live session: what admission's latency guard reads.

`FinalWaits` is a plain record owned by the app (one per server, in `SessionServices`), with no
task of its own and no I/O: each session's transcriber client (`service/session/transcribing.py`)
calls `record(now, wait_s)` once a final is out, `wait_s` being the wall time from when the
session asked for that final (the segmenter ended the utterance) to when its frame was handed to
the session's writer. Admission (`service/session/admission.py`, `finals_slow`) and `/health`
and `/metrics` read `percentile(now)`. All on the app's one trio thread, so no lock.

The capacity meter (`service/policy/capacity.py`) plans by throughput; this sees the one figure
a speaker is promised, how soon a final comes, which a throughput plan can get wrong when the
model is slower per call than its busy time says (a slow CPU, a bigger model). It keeps the
waits of the last `window_s` seconds, at most `max_samples` of them (the oldest go first), and
answers the `quantile` of them once it holds `min_samples`: a few slow finals are not a trend,
and a server whose sessions have gone quiet forgets what it saw once the window has passed.
"""

from __future__ import annotations

import math
from collections import deque

import attrs


@attrs.define
class FinalWaits:
    window_s: float = 30.0  # waits older than this are forgotten
    max_samples: int = 512  # at most this many kept, the oldest dropped first
    min_samples: int = 8  # fewer than this in the window: no answer
    quantile: float = 0.95
    _samples: deque[tuple[float, float]] = attrs.field(init=False)  # (when, wait), oldest first

    @_samples.default
    def _bounded(self) -> deque[tuple[float, float]]:
        return deque(maxlen=self.max_samples)

    def record(self, now: float, wait_s: float) -> None:
        """One final is out at `now` (seconds, monotonic, never earlier than the last call's),
        `wait_s` after it was asked for."""
        self._samples.append((now, max(0.0, wait_s)))
        self._expire(now)

    def waits(self, now: float) -> list[float]:
        """The waits recorded in the window that ends at `now`, oldest first."""
        self._expire(now)
        return [wait for _, wait in self._samples]

    def percentile(self, now: float) -> float | None:
        """The `quantile` of the waits in the window (nearest rank), or None with fewer than
        `min_samples` of them."""
        waits = sorted(self.waits(now))
        if len(waits) < self.min_samples:
            return None
        rank = max(1, math.ceil(self.quantile * len(waits)))
        return waits[rank - 1]

    def _expire(self, now: float) -> None:
        while self._samples and self._samples[0][0] < now - self.window_s:
            self._samples.popleft()
