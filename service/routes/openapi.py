"""The OpenAPI 3.1 document that `GET /openapi.json` serves (`service.routes.docs`).

Built from the msgspec types the HTTP routes answer with (`msgspec.json.schema_components`,
into `components.schemas`) and the table of operations (`service.routes.operations.OPERATIONS`:
what msgspec cannot say, such as multipart forms and parameters). Only the operations whose
route the app has are listed; OpenAPI has no WebSocket operations, so the app's WebSocket
routes are listed in `info.description`. No state: it is built anew for each request.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from importlib import metadata
from typing import Any

import msgspec
from starlette.routing import BaseRoute, Route, WebSocketRoute

from protocol import openai
from service.routes.operations import OPENAI_FORMATS, OPERATIONS, WEBSOCKETS, Operation, Schema

JSON = "application/json"
REF = "#/components/schemas/{name}"


def _path(template: str) -> str:
    """A Starlette path (`/v1/models/{model:path}`) as OpenAPI writes it (`/v1/models/{model}`)."""
    return re.sub(r"\{(\w+):\w+\}", r"{\1}", template)


def openapi_document(routes: Sequence[BaseRoute]) -> dict[str, Any]:
    """The OpenAPI 3.1 document of the operations whose routes are in `routes`."""
    served = {
        (method.lower(), _path(route.path))
        for route in routes
        if isinstance(route, Route)
        for method in route.methods or ()
    }
    operations = [op for op in OPERATIONS if (op.method, op.path) in served]
    bodies = sorted(
        {
            kind
            for op in operations
            for _, body in op.responses.values()
            for kind in (body if isinstance(body, list) else [body])
            if isinstance(body, type | list)
        }
        | {openai.Transcription, openai.VerboseTranscription, openai.ErrorResponse},
        key=lambda kind: kind.__name__,
    )
    schemas, components = msgspec.json.schema_components(bodies, ref_template=REF)
    refs = dict(zip(bodies, schemas, strict=True))
    paths: dict[str, dict[str, Any]] = {}
    for op in operations:
        paths.setdefault(op.path, {})[op.method] = _operation(op, refs)
    websockets = [_path(r.path) for r in routes if isinstance(r, WebSocketRoute)]
    return {
        "openapi": "3.1.0",
        "info": {"title": "Chorus", "version": _version(), "description": _description(websockets)},
        "tags": [
            {"name": "uploads", "description": "whole files, transcribed at once"},
            {"name": "sessions", "description": "stored live sessions (SQLite and WAV)"},
            {"name": "server", "description": "health and metrics"},
        ],
        "paths": paths,
        "components": {
            "schemas": components,
            "securitySchemes": {
                "bearer": {"type": "http", "scheme": "bearer", "description": "an API key"},
            },
        },
        "security": [{"bearer": []}],
    }


def _operation(op: Operation, refs: Mapping[Any, Schema]) -> dict[str, Any]:
    responses: dict[str, Any] = {}
    for status, (description, body) in op.responses.items():
        response: dict[str, Any] = {"description": description or "OK"}
        if body == OPENAI_FORMATS:
            transcript = {"anyOf": [refs[openai.Transcription], refs[openai.VerboseTranscription]]}
            text = {"type": "string"}
            response["content"] = {JSON: {"schema": transcript}} | {
                media.split(";")[0]: {"schema": text}
                for media in dict.fromkeys(openai.MEDIA_TYPES.values())
                if media != JSON
            }
        elif isinstance(body, list):
            response["content"] = {JSON: {"schema": {"anyOf": [refs[kind] for kind in body]}}}
        elif isinstance(body, str):
            response["content"] = {body: {"schema": {"type": "string"}}}
        elif body is not None:
            response["content"] = {JSON: {"schema": refs[body]}}
        responses[str(status)] = response
    operation: dict[str, Any] = {"summary": op.summary, "tags": [op.tag], "responses": responses}
    parameters = [
        {
            "name": field.name,
            "in": "path" if f"{{{field.name}}}" in op.path else "query",
            "required": field.required or f"{{{field.name}}}" in op.path,
            "schema": field.schema,
        }
        | ({"description": field.description} if field.description else {})
        for field in op.parameters
    ]
    if parameters:
        operation["parameters"] = parameters
    if op.form:
        form: Schema = {
            "type": "object",
            "properties": {
                field.name: field.schema
                | ({"description": field.description} if field.description else {})
                for field in op.form
            },
            "required": [field.name for field in op.form if field.required],
        }
        operation["requestBody"] = {
            "required": True,
            "content": {"multipart/form-data": {"schema": form}},
        }
    if op.public:
        operation["security"] = [{}, {"bearer": []}]  # a key is optional (admins see more)
    return operation


def _description(websockets: Sequence[str]) -> str:
    lines = [
        "Live speech-to-text: many WebSocket streams, one shared Whisper model.",
        "",
        "OpenAPI describes no WebSocket operations; this server's WebSocket routes are:",
        "",
        *(f"- `{path}`: {WEBSOCKETS.get(path, 'see docs/protocols.md')}" for path in websockets),
        "",
        "Each is described message by message in the repository's docs/protocols.md (the "
        "seed routes in docs/migrating.md). HTTP routes take an API key "
        "in `Authorization: Bearer <key>` only. WebSockets take it there too, or (for "
        "browsers) as a `Sec-WebSocket-Protocol: token, <key>` offer or the `token` query "
        "parameter; better, a single-use ticket from `POST /v1/tickets` (valid 60 s) as "
        "`?ticket=` or wherever a key goes, which keeps the key out of URLs.",
    ]
    return "\n".join(lines)


def _version() -> str:
    try:
        return metadata.version("chorus")
    except metadata.PackageNotFoundError:
        return "0"
