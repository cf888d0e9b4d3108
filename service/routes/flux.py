"""Deepgram Flux, `WS /v2/listen`: conversational turns over the one session pipeline.

The route reads Flux's query parameters (`protocol.dialects.flux.parse_flux_query`), refuses
bad ones before the upgrade with HTTP 400 and Deepgram's body (as `/v1/listen` does:
`service.routes.dialects.deny_deepgram`), and hands the connection with a `FluxCodec` to
`service.session.admission.serve_session`, asking for drafts every `UPDATE_S` of audio: each
draft is a `TurnInfo`, and the codec ends turns from them. Everything else (admission, the
session's tasks, the store) is the session's, as on every dialect.
"""

from __future__ import annotations

import attrs
from starlette.routing import BaseRoute, WebSocketRoute
from starlette.websockets import WebSocket

from protocol.dialects.configure import query_keyterms
from protocol.dialects.deepgram import QueryError
from protocol.dialects.flux import UPDATE_S, FluxCodec
from protocol.dialects.flux_query import parse_flux_query
from protocol.native import Error
from service.routes.dialects import deny_deepgram
from service.runtime import Runtime
from service.session.admission import serve_session


def flux_routes() -> list[BaseRoute]:
    return [WebSocketRoute("/v2/listen", flux_endpoint)]


async def flux_endpoint(websocket: WebSocket) -> None:
    """Flux turns; bad options are refused before the upgrade with HTTP 400."""
    services = Runtime.of(websocket).sessions
    query = websocket.query_params
    try:
        config, thresholds, rate = parse_flux_query(query, query_keyterms(query.getlist("keyterm")))
    except QueryError as error:
        await deny_deepgram(websocket, str(error))
        return
    codec = FluxCodec(thresholds, bytes_per_second=rate)
    options = attrs.evolve(services.options, partial_interval_s=UPDATE_S)

    async def refuse(problem: Error) -> None:  # what the model cannot do: also before the upgrade
        await deny_deepgram(websocket, problem.message)

    await serve_session(
        websocket, services, codec, config, route="/v2/listen", options=options, refuse=refuse
    )
