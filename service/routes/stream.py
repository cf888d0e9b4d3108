"""`WS /v1/stream`: the native protocol route (DESIGN §4.1).

The route reads the query into a `Config` (or an `Error` to answer) and hands the connection,
with the app runtime's session services, to `service.session.admission.serve_session`, which
admits, accepts and runs the session with a `NativeCodec`; `multichannel=true` with more than
one channel goes to `serve_multichannel` instead (one pipeline per channel, frames tagged with
`channel`). Sentiment, when asked for, is added
to each final by `annotate`.
"""

from __future__ import annotations

from collections.abc import Callable

import msgspec
from starlette.websockets import WebSocket

from actors.model.sentiment import annotate_sentiment
from protocol.codec import NativeCodec
from protocol.native import Config, Error, Final, config_from_query
from service.runtime import Runtime
from service.session.admission import serve_session
from service.session.multichannel_serving import serve_multichannel


def native_config(query: dict[str, str]) -> Config | Error:
    try:
        return config_from_query(query)
    except msgspec.ValidationError as error:
        return Error(code="invalid_config", message=str(error), fatal=True)


async def stream_endpoint(websocket: WebSocket) -> None:
    services = Runtime.of(websocket).sessions
    config = native_config(dict(websocket.query_params))
    if isinstance(config, Config) and config.multichannel and config.channels > 1:
        annotate = sentiment_annotator(config)  # each channel's finals their own sentiment
        await serve_multichannel(
            websocket, services, NativeCodec(), config, route="/v1/stream", annotate=annotate
        )
        return
    await serve_session(
        websocket,
        services,
        NativeCodec(),
        config,
        route="/v1/stream",
        annotate=sentiment_annotator(config),
    )


def sentiment_annotator(config: Config | Error) -> Callable[[Final], Final]:
    if isinstance(config, Config) and config.sentiment:
        return annotate_sentiment
    return lambda frame: frame
