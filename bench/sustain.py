"""Sustained load (DESIGN §8: every N live together for at least a minute, not a ramp): how long
each count's conversations are, when all of a run's sessions were live at once, and which count
the capacity search tries between the last that held and the first that failed.

Pure functions, no tasks. Clients start `stagger_s` apart, so a run ramps up for
`stagger_s × (N - 1)` and ramps down as the sessions end; `conversation_seconds` makes the
conversations long enough that the first client is still sending `together_s` after the last
one started. `live_window` measures that window afterwards from the clients' own send times,
and `bench.run` scores latencies only inside it (`--score together`, the default): the ramps
carry less load than N and would flatter the server.
"""

from __future__ import annotations

from collections.abc import Sequence

from bench.client import SessionRecord
from bench.timeline import Window

TOGETHER_S = 60.0  # every N live together at least this long (DESIGN §8)
# On top of the stagger and `together_s`: handshakes under load, and the first chunk, which is
# sent once its 0.1 s of audio would have been captured.
TOGETHER_MARGIN_S = 2.0


def conversation_seconds(
    clients: int,
    *,
    seconds: float,
    stagger_s: float,
    together_s: float = TOGETHER_S,
    speed: float = 1.0,
    margin_s: float = TOGETHER_MARGIN_S,
) -> float:
    """Audio per conversation at N = `clients`: at least `seconds`, and with `together_s` > 0
    long enough that all N are live together that long (`speed` times the wall time, since
    audio goes out `speed` times faster than real time)."""
    if together_s <= 0:
        return seconds
    wall = stagger_s * max(clients - 1, 0) + together_s + margin_s
    return max(seconds, speed * wall)


def planned_together_s(durations: Sequence[float], *, stagger_s: float, speed: float) -> float:
    """How long the plan keeps every client live at once: client i starts at i × `stagger_s`
    and sends its audio for duration ÷ `speed`; negative when they never all overlap."""
    if not durations:
        return 0.0
    last_start = stagger_s * (len(durations) - 1)
    first_end = min(
        index * stagger_s + duration / speed for index, duration in enumerate(durations)
    )
    return first_end - last_start


def live_window(records: Sequence[SessionRecord]) -> Window | None:
    """From the last session's first chunk to the first session's last chunk, among the sessions
    that sent audio (its `seconds` is negative when they never all overlapped); None when
    none did."""
    live = [record for record in records if record.sent_at]
    if not live:
        return None
    return Window(
        start=max(record.sent_at[0] for record in live),
        end=min(record.sent_at[-1] for record in live),
    )


def refinement_step(held: int, failed: int | None) -> int | None:
    """The count to try between the capacity `held` and the first count above it that `failed`:
    their midpoint, when some count lies between them; None when there is nothing to refine
    (nothing failed, nothing held, or they are neighbours)."""
    if failed is None or held <= 0 or failed - held <= 1:
        return None
    return (held + failed) // 2
