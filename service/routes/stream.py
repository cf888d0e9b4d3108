"""`WS /v1/stream`: the native protocol route (DESIGN §4.1).

The route reads the query into a `Config` (or an `Error` to answer) and hands the connection,
with the app runtime's session services, to `service.session.admission.serve_session`, which
admits, accepts and runs the session with a `NativeCodec`; `multichannel=true` with more than
one channel goes to `serve_multichannel` instead (one pipeline per channel, frames tagged with
`channel`). Sentiment, when asked for, is added to each final by `annotate`. A `resume` token
(and `after_seq`) in the query continues a session: checked before anything else (400 when
malformed, or asked of a multichannel session, which does not resume), claimed once the
connection is admitted (403 when refused), and the codec's `seq` goes on where the session's
did (`service/session/resume.py`).
"""

from __future__ import annotations

from collections.abc import Callable

import msgspec
from starlette.websockets import WebSocket

from actors.model.sentiment import annotate_sentiment
from protocol.codec import NativeCodec
from protocol.native import Config, Error, Final, config_from_query
from service.policy.caller import Caller
from service.policy.refusal import Refusal
from service.runtime import Runtime
from service.session.admission import serve_session, turn_away
from service.session.multichannel_serving import serve_multichannel
from service.session.resume import Resume, ResumeRequest, open_resume

ROUTE = "/v1/stream"


def native_config(query: dict[str, str]) -> Config | Error:
    try:
        return config_from_query(query)
    except msgspec.ValidationError as error:
        return Error(code="invalid_config", message=str(error), fatal=True)


async def stream_endpoint(websocket: WebSocket) -> None:
    services = Runtime.of(websocket).sessions
    query = dict(websocket.query_params)
    config = native_config(query)
    multichannel = isinstance(config, Config) and config.multichannel and config.channels > 1
    try:
        request = ResumeRequest.from_query(query)
        if request is not None and multichannel:
            raise Refusal(400, "invalid_resume", "a multichannel session does not resume")
    except Refusal as refusal:
        await turn_away(websocket, ROUTE, Caller.of(websocket).client, refusal)
        return
    if isinstance(config, Config) and multichannel:
        annotate = sentiment_annotator(config)  # each channel's finals their own sentiment
        await serve_multichannel(
            websocket, services, NativeCodec(), config, route=ROUTE, annotate=annotate
        )
        return
    codec = NativeCodec()

    async def resuming(client: str) -> Resume:
        resume = await open_resume(services.store.leases, client, request)
        codec.seq = resume.last_seq
        return resume

    await serve_session(
        websocket,
        services,
        codec,
        config,
        route=ROUTE,
        annotate=sentiment_annotator(config),
        open_resume=resuming,
        counted=request is None,  # a resume is no new recording for the rate limits
    )


def sentiment_annotator(config: Config | Error) -> Callable[[Final], Final]:
    if isinstance(config, Config) and config.sentiment:
        return annotate_sentiment
    return lambda frame: frame
