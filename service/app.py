"""`create_app()`: the Chorus ASGI app, mountable under a larger trio ASGI application.

Ownership: `create_app()` reads the configuration once (settings, security and limits, rate
limits; from the environment and `.env` unless given) and hands it down: to the middleware, to
the route families that need it, and to the app's `Setup` (`service/runtime.py`). The app's
lifespan loads the model (in a worker thread) and starts one task in its nursery that opens the
long-lived actors, each with its own nursery, and holds them until shutdown: the one
transcriber, the one VAD actor that every live session's segmenter shares, the store and the
rate limiter. With them it builds the app's `Runtime` (their handles, the stream options, the
session gate, the capacity meter and the live sessions), which the routes reach through
`Runtime.of(request)` while the lifespan runs, and with `CHORUS_AGENT_PORT` the HAProxy agent
(`service/agent.py`) answers from it meanwhile; the agent closes and the runtime is cleared
when the lifespan ends, so a request after that is refused with 503 (`NotRunning`). An actor
that dies ends the actors' task only: the setup's `ActorWatch` names it, the server logs it,
and `/health` answers 503 until the process is restarted. Each WebSocket route runs its
session's nursery (`service.session.admission.serve_session`) inside the request. On shutdown
the transcriber's queue closes and the actor finishes what it holds; the store commits what is
queued and closes.

To mount Chorus under a parent Starlette app, enter its lifespan from the parent's:
`async with chorus.router.lifespan_context(chorus): yield`.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager

import attrs
import trio
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Route, WebSocketRoute

from actors.limiter import LimiterConfig, LimiterHandle, open_limiter
from actors.model.port import SpeechModel
from actors.model.sentiment import load_sentiment
from actors.speech.vad_actor import VadConfig, VadHandle, open_vad
from actors.store.actor import StoreHandle, open_store
from actors.transcriber.actor import TranscriberConfig, TranscriberHandle, open_transcriber
from service.agent import agent_for
from service.config import Settings, environment
from service.policy.capacity import CapacityMeter
from service.policy.latency import FinalWaits
from service.policy.limits import BodyLimitMiddleware, SessionGate
from service.policy.security import SecurityConfig, SecurityMiddleware
from service.policy.tickets import TicketBook
from service.routes.dialects import dialect_routes
from service.routes.docs import api_docs_routes
from service.routes.events import events_routes
from service.routes.files import upload_routes
from service.routes.flux import flux_routes
from service.routes.health import health
from service.routes.metrics import metrics
from service.routes.realtime import realtime_routes
from service.routes.sessions import sessions_routes
from service.routes.stream import stream_endpoint
from service.routes.tickets import issue_ticket
from service.routes.twilio import twilio_endpoint
from service.routes.uploads import DECODES_AT_ONCE, Uploads
from service.routes.web import web_routes
from service.runtime import (
    NotRunning,
    Runtime,
    Setup,
    exception_handlers,
    install,
    running,
    runtime,
)
from service.session.admission import LiveSessions
from service.session.ports import StreamOptions
from service.supervision import ActorWatch

log = logging.getLogger("chorus")

ModelLoader = Callable[[Settings], SpeechModel]


def load_whisper(settings: Settings) -> SpeechModel:
    """The model of `settings`; with a draft model, both, loaded for the same workers."""
    from actors.model.drafts import DraftingModel
    from actors.model.weights import ModelNotFound, resolve_model
    from actors.model.whisper import WhisperAdapter

    def load(name: str) -> WhisperAdapter:
        return WhisperAdapter(
            resolve_model(name),
            device=settings.device,
            compute_type=settings.compute_type,
            cpu_threads=settings.cpu_threads,
            bucket_s=30.0 if settings.naive else settings.bucket_s,
            workers=1 if settings.naive else settings.workers,
            tight_partials=settings.partial_window == "tight" and not settings.naive,
            final_window=None if settings.final_window == "auto" else settings.final_window,
        )

    main = load(settings.model)
    chosen = settings.draft_model.strip()
    name = chosen
    # "auto": a bigger model on a CPU drafts on tiny.en, which lets it hold more live sessions
    # (measured: docs/benchmarks.md); the smallest model, or a GPU, drafts on itself
    if chosen == "auto":
        smallest = main.name in ("tiny", "tiny.en") or main.device != "cpu"
        name = "" if smallest else "tiny.en"
    if name in ("", "none") or name == main.name or settings.naive:
        return main
    try:
        draft = load(name)
    except ModelNotFound as error:
        if chosen != "auto":
            raise
        log.warning("no draft model, partials stay on %s: %s", main.name, error)
        return main
    return DraftingModel(main, draft, workers=main.workers)


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
    setup = Setup(settings=settings, security=security, actors=ActorWatch(), tickets=TicketBook())
    # one set of upload caps and decoding threads for the upload routes and `/ws` recordings
    uploads = Uploads(trio.CapacityLimiter(DECODES_AT_ONCE), security.limits)
    routes = _routes(settings, uploads, extra_routes or [])
    middleware = [
        *security.origins.cors(),
        Middleware(SecurityMiddleware, config=security, tickets=setup.tickets),
        Middleware(BodyLimitMiddleware, max_bytes=security.limits.max_upload_bytes),
    ]
    security.log_startup_warnings()
    app = Starlette(
        routes=routes,
        middleware=middleware,
        lifespan=_lifespan(setup, limiter_config, model, load_model),
        exception_handlers=exception_handlers(),
    )
    install(app, setup)
    return app


def _routes(settings: Settings, uploads: Uploads, extra_routes: list[BaseRoute]) -> list[BaseRoute]:
    return [
        Route("/health", health),
        Route("/metrics", metrics),
        Route("/v1/tickets", issue_ticket, methods=["POST"]),
        WebSocketRoute("/v1/stream", stream_endpoint),
        WebSocketRoute("/v1/twilio", twilio_endpoint),
        *sessions_routes(),
        *events_routes(),
        *dialect_routes(uploads),
        *realtime_routes(),
        *flux_routes(),
        *upload_routes(uploads),
        *extra_routes,
        *api_docs_routes(),
        *_negotiated_root(web_routes(), settings.model),
    ]


def _lifespan(
    setup: Setup,
    limiter_config: LimiterConfig,
    model: SpeechModel | None,
    load_model: ModelLoader,
) -> Callable[[Starlette], AbstractAsyncContextManager[None]]:
    """The app's lifespan: load the model, open the actors, and hold the runtime while the
    app runs (see the module's docstring)."""
    settings = setup.settings

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        speech: SpeechModel = (
            model if model is not None else await trio.to_thread.run_sync(load_model, settings)
        )
        config = _transcriber_config(settings, speech)
        await load_sentiment()
        vad_config = VadConfig(gather_s=settings.vad_gather_ms / 1000)
        stop = trio.Event()
        async with trio.open_nursery() as nursery:
            handles: _Handles = await nursery.start(
                _serve_actors, setup, limiter_config, speech, config, vad_config, stop
            )
            log.info("chorus ready: model %s, batch <= %d", speech.name, config.max_batch_size)
            with running(app, _runtime(setup, speech, config, handles)) as built:
                async with agent_for(built):
                    yield
            stop.set()  # the actors close in turn: the transcriber drains, the store commits

    return lifespan


def _transcriber_config(settings: Settings, speech: SpeechModel) -> TranscriberConfig:
    return TranscriberConfig(
        max_batch_size=1 if settings.naive else settings.max_batch_size,
        queue_size=settings.queue_size,
        partial_batch_size=1 if settings.naive else settings.partial_batch_size,
        workers=max(1, speech.workers),  # as many as the model was loaded for
        partial_share=(
            None if settings.naive or settings.partial_share >= 1 else settings.partial_share
        ),
        revision_lead_s=(
            None if settings.naive or settings.revision_lead_s <= 0 else settings.revision_lead_s
        ),
    )


def _runtime(
    setup: Setup, speech: SpeechModel, config: TranscriberConfig, handles: _Handles
) -> Runtime:
    """The app's runtime, once its actors are open: their handles, the stream options (the
    loaded model's, the settings', the limits'), and fresh admission state."""
    settings, limits = setup.settings, setup.security.limits
    options = StreamOptions(
        model=speech.name,
        multilingual=speech.multilingual,
        languages=speech.languages,
        final_beam_size=settings.final_beam_size,
        partial_interval_s=settings.partial_interval_s,
        commit_partials=settings.commit_partials and not settings.naive,
        caption_target_s=settings.caption_target_s,
        final_reuse_s=0.0 if settings.naive else settings.final_reuse_s,
        final_lead_in="never" if settings.naive else settings.final_lead_in,
        pace=settings.pace,
        pace_burst_s=settings.pace_burst_s,
        limits=limits.session_limits(),
    )
    capacity = CapacityMeter(
        workers=config.workers,
        utilization=settings.admission_utilization or 1.0,
        cold_sessions=settings.admission_cold_sessions,
        # revisions are priced at the cadence sessions ask for them: under load the earliest
        # deadline first order spreads what the model can give, and this is what it must give
        revision_every_s=None if settings.naive else settings.partial_interval_s,
    )
    return Runtime(
        settings=settings,
        security=setup.security,
        actors=setup.actors,
        options=options,
        transcriber=handles.transcriber,
        vad=handles.vad,
        store=handles.store,
        limiter=handles.limiter,
        gate=SessionGate.from_limits(limits),
        capacity=capacity,
        live=LiveSessions(),
        final_waits=FinalWaits(),
    )


@attrs.frozen
class _Handles:
    store: StoreHandle
    limiter: LimiterHandle
    vad: VadHandle
    transcriber: TranscriberHandle


async def _serve_actors(
    setup: Setup,
    limiter_config: LimiterConfig,
    speech: SpeechModel,
    config: TranscriberConfig,
    vad_config: VadConfig,
    stop: trio.Event,
    *,
    task_status: trio.TaskStatus[_Handles],
) -> None:
    """The actors run here, not around the lifespan's `yield`: a dead one stops this task
    only. Their handles go to `task_status`; `stop` closes them."""
    watch = setup.actors.watch
    settings = setup.settings
    store_actor = open_store(
        settings.data_dir,
        retention_days=settings.retention_days or None,
        recording=settings.recording_policy,
        lease_s=settings.resume_s,
        recordings=settings.recordings,
        database_url=settings.database_url,
    )
    started = False
    try:
        async with (
            watch("store", store_actor) as store,
            watch("limiter", open_limiter(limiter_config)) as rate_limiter,
            watch("vad", open_vad(config=vad_config)) as vad,
            watch("transcriber", open_transcriber(speech, config)) as transcriber,
        ):
            task_status.started(_Handles(store, rate_limiter, vad, transcriber))
            started = True
            await stop.wait()
    except Exception:
        if not started:
            raise  # start-up failed, as before
        # an actor died (nothing else here raises): logged by its watch, and the
        # server stays up with /health answering 503


def _negotiated_root(routes: list[BaseRoute], model: str) -> list[BaseRoute]:
    """The web routes with `GET /` answering JSON to a client that asks for JSON (as the
    seed backends' FastAPI roots did) and the page otherwise."""
    page = next(r for r in routes if isinstance(r, Route) and r.name == "web_index").endpoint

    async def root(request: Request) -> Response:
        if _prefers_json(request.headers.get("accept", "")):
            return JSONResponse(
                {
                    "message": "Chorus live speech-to-text server is running",
                    "status": "running",
                    "model": model,
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

    First the server turns to draining (`LiveSessions.drain`): admission refuses what is new
    (503 `server_draining`) and the HAProxy agent answers `drain`. With an agent and live
    sessions it then waits `drain_notice_s`, for the balancer to see it before the closed
    sessions' clients reconnect. Returns how many sessions were still open `timeout_s` after
    they were told to stop (they are then cut off by the server's own shutdown).
    """
    try:
        running_now = runtime(app)
    except NotRunning:
        return 0
    live, settings = running_now.live, running_now.settings
    live.drain()
    if settings.agent_port and live:
        await trio.sleep(settings.drain_notice_s)
    for session in list(live.values()):
        session.stop("server_shutdown", 1012)
    with trio.move_on_after(timeout_s):
        await live.wait_empty()
    return len(live)
