"""API documentation, as the seeds' FastAPI servers had it: `GET /openapi.json` (OpenAPI 3.1,
built by `service.routes.openapi` from the routes' msgspec types), `GET /docs` (Swagger UI) and
`GET /redoc` (ReDoc).

The viewers' pages load their scripts from `/static/docs/` (vendored from npm, see
`service/static/docs/README.md`), never from a CDN, with relative URLs so that they also work
under a `root_path`. The routes own no tasks and no state; they are public
(`service.policy.security.SecurityMiddleware`), as the seeds' were: the document names routes and
shapes, not data.
"""

from __future__ import annotations

import msgspec
from starlette.requests import Request
from starlette.responses import HTMLResponse, Response
from starlette.routing import BaseRoute, Route

from service.routes.openapi import JSON, openapi_document


def api_docs_routes() -> list[BaseRoute]:
    """`GET /openapi.json`, `GET /docs`, `GET /redoc`; their assets are under `/static/docs/`."""
    return [
        Route("/openapi.json", _openapi, methods=["GET"], include_in_schema=False),
        Route("/docs", _swagger_ui, methods=["GET"], include_in_schema=False),
        Route("/redoc", _redoc, methods=["GET"], include_in_schema=False),
    ]


_SWAGGER_UI = """<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<title>Chorus API (Swagger UI)</title>
<link rel="stylesheet" href="static/docs/swagger-ui.css">
</head>
<body>
<div id="swagger-ui" data-url="openapi.json"></div>
<script src="static/docs/swagger-ui-bundle.js"></script>
<script src="static/docs/swagger-init.js"></script>
</body>
</html>
"""

_REDOC = """<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>Chorus API (ReDoc)</title>
<style>body { margin: 0; padding: 0; }</style>
</head>
<body>
<redoc spec-url="openapi.json"></redoc>
<script src="static/docs/redoc.standalone.js"></script>
</body>
</html>
"""


async def _openapi(request: Request) -> Response:
    document = openapi_document(request.app.routes)
    if root := request.scope.get("root_path", ""):  # mounted under a prefix: "Try it out" there
        document["servers"] = [{"url": root}]
    body = msgspec.json.encode(document)
    return Response(body, media_type=JSON)


async def _swagger_ui(request: Request) -> Response:
    return HTMLResponse(_SWAGGER_UI)


async def _redoc(request: Request) -> Response:
    return HTMLResponse(_REDOC)
