"""The compatible WebSocket dialects (DESIGN §4.2): Deepgram and the three seed protocols.

Each route reads its options and hands the connection, with the session services of the app's
runtime (`Runtime.of(websocket).sessions`), to `service.session.admission.serve_session`, as the
native route does (`service/routes/stream.py`): admission, accept, store hooks and the one
session pipeline (`service.session.supervisor.run_session`) on the one transcriber actor, with the
dialect's codec from `protocol/dialects/`; a dialect only changes the wire shapes. Sentiment
(on by default on the call-intelligence route, `sentiment=true` elsewhere) is the session's
`annotate` step. The Deepgram route refuses bad options before the upgrade with HTTP 400, as
Deepgram does; the seeds answer them with an `error` message in their own shape and close 1008.

The seed routes speak their READMEs' shapes by default; what a README does not show (partials
on the call route, the sessions' details) is sent when the query string asks (`interim=true`,
`details=true`). The speech-to-text route records each session (SQLite row and WAV) as its
seed did, unless the recording policy or `record=false` says not to.

Routes: `WS /v1/listen` (Deepgram), `WS /ws/v1/speech-to-text`, `WS /ws/{client_id}`, `WS /ws`
(recordings: `service/routes/recordings.py`, which count as uploads: the app's one `Uploads`,
given to `dialect_routes()` once).
"""

from __future__ import annotations

import functools
import re
import uuid
from collections.abc import Callable
from datetime import UTC, datetime

from starlette.responses import Response
from starlette.routing import BaseRoute, WebSocketRoute
from starlette.websockets import WebSocket

from actors.model.sentiment import analyze, annotate_sentiment, load_sentiment
from protocol.codec import Codec
from protocol.dialects.configure import query_keyterms
from protocol.dialects.deepgram import DeepgramCodec, QueryError, handshake_error, parse_query
from protocol.dialects.seed_call import CallCodec
from protocol.dialects.seed_stt import SpeechToTextCodec
from protocol.dialects.seed_ws import LiveAudioCodec
from protocol.native import Config, Error, Final
from service.routes.recordings import serve_recordings
from service.routes.stream import native_config
from service.routes.uploads import Uploads
from service.runtime import Runtime
from service.session.admission import SessionServices, serve_session
from service.session.config import check_config
from service.session.multichannel_serving import serve_multichannel


def dialect_routes(uploads: Uploads) -> list[BaseRoute]:
    """The routes; `WS /ws` recordings count as `uploads` (its caps, decoders and limits)."""
    live_audio = functools.partial(live_audio_endpoint, uploads)
    return [
        WebSocketRoute("/v1/listen", listen_endpoint),
        WebSocketRoute("/ws/v1/speech-to-text", speech_to_text_endpoint),
        WebSocketRoute("/ws/{client_id}", call_endpoint),
        WebSocketRoute("/ws", live_audio),
    ]


async def listen_endpoint(websocket: WebSocket) -> None:
    """Deepgram live streaming; bad options are refused before the upgrade with HTTP 400."""
    services = Runtime.of(websocket).sessions
    try:
        query = websocket.query_params
        keyterms = query_keyterms(query.getlist("keyterm"), query.getlist("keywords"))
        config, options = parse_query(query, keyterms)
    except QueryError as error:
        await deny_deepgram(websocket, str(error))
        return
    created = datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")
    codec = DeepgramCodec(options, created=created, model=services.options.model)

    async def refuse(problem: Error) -> None:  # what the model cannot do: also before the upgrade
        await deny_deepgram(websocket, problem.message)

    if config.multichannel:  # `multichannel=true` with raw audio of more than one channel
        await serve_multichannel(
            websocket, services, codec, config, route="/v1/listen", refuse=refuse
        )
        return
    await serve_session(websocket, services, codec, config, route="/v1/listen", refuse=refuse)


async def deny_deepgram(websocket: WebSocket, message: str) -> None:
    request_id = str(uuid.uuid4())
    printable = _printable_ascii(message)  # the message quotes what the client sent
    if "websocket.http.response" in websocket.scope.get("extensions", {}):
        headers = {"dg-error": printable[:200], "dg-request-id": request_id}
        body = handshake_error(message, request_id)
        await websocket.send_denial_response(Response(body, 400, headers, "application/json"))
        return
    await websocket.close(1008, printable[:120])


def _printable_ascii(text: str) -> str:
    """`text` with anything but printable ASCII escaped (`Ā` → `\\u0100`): a header value
    must encode as Latin-1 (else a 500), and a close reason may hold only 123 bytes."""
    return re.sub(r"[^ -~]", lambda found: found[0].encode("unicode_escape").decode(), text)


async def speech_to_text_endpoint(websocket: WebSocket) -> None:
    """Seed STT: options arrive in the `start` event (query parameters give the defaults)."""
    services = Runtime.of(websocket).sessions

    def check(config: Config) -> str | None:
        problem = check_config(config, services.options)
        return None if problem is None else problem.message

    # the seed saved every session (SQLite row and WAV): record unless the policy says never
    record = services.store.recording_policy.records(True)
    params = {"record": str(record).lower(), **websocket.query_params}
    config = native_config(params)
    base = config if isinstance(config, Config) else Config()
    codec = SpeechToTextCodec(base, check, details=_flag(params, "details"))
    await _serve(websocket, services, codec, config, "/ws/v1/speech-to-text")


async def call_endpoint(websocket: WebSocket) -> None:
    """Seed call intelligence: base64 PCM chunks in, transcriptions with sentiment out."""
    services = Runtime.of(websocket).sessions
    # the seed sent no partials: the model makes none unless the client asks (`interim=true`)
    params = {"sentiment": "true", "interim": "false", **websocket.query_params}
    config = native_config(params)
    options = config if isinstance(config, Config) else Config(interim=False)
    codec = CallCodec(
        websocket.path_params["client_id"],
        analyze=analyze if options.sentiment else None,
        interim=options.interim,
        details=_flag(params, "details"),
    )
    await _serve(websocket, services, codec, config, "/ws/{client_id}")


async def live_audio_endpoint(uploads: Uploads, websocket: WebSocket) -> None:
    """Seeds "Audio WebSocket API" (003) / "Live Audio Transcript" (000): each `audio`
    message a recording, answered with `status` then `transcription` (`service.routes.recordings`);
    `?stream=true` keeps the earlier streaming dialect (PCM, partials and finals)."""
    services = Runtime.of(websocket).sessions
    params = dict(websocket.query_params)
    if params.pop("stream", "").lower() in ("true", "1", "yes"):
        await _serve(websocket, services, LiveAudioCodec(), native_config(params), "/ws")
        return
    await serve_recordings(websocket, services, uploads)


async def _serve(
    websocket: WebSocket,
    services: SessionServices,
    codec: Codec,
    config: Config | Error,
    route: str,
) -> None:
    annotate: Callable[[Final], Final] = _unchanged
    if isinstance(config, Config) and config.sentiment:
        await load_sentiment()
        annotate = annotate_sentiment
    await serve_session(websocket, services, codec, config, route=route, annotate=annotate)


def _flag(params: dict[str, str], name: str) -> bool:
    return params.get(name, "false").lower() in {"true", "1", "yes"}


def _unchanged(frame: Final) -> Final:
    return frame
