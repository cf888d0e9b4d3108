"""`GET /metrics`: Prometheus text exposition of the actors' statistics.

Read-only: it asks each actor's handle in the app's `Runtime` for `statistics()` at request
time; nothing here owns a task or keeps state between scrapes. While the lifespan is not
running there are no actors to ask: only the (zero) session figures are shown.

On a server with API keys the figures are for an admin key only (`CHORUS_ADMIN_KEYS`): they
count every tenant's sessions and requests, which a tenant must not be able to count (issue 21,
finding 9), and a scraper is an operator's, not a tenant's. Without a key: 401; with a
tenant's key: 403. A server without keys answers everyone, as before.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response

from actors.transcriber.actor import TranscriberStatistics
from service.policy.caller import Caller
from service.policy.refusal import Refusal
from service.runtime import NotRunning, Runtime
from service.session.admission import capacity_statistics
from service.session.handle import SessionHandle

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"


def _line(
    name: str,
    value: float,
    help_text: str,
    kind: str = "gauge",
    labels: dict[str, str] | None = None,
) -> list[str]:
    label = ",".join(f'{key}="{value}"' for key, value in (labels or {}).items())
    return [
        f"# HELP chorus_{name} {help_text}",
        f"# TYPE chorus_{name} {kind}",
        f"chorus_{name}{{{label}}} {value}" if label else f"chorus_{name} {value}",
    ]


def _family(
    name: str, help_text: str, kind: str, label: str, values: Mapping[Any, float]
) -> list[str]:
    """One metric with a sample per value of one label (`values`: label value -> sample)."""
    return [
        f"# HELP chorus_{name} {help_text}",
        f"# TYPE chorus_{name} {kind}",
        *(f'chorus_{name}{{{label}="{key}"}} {value}' for key, value in values.items()),
    ]


def render(runtime: Runtime | None) -> str:
    """The metrics of a running app; without a runtime, the session figures only."""
    sessions = list(runtime.live.values()) if runtime is not None else []
    lines = _session_lines(sessions)
    if runtime is not None:
        lines += _capacity_lines(runtime)
        lines += _transcriber_lines(runtime.transcriber.statistics())
        lines += _storage_lines(runtime)
    return "\n".join(lines) + "\n"


def _session_lines(sessions: list[SessionHandle]) -> list[str]:
    lines = _line("sessions_active", len(sessions), "Live streaming sessions.")
    lines += _line(
        "session_lag_seconds_max",
        max((s.statistics().lag_s for s in sessions), default=0.0),
        "Largest lag of a live session behind its audio.",
    )
    lines += _line(
        "session_caption_delay_seconds_max",
        max((s.statistics().caption_delay_s for s in sessions), default=0.0),
        "Largest caption delay of a live session: its speech minus the end of its newest text.",
    )
    return lines


def _capacity_lines(runtime: Runtime) -> list[str]:
    capacity = capacity_statistics(
        runtime.capacity, runtime.transcriber, runtime.live, runtime.final_waits
    )
    lines = _line(
        "capacity_speech_seconds_per_second",
        capacity.capacity_speech_s_per_s if capacity.capacity_speech_s_per_s else 0.0,
        "Seconds of speech per second that admission plans to serve (0 until measured).",
    )
    lines += _line(
        "offered_speech_seconds_per_second",
        capacity.offered_speech_s_per_s,
        "Seconds of speech per second that live sessions send (estimate).",
    )
    lines += _line(
        "admission_headroom_sessions",
        capacity.headroom if capacity.headroom is not None else -1,
        "More live sessions that fit now (-1 until measured).",
    )
    lines += _line(
        "final_wait_p95_seconds",
        capacity.final_wait_p95_s if capacity.final_wait_p95_s is not None else -1,
        "p95 of recent finals' waits, asked for to sent (-1 while too few in the window).",
    )
    return lines


def _transcriber_lines(stats: TranscriberStatistics) -> list[str]:
    lines = _line("transcriber_batches_total", stats.batches, "Model batches run.", "counter")
    lines += _line("transcriber_items_total", stats.items, "Requests transcribed.", "counter")
    lines += _line(
        "transcriber_busy_seconds_total", stats.busy_s, "Seconds the model was busy.", "counter"
    )
    lines += _family(
        "transcriber_model_seconds_total",
        "Model time by what it went to: live finals, first drafts of an utterance, revisions"
        " (later drafts), other (uploads).",
        "counter",
        "kind",
        stats.model_s,
    )
    lines += _line("transcriber_queue", stats.queue, "Requests waiting for the model.")
    lines += _line(
        "transcriber_dropped_total",
        stats.dropped,
        "Requests dropped because their caller left.",
        "counter",
    )
    lines += _line(
        "transcriber_failed_total", stats.failed, "Requests the model failed.", "counter"
    )
    lines += _family(
        "transcriber_batch_size_total", "Batches by size.", "counter", "size", stats.batch_sizes
    )
    return lines


def _storage_lines(runtime: Runtime) -> list[str]:
    """The store's writes and the rate limiter's backend."""
    store = runtime.store.statistics()
    lines = _line("store_writes_total", store.writes, "Store writes committed.", "counter")
    lines += _line("store_failed_total", store.failed, "Store writes failed.", "counter")
    lines += _line("store_sessions_held", store.held, "Sessions whose lease this replica renews.")
    lines += _line(
        "store_sessions_swept_total", store.swept, "Open sessions ended: lease lapsed.", "counter"
    )
    limiter = runtime.limiter.statistics()
    lines += _line("limiter_healthy", int(limiter.healthy), "Rate-limit backend answers.")
    lines += _line("limiter_refused_total", limiter.refused, "Recordings refused.", "counter")
    return lines


async def metrics(request: Request) -> Response:
    caller = Caller.of(request)
    if caller.anonymous:
        return Refusal(401, "unauthorized", "an admin API key is required").response()
    if not caller.sees_all:
        return Refusal(403, "admin_only", "the metrics need an admin API key").response()
    try:
        runtime: Runtime | None = Runtime.of(request)
    except NotRunning:
        runtime = None
    return PlainTextResponse(render(runtime), media_type=CONTENT_TYPE)
