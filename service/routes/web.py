"""The browser page: `GET /` and its static assets under `/static/...` (issue 6).

Everything the page needs lives in `service/static/` and is served from disk as is: plain ES
modules, one stylesheet, no CDN and no build step, so the page works offline. `web_routes()`
returns plain Starlette routes that `create_app()` adds to its own; they own no tasks and hold no
state, so they need nothing from the lifespan. Starlette's `StaticFiles` answers conditional and
ranged requests and refuses paths that escape the folder.
"""

from __future__ import annotations

import os
from pathlib import Path

from starlette.requests import Request
from starlette.responses import FileResponse, Response
from starlette.routing import BaseRoute, Mount, Route
from starlette.staticfiles import StaticFiles
from starlette.types import Scope

STATIC_DIR = Path(__file__).resolve().parents[1] / "static"

# The page is small and changes with the server version, so browsers revalidate it each time
# (a cheap 304 thanks to the ETag) instead of running old scripts against a newer server.
_REVALIDATE = {"Cache-Control": "no-cache"}


# Module scripts and AudioWorklet modules load only with a JavaScript MIME type; the platform's
# `mimetypes` table is not to be trusted for that (some Windows registries say `text/plain`).
_MEDIA_TYPES = {
    ".js": "text/javascript; charset=utf-8",
    ".css": "text/css; charset=utf-8",
    ".html": "text/html; charset=utf-8",
    ".svg": "image/svg+xml",
}


class _PageStaticFiles(StaticFiles):
    """`StaticFiles` with fixed media types that asks browsers to revalidate, like the page."""

    def file_response(
        self,
        full_path: str | os.PathLike[str],
        stat_result: os.stat_result,
        scope: Scope,
        status_code: int = 200,
    ) -> Response:
        response = super().file_response(full_path, stat_result, scope, status_code)
        media_type = _MEDIA_TYPES.get(Path(full_path).suffix)
        if media_type is not None and response.status_code != 304:
            response.headers["Content-Type"] = media_type
        response.headers.update(_REVALIDATE)
        return response


async def _index(request: Request) -> Response:
    return FileResponse(STATIC_DIR / "index.html", headers=_REVALIDATE)


def web_routes() -> list[BaseRoute]:
    """Routes of the web page: `GET /` (the page) and `GET /static/{path}` (its assets)."""
    return [
        Route("/", _index, methods=["GET", "HEAD"], name="web_index"),
        Mount("/static", app=_PageStaticFiles(directory=STATIC_DIR), name="static"),
    ]
