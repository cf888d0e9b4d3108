"""`WS /v1/realtime?intent=transcription`: OpenAI Realtime transcription (DESIGN §4.2).

The URL is the one the `openai` SDK builds from `base_url=http://host:port/v1` with
`client.realtime.connect(extra_query={"intent": "transcription"})`. The route checks the
query, then hands the connection, with the app runtime's session services, to
`service.session.admission.serve_session` with a `RealtimeCodec`
(`protocol/dialects/openai_realtime.py`), as every dialect's route does: the same admission,
API keys (the SDK sends `Authorization: Bearer`), store hooks, session pipeline and drain
(close 1012, on which the SDK reconnects by itself). The `OpenAI-Beta` header is tolerated.

Refused before the upgrade, with HTTP 400 and OpenAI's error body {`error`: {`type`,
`code`, `message`, `param`}}: a `model` query (OpenAI refuses it for transcription sessions:
the transcription model is a session setting), and an `intent` other than `transcription`
(Chorus serves no speech-to-speech conversations).
"""

from __future__ import annotations

import json

import attrs
from starlette.responses import Response
from starlette.routing import BaseRoute, WebSocketRoute
from starlette.websockets import WebSocket

from protocol.dialects.openai_realtime import RealtimeCodec
from service.runtime import Runtime
from service.session.admission import SessionServices, serve_session
from service.session.ports import StreamOptions

ROUTE = "/v1/realtime"


def realtime_routes() -> list[BaseRoute]:
    return [WebSocketRoute(ROUTE, realtime_endpoint)]


def query_problem(params: dict[str, str]) -> tuple[str, str] | None:
    """(param, message) for a query Chorus refuses, or None."""
    if "model" in params:
        return "model", (
            "model is not a query parameter of transcription sessions: "
            "set session.audio.input.transcription.model with session.update"
        )
    intent = params.get("intent")
    if intent != "transcription":
        return "intent", (
            f"intent must be 'transcription' (this server transcribes; got {intent!r})"
        )
    return None


async def realtime_endpoint(websocket: WebSocket) -> None:
    problem = query_problem(dict(websocket.query_params))
    if problem is not None:
        await _deny(websocket, *problem)
        return
    services = Runtime.of(websocket).sessions
    codec = RealtimeCodec(services.options.model)
    await serve_session(
        websocket, services, codec, codec.config, route=ROUTE, options=_options(services)
    )


def _options(services: SessionServices) -> StreamOptions:
    """The session's options: audio comes as base64 in JSON text, so a text message may be as
    large as a binary audio frame may be elsewhere (`max_frame_bytes`); the segmenter's cuts
    come as `speech_stopped` (the codec's `input_audio_buffer.speech_stopped`)."""
    limits = services.options.limits
    wider = max(limits.max_message_bytes, limits.max_frame_bytes)
    return attrs.evolve(
        services.options,
        limits=attrs.evolve(limits, max_message_bytes=wider),
        speech_stopped=True,
    )


async def _deny(websocket: WebSocket, param: str, message: str) -> None:
    error = {"type": "invalid_request_error", "code": "invalid_request", "message": message}
    body = json.dumps({"error": {**error, "param": param}}).encode()
    if "websocket.http.response" in websocket.scope.get("extensions", {}):
        response = Response(body, 400, media_type="application/json")
        await websocket.send_denial_response(response)
        return
    await websocket.accept()
    await websocket.send_text(
        json.dumps(
            {
                "type": "error",
                "event_id": "event_refused",
                "error": {**error, "param": param, "event_id": None},
            }
        )
    )
    await websocket.close(1008, "invalid_request")
