"""`GET /openapi.json`, `/docs` and `/redoc` on a real server: the document lists the HTTP
routes with their shapes (and `/health`'s real answer reads back through its type), the
viewers' pages load only local assets, and all of it is public, as the seeds' docs were."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any
from urllib.parse import urljoin

import httpx
import msgspec
import pytest
from conftest import serve_app
from starlette.applications import Starlette
from support.fakes import FakeModel

from service.app import create_app
from service.config import Settings
from service.routes.operations import Health

ROUTES = {
    "/health": {"get"},
    "/metrics": {"get"},
    "/v1/tickets": {"post"},
    "/transcribe": {"post"},
    "/v1/audio/transcriptions": {"post"},
    "/v1/audio/translations": {"post"},
    "/v1/sessions": {"get"},
    "/v1/sessions/{session_id}": {"get", "delete"},
    "/v1/sessions/{session_id}/audio": {"get"},
}
WEBSOCKETS = ("/v1/stream", "/ws/v1/speech-to-text", "/ws/{client_id}", "/ws")
ASSET = re.compile(r"""(?:src|href|spec-url|data-url)\s*=\s*["']([^"']+)["']""")


def _app(data_dir: Path) -> Starlette:
    return create_app(Settings(model="fake", data_dir=data_dir), model=FakeModel())


def _refs(node: Any) -> list[str]:
    if isinstance(node, dict):
        here = [node["$ref"]] if "$ref" in node else []
        return here + [r for v in node.values() for r in _refs(v)]
    if isinstance(node, list):
        return [r for v in node for r in _refs(v)]
    return []


async def test_the_openapi_document_lists_routes_and_shapes(tmp_path: Path) -> None:
    async with (
        serve_app(_app(tmp_path)) as address,
        httpx.AsyncClient(base_url=f"http://{address}") as http,
    ):
        answer = await http.get("/openapi.json")
        health = await http.get("/health")
    assert answer.status_code == 200
    assert answer.headers["content-type"] == "application/json"
    document = json.loads(answer.content)
    assert document["openapi"] == "3.1.0"
    assert document["info"]["title"] == "Chorus" and document["info"]["version"]
    paths = document["paths"]
    for path, methods in ROUTES.items():
        assert methods <= set(paths[path]), path
        for operation in paths[path].values():
            assert operation["responses"] and operation["summary"]
    schemas = document["components"]["schemas"]
    for ref in _refs(document):
        assert ref.removeprefix("#/components/schemas/") in schemas, ref
    # the bodies are msgspec's schemas of the routes' types
    assert schemas["Transcript"]["required"] == ["transcript"]
    assert set(schemas["VerboseTranscript"]["properties"]) == {
        "transcript",
        "language",
        "duration",
    }
    assert {"sessions", "next"} <= set(schemas["SessionPageOut"]["properties"])
    assert {"text"} == set(schemas["Transcription"]["properties"])
    seed = paths["/transcribe"]["post"]
    form = seed["requestBody"]["content"]["multipart/form-data"]["schema"]
    assert set(form["properties"]) == {"file", "language"} and form["required"] == ["file"]
    assert seed["responses"]["200"]["content"]["application/json"]["schema"]["anyOf"] == [
        {"$ref": "#/components/schemas/Transcript"},
        {"$ref": "#/components/schemas/VerboseTranscript"},
    ]
    openai = paths["/v1/audio/transcriptions"]["post"]
    assert set(openai["requestBody"]["content"]["multipart/form-data"]["schema"]["required"]) == {
        "file",
        "model",
    }
    audio = paths["/v1/sessions/{session_id}/audio"]["get"]
    assert audio["parameters"][0] == {
        "name": "session_id",
        "in": "path",
        "required": True,
        "schema": {"type": "string"},
    }
    # OpenAPI has no WebSocket operations: they are in the description
    for path in WEBSOCKETS:
        assert f"`{path}`" in document["info"]["description"]
        assert path not in paths
    # /health's real answer reads back through the documented type
    assert health.status_code == 200
    assert msgspec.convert(health.json(), Health).transcriber is not None


@pytest.mark.parametrize("page", ["/docs", "/redoc"])
async def test_the_viewers_load_only_local_assets(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, page: str
) -> None:
    monkeypatch.setenv("CHORUS_API_KEYS", "alice:key-a")  # read once, when the app is built
    async with (
        serve_app(_app(tmp_path)) as address,
        httpx.AsyncClient(base_url=f"http://{address}") as http,
    ):
        answer = await http.get(page)  # no key: the docs are public
        assert answer.status_code == 200
        assert answer.headers["content-type"].startswith("text/html")
        html = answer.text
        assert "http://" not in html and "https://" not in html
        urls = ASSET.findall(html)
        assert urls and not [url for url in urls if url.startswith(("//", "http:", "https:"))]
        assets = [urljoin(f"http://{address}{page}", url) for url in urls]
        fetched = {url: await http.get(url) for url in assets}
        refused = await http.get("/v1/sessions")  # a route that is not public still needs a key
    assert refused.status_code == 401
    assert f"http://{address}/openapi.json" in fetched
    for url, asset in fetched.items():
        assert asset.status_code == 200, url
        assert asset.content, url
        if url.endswith(".js"):
            assert asset.headers["content-type"].startswith("text/javascript")
        if url.endswith(".css"):
            assert asset.headers["content-type"].startswith("text/css")
        if url.endswith(".json"):
            assert json.loads(asset.content)["openapi"] == "3.1.0"
