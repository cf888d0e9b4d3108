"""`create_app()`: the Chorus ASGI app, mountable under a larger trio ASGI application.

Ownership: the app's lifespan loads the model (in a worker thread) and starts one task in its
nursery that opens the long-lived actors, each with its own nursery, and holds them until
shutdown: the one transcriber (`app.state.transcriber`), the one VAD actor that every live
session's segmenter shares (`app.state.vad`), the store (`app.state.store`) and the rate limiter
(`app.state.limiter`); the session gate counts live sessions. An actor that dies
ends that task only: `app.state.actors` (`service.supervision.ActorWatch`) names it, the
server logs it, and `/health` answers 503 until the process is restarted. Each WebSocket
route runs its session's nursery (`service.session.admission.serve_session`) inside the request. On
shutdown the transcriber's queue closes and the actor finishes what it holds; the store
commits what is queued and closes.

To mount Chorus under a parent Starlette app, enter its lifespan from the parent's:
`async with chorus.router.lifespan_context(chorus): yield`.
"""

from __future__ import annotations

import logging
import shutil
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

import attrs
import trio
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Route, WebSocketRoute

from actors.limiter import LimiterConfig, open_limiter
from actors.model.port import SpeechModel
from actors.model.sentiment import load_sentiment
from actors.speech.vad_actor import VadConfig, open_vad
from actors.store.actor import StoreHandle, open_store
from actors.transcriber.actor import TranscriberConfig, TranscriberHandle, open_transcriber
from service.config import Settings, environment
from service.policy.capacity import CapacityMeter
from service.policy.limits import BodyLimitMiddleware, SessionGate
from service.policy.security import SecurityConfig, SecurityMiddleware
from service.routes.dialects import dialect_routes
from service.routes.docs import api_docs_routes
from service.routes.files import upload_routes
from service.routes.metrics import metrics
from service.routes.sessions import sessions_routes
from service.routes.stream import stream_endpoint
from service.routes.web import web_routes
from service.session.admission import LiveSessions, capacity_statistics, session_limits
from service.session.ports import StreamOptions
from service.supervision import ActorWatch

log = logging.getLogger("chorus")

ModelLoader = Callable[[Settings], SpeechModel]


def load_whisper(settings: Settings) -> SpeechModel:
    from actors.model.weights import resolve_model
    from actors.model.whisper import WhisperAdapter

    return WhisperAdapter(
        resolve_model(settings.model),
        device=settings.device,
        compute_type=settings.compute_type,
        cpu_threads=settings.cpu_threads,
        bucket_s=30.0 if settings.naive else settings.bucket_s,
        workers=1 if settings.naive else settings.workers,
        tight_partials=settings.partial_window == "tight" and not settings.naive,
    )


def create_app(
    settings: Settings | None = None,
    *,
    model: SpeechModel | None = None,
    load_model: ModelLoader = load_whisper,
    extra_routes: list[BaseRoute] | None = None,
    security: SecurityConfig | None = None,
    limiter: LimiterConfig | None = None,
) -> Starlette:
    """Build the app; `model` injects a ready model (tests), else `load_model(settings)`."""
    environ = environment()
    settings = settings or Settings.from_env(environ)
    security = security or SecurityConfig.from_env(environ, bind_host=settings.host)
    limiter_config = limiter or LimiterConfig.from_env(environ)

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        speech: SpeechModel = (
            model if model is not None else await trio.to_thread.run_sync(load_model, settings)
        )
        config = TranscriberConfig(
            max_batch_size=1 if settings.naive else settings.max_batch_size,
            queue_size=settings.queue_size,
            partial_batch_size=1 if settings.naive else settings.partial_batch_size,
            # as many as the model was loaded for (an injected model: what it says, else 1)
            workers=max(1, int(getattr(speech, "workers", 1))),
        )
        app.state.options = StreamOptions(
            model=speech.name,
            multilingual=speech.multilingual,
            languages=speech.languages,
            final_beam_size=settings.final_beam_size,
            partial_interval_s=settings.partial_interval_s,
            commit_partials=settings.commit_partials and not settings.naive,
            pace=settings.pace,
            pace_burst_s=settings.pace_burst_s,
            limits=session_limits(security.limits),
        )
        await load_sentiment()
        app.state.live = LiveSessions()
        app.state.capacity = CapacityMeter(
            workers=config.workers,
            utilization=settings.admission_utilization or 1.0,
            partials_per_s=settings.admission_partials_per_s,
            cold_sessions=settings.admission_cold_sessions,
        )
        app.state.gate = SessionGate.from_limits(security.limits)
        vad_config = VadConfig(gather_s=settings.vad_gather_ms / 1000)
        stop = trio.Event()

        async def serve_actors(*, task_status: trio.TaskStatus[None]) -> None:
            """The actors run here, not around the `yield`: a dead one stops this task only."""
            watch = app.state.actors.watch
            store_actor = open_store(
                settings.data_dir,
                retention_days=settings.retention_days or None,
                recording=settings.recording_policy,
            )
            started = False
            try:
                async with (
                    watch("store", store_actor) as store,
                    watch("limiter", open_limiter(limiter_config)) as rate_limiter,
                    watch("vad", open_vad(config=vad_config)) as vad,
                    watch("transcriber", open_transcriber(speech, config)) as transcriber,
                ):
                    app.state.store = store
                    app.state.limiter = rate_limiter
                    app.state.vad = vad
                    app.state.transcriber = transcriber
                    task_status.started()
                    started = True
                    await stop.wait()
            except Exception:
                if not started:
                    raise  # start-up failed, as before
                # an actor died (nothing else here raises): logged by its watch, and the
                # server stays up with /health answering 503

        async with trio.open_nursery() as nursery:
            await nursery.start(serve_actors)
            log.info("chorus ready: model %s, batch <= %d", speech.name, config.max_batch_size)
            yield
            stop.set()  # the actors close in turn: the transcriber drains, the store commits

    routes: list[BaseRoute] = [
        Route("/health", health),
        Route("/metrics", metrics),
        WebSocketRoute("/v1/stream", stream_endpoint),
        *sessions_routes(),
        *dialect_routes(),
        *upload_routes(),
        *(extra_routes or []),
        *api_docs_routes(),
        *_negotiated_root(web_routes()),
    ]
    middleware = [
        *security.origins.cors(),
        Middleware(SecurityMiddleware, config=security),
        Middleware(BodyLimitMiddleware, max_bytes=security.limits.max_upload_bytes),
    ]
    security.log_startup_warnings()
    app = Starlette(routes=routes, middleware=middleware, lifespan=lifespan)
    app.state.settings = settings
    app.state.security = security
    app.state.actors = ActorWatch()
    return app


def _negotiated_root(routes: list[BaseRoute]) -> list[BaseRoute]:
    """The web routes with `GET /` answering JSON to a client that asks for JSON (as the
    seed backends' FastAPI roots did) and the page otherwise."""
    page = next(r for r in routes if isinstance(r, Route) and r.name == "web_index").endpoint

    async def root(request: Request) -> Response:
        if _prefers_json(request.headers.get("accept", "")):
            return JSONResponse(
                {
                    "message": "Chorus live speech-to-text server is running",
                    "status": "running",
                    "model": request.app.state.settings.model,
                    "health": "/health",
                }
            )
        response: Response = await page(request)
        response.headers["Vary"] = "Accept"
        return response

    return [
        Route("/", root, methods=["GET", "HEAD"], name="web_index")
        if isinstance(r, Route) and r.name == "web_index"
        else r
        for r in routes
    ]


def _prefers_json(accept: str) -> bool:
    """Whether `accept` asks for JSON and not for HTML (a browser asks for both: the page)."""
    kinds = {part.split(";")[0].strip().lower() for part in accept.split(",")}
    return "application/json" in kinds and "text/html" not in kinds


async def drain_sessions(app: Starlette, timeout_s: float = 30.0) -> int:
    """Shutdown: every live session stops taking audio, finishes its finals, and closes 1012.

    Returns how many sessions were still open after `timeout_s` (they are then cut off by the
    server's own shutdown).
    """
    live: LiveSessions | None = getattr(app.state, "live", None)
    if live is None:
        return 0
    for session in list(live.values()):
        session.stop("server_shutdown", 1012)
    with trio.move_on_after(timeout_s):
        await live.wait_empty()
    return len(live)


async def health(request: Request) -> JSONResponse:
    """`ok`, `degraded` (200, with its reasons in `degraded`: `rate_limiter` when its backend
    is down, `low_disk` below `CHORUS_MIN_FREE_BYTES` on the data dir, `store_failing` when the
    store's last commit failed), `starting` or `failed` (503: an actor died, named in `died`).
    Error texts (a Redis host name, an actor's exception) and disk figures go only to callers
    that see every tenant (an admin key, or a server without keys)."""
    state = request.app.state
    transcriber: TranscriberHandle | None = getattr(state, "transcriber", None)
    sees_all = bool(getattr(request.state, "sees_all", False))
    body: dict[str, Any] = {
        "status": "ok" if transcriber is not None else "starting",
        "model": state.options.model if transcriber is not None else state.settings.model,
        "sessions": len(getattr(state, "live", {})),
        # the seeds' name for the same count (001 and 003 show "active connections")
        "active_connections": len(getattr(state, "live", {})),
    }
    if transcriber is not None:
        limiter = state.limiter.statistics()
        degraded = [] if limiter.healthy else ["rate_limiter"]
        body["limits"] = {
            "backend": limiter.backend,
            "healthy": limiter.healthy,
            "fail_policy": limiter.fail_policy,
        }
        if sees_all:
            body["limits"]["last_error"] = limiter.last_error
        store = state.store.statistics()
        body["store"] = {
            "writes": store.writes,
            "queue": store.queue,
            "failed": store.failed,
            "failing": store.failing,
        }
        free, floor = await disk_space(state.store)
        body["disk"] = {"low": free < floor}
        if sees_all:
            body["disk"] |= {"free_bytes": free, "min_free_bytes": floor}
        if free < floor:
            degraded.append("low_disk")
        if store.failing:
            degraded.append("store_failing")
        if degraded:
            body["status"], body["degraded"] = "degraded", degraded
        stats = transcriber.statistics()
        body["languages"] = list(state.options.languages)
        body["transcriber"] = {
            "batches": stats.batches,
            "items": stats.items,
            "batch_sizes": {str(size): count for size, count in stats.batch_sizes.items()},
            "mean_batch_size": round(stats.mean_batch_size, 3),
            "queue": stats.queue,
            "busy_s": stats.busy_s,
            "dropped": stats.dropped,
            "failed": stats.failed,
            "workers": stats.workers,
        }
        if (capacity := capacity_statistics(state)) is not None:
            body["capacity"] = attrs.asdict(capacity)
    died: dict[str, str] = state.actors.died
    if died:
        body["status"] = "failed"
        body["died"] = list(died)
        if sees_all:
            body["died_of"] = died
    healthy = transcriber is not None and not died
    return JSONResponse(body, status_code=200 if healthy else 503)


async def disk_space(store: StoreHandle) -> tuple[int, int]:
    """Free bytes where the recordings (and the database) are kept, and the policy's floor."""
    usage = await trio.to_thread.run_sync(shutil.disk_usage, store.recordings)
    return usage.free, store.recording_policy.min_free_bytes
