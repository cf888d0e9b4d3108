"""`GET /health`: whether the server is up, and the actors' statistics that say how well.

Read-only: it asks each actor's handle in the app's `Runtime` for `statistics()` at request
time, and the `ActorWatch` (in the app's `Setup`, there before the lifespan runs) which actor
died. Before the lifespan has started it answers 503 `starting`, after it has ended 503
`stopped`; nothing here owns a task or keeps state between requests.

What a caller sees depends on who it is (issue 21, finding 9: tenants must not count each
other). On a server with API keys, a caller without a valid key gets the bare status
(`{"status": "ok"}`, with the same HTTP status as the full answer), which is what a load
balancer needs; a tenant's key adds what a client chooses settings by (model, languages, the
reasons for `degraded`, the dead actor's name); the figures (live sessions, queues, batches,
capacity, disk) count every tenant's work, so only callers that see every tenant (an admin key,
or a server without keys) get them.
"""

from __future__ import annotations

import shutil
from typing import Any

import attrs
import trio
from starlette.requests import Request
from starlette.responses import JSONResponse

from actors.store.actor import StoreHandle
from service.policy.caller import Caller
from service.runtime import NotRunning, Runtime, Setup
from service.session.admission import capacity_statistics

_FOR_TENANTS = ("status", "degraded", "model", "languages", "died")


async def health(request: Request) -> JSONResponse:
    """`ok`, `degraded` (200, with its reasons in `degraded`: `rate_limiter` when its backend
    is down, `low_disk` below `CHORUS_MIN_FREE_BYTES` on the data dir, `store_failing` when the
    store's last commit failed), `starting`, `stopped` or `failed` (503: an actor died, named in
    `died`). Error texts (a Redis host name, an actor's exception), disk figures and every
    count go only to callers that see every tenant (an admin key, or a server without keys)."""
    setup = Setup.of(request)
    caller = Caller.of(request)
    sees_all = caller.sees_all
    try:
        runtime = Runtime.of(request)
    except NotRunning as error:
        body: dict[str, Any] = {
            "status": "stopped" if error.ended else "starting",
            "model": setup.settings.model,
            "sessions": 0,
            "active_connections": 0,
        }
    else:
        body = await _running(runtime, sees_all=sees_all)
    died: dict[str, str] = setup.actors.died
    if died:
        body["status"] = "failed"
        body["died"] = list(died)
        if sees_all:
            body["died_of"] = died
    healthy = body["status"] in ("ok", "degraded")
    if caller.anonymous:
        body = {"status": body["status"]}
    elif not sees_all:
        body = {name: body[name] for name in _FOR_TENANTS if name in body}
    return JSONResponse(body, status_code=200 if healthy else 503)


async def _running(runtime: Runtime, *, sees_all: bool) -> dict[str, Any]:
    body: dict[str, Any] = {
        "status": "ok",
        "model": runtime.options.model,
        "sessions": len(runtime.live),
        # the seeds' name for the same count (001 and 003 show "active connections")
        "active_connections": len(runtime.live),
    }
    limiter = runtime.limiter.statistics()
    degraded = [] if limiter.healthy else ["rate_limiter"]
    body["limits"] = {
        "backend": limiter.backend,
        "healthy": limiter.healthy,
        "fail_policy": limiter.fail_policy,
    }
    if sees_all:
        body["limits"]["last_error"] = limiter.last_error
    store = runtime.store.statistics()
    body["store"] = {
        "writes": store.writes,
        "queue": store.queue,
        "failed": store.failed,
        "failing": store.failing,
    }
    free, floor = await disk_space(runtime.store)
    body["disk"] = {"low": free < floor}
    if sees_all:
        body["disk"] |= {"free_bytes": free, "min_free_bytes": floor}
    if free < floor:
        degraded.append("low_disk")
    if store.failing:
        degraded.append("store_failing")
    if degraded:
        body["status"], body["degraded"] = "degraded", degraded
    if runtime.live.draining:  # shutting down: new sessions refused, live ones finishing
        body["draining"] = True
    stats = runtime.transcriber.statistics()
    body["languages"] = list(runtime.options.languages)
    body["transcriber"] = {
        "batches": stats.batches,
        "items": stats.items,
        "batch_sizes": {str(size): count for size, count in stats.batch_sizes.items()},
        "mean_batch_size": round(stats.mean_batch_size, 3),
        "queue": stats.queue,
        "busy_s": stats.busy_s,
        "model_s": stats.model_s,  # busy_s by what it went to: finals, drafts, uploads
        "dropped": stats.dropped,
        "failed": stats.failed,
        "workers": stats.workers,
    }
    capacity = capacity_statistics(
        runtime.capacity, runtime.transcriber, runtime.live, runtime.final_waits
    )
    body["capacity"] = attrs.asdict(capacity)
    return body


async def disk_space(store: StoreHandle) -> tuple[int, int]:
    """Free bytes where the recordings (and the database) are kept, and the policy's floor."""
    usage = await trio.to_thread.run_sync(shutil.disk_usage, store.recordings)
    return usage.free, store.recording_policy.min_free_bytes
