"""`create_app()`: the Chorus ASGI app, mountable under a larger trio ASGI application.

Ownership: the app's lifespan loads the model (in a worker thread) and opens the one
transcriber actor (`actors.transcriber.open_transcriber`), whose nursery lives as long as the
lifespan; the handle is kept in `app.state.transcriber`. Each WebSocket route runs its
session's nursery (`service.session.run_session`) inside the request. On shutdown the
transcriber's queue closes and the actor finishes what it holds.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

import trio
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import BaseRoute, Route, WebSocketRoute

from actors.model_api import SpeechModel
from actors.transcriber import TranscriberConfig, TranscriberHandle, open_transcriber
from service.config import Settings
from service.pipeline import SessionLimits, StreamOptions
from service.stream import stream_endpoint

log = logging.getLogger("chorus")

ModelLoader = Callable[[Settings], SpeechModel]


def load_whisper(settings: Settings) -> SpeechModel:
    from actors.model import WhisperAdapter
    from actors.model_files import resolve_model

    return WhisperAdapter(
        resolve_model(settings.model),
        device=settings.device,
        compute_type=settings.compute_type,
        cpu_threads=settings.cpu_threads,
        bucket_s=30.0 if settings.naive else settings.bucket_s,
    )


def create_app(
    settings: Settings | None = None,
    *,
    model: SpeechModel | None = None,
    load_model: ModelLoader = load_whisper,
    extra_routes: list[BaseRoute] | None = None,
) -> Starlette:
    """Build the app; `model` injects a ready model (tests), else `load_model(settings)`."""
    settings = settings or Settings.from_env()

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        speech = model or await trio.to_thread.run_sync(load_model, settings)
        config = TranscriberConfig(
            max_batch_size=1 if settings.naive else settings.max_batch_size,
            queue_size=settings.queue_size,
        )
        app.state.options = StreamOptions(
            model=speech.name,
            multilingual=speech.multilingual,
            languages=speech.languages,
            final_beam_size=settings.final_beam_size,
            partial_interval_s=settings.partial_interval_s,
            limits=SessionLimits(),
        )
        app.state.sessions = 0
        async with open_transcriber(speech, config) as transcriber:
            app.state.transcriber = transcriber
            log.info("chorus ready: model %s, batch <= %d", speech.name, config.max_batch_size)
            yield

    routes: list[BaseRoute] = [
        Route("/health", health),
        WebSocketRoute("/v1/stream", stream_endpoint),
        *(extra_routes or []),
    ]
    app = Starlette(routes=routes, lifespan=lifespan)
    app.state.settings = settings
    return app


async def health(request: Request) -> JSONResponse:
    state = request.app.state
    transcriber: TranscriberHandle | None = getattr(state, "transcriber", None)
    body: dict[str, Any] = {
        "status": "ok" if transcriber is not None else "starting",
        "model": state.options.model if transcriber is not None else state.settings.model,
        "sessions": getattr(state, "sessions", 0),
    }
    if transcriber is not None:
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
        }
    return JSONResponse(body, status_code=200 if transcriber is not None else 503)
