"""Shared fixtures: the real tiny.en model (loaded once), real speech, a real server on loopback,
and the store on both its databases (`support.postgres_server`)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from functools import partial
from pathlib import Path
from typing import Any

import pytest
import trio
from hypercorn.config import Config as HypercornConfig
from hypercorn.trio import serve
from starlette.types import ASGIApp
from support.hangs import watched_run
from support.postgres_server import postgres_server, store_database_url

from actors.model.port import SpeechModel
from service.websocket_client import answer_pings_only_while_open

__all__ = ["postgres_server", "store_database_url"]  # fixtures: the store on both backends

# trio-websocket answered the server's pings after its own close, and the stray Cancelled that
# came of it ended a test's body silently (`service/websocket_client.py`)
answer_pings_only_while_open()

HERE = Path(__file__).resolve().parent
DATA = HERE / "data"


@pytest.hookimpl(trylast=True)  # after pytest-trio's trio mode has marked the async tests
def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Every async test runs under `watched_run`: one that hangs fails with its trio tasks'
    stacks (`support/hangs.py`) instead of ending the whole run."""
    for item in items:
        for index, mark in enumerate(item.own_markers):
            if mark.name == "trio" and mark.kwargs.get("run") is trio.run:
                item.own_markers[index] = pytest.mark.trio(run=watched_run).mark


@pytest.fixture(scope="session")
def tiny_model() -> Iterator[SpeechModel]:
    from actors.model.weights import resolve_model
    from actors.model.whisper import WhisperAdapter

    yield WhisperAdapter(resolve_model("tiny.en"), compute_type="int8", cpu_threads=2)


@asynccontextmanager
async def serve_app(app: ASGIApp) -> AsyncIterator[str]:
    """Serve `app` with hypercorn's trio worker on 127.0.0.1:0, configured as `chorus serve`
    configures it (`service.cli.hypercorn_settings`: bounded WebSocket messages, one queued
    message, pings) under the app's own limits; yield `host:port`."""
    from service.cli import hypercorn_settings
    from service.config import Settings
    from service.policy.limits import Limits
    from service.runtime import setup
    from service.serving import install

    install()
    try:
        limits = setup(app).security.limits  # type: ignore[arg-type]
    except (AttributeError, LookupError, TypeError):  # not a Chorus app
        limits = Limits()
    config = HypercornConfig()
    for name, value in hypercorn_settings(Settings(), limits).items():
        setattr(config, name, value)
    config.bind = ["127.0.0.1:0"]
    config.accesslog = None
    config.errorlog = None
    shutdown = trio.Event()
    async with trio.open_nursery() as nursery:
        # Starlette types the ASGI callable with plain mappings, hypercorn with TypedDicts
        binds = await nursery.start(partial(serve, app, config, shutdown_trigger=shutdown.wait))  # type: ignore[arg-type]
        yield binds[0].removeprefix("http://")
        shutdown.set()


async def fetch_recording(http: Any, url: str, **options: Any) -> Any:
    """GET a session's recording once it is written: the client has `stopped` and the close
    before the session's row is ended and its WAV closed (409 `session_live` until then)."""
    with trio.fail_after(10):
        while True:
            response = await http.get(url, **options)
            if response.status_code != 409:
                return response
            await trio.sleep(0.05)
