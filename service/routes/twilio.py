"""`WS /v1/twilio`: Twilio Media Streams, both tracks of a call as a two-channel session.

Point a TwiML `<Start><Stream url="wss://chorus.example.com/v1/twilio" track="both_tracks"/>`
(or `<Connect><Stream>`) at it. Authentication, before any audio is taken:

1. A request with `X-Twilio-Signature` is Twilio's: the signature must match the URL as Twilio
   requested it (`wss://` + the `Host` + the path and query) under `CHORUS_TWILIO_AUTH_TOKEN`,
   checked in constant time before the upgrade (403 `invalid_signature` otherwise; a header
   with no token configured is refused too). The session is the tenant `CHORUS_TWILIO_TENANT`'s
   (`key:<tenant>`: the API key named so reads it). A signature, when sent, decides: a key in
   the stream's parameters is then not consulted.
2. Without the header, the stream's `start` message must carry an API key in
   `customParameters.chorus_key` (`<Parameter name="chorus_key" value="…"/>`); the key's tenant
   owns the session. A missing or wrong key is closed with 1008 before any `media` is read.
3. A server with neither API keys nor a token configured takes any stream (as its other routes),
   a `chorus_key` or not (it is not looked up).

The stream's `customParameters` may also set `language` (an ISO code, or `auto`); a bad one
(or one the model does not speak) is closed with 1008 before any audio.

The route accepts, reads `connected` and `start` (within `START_TIMEOUT_S`), authenticates,
admits the call as one session per track (`admit_channels`: refused with close 1013), and runs
it as a multichannel session (`service/session/multichannel.py`) with `TwilioCodec`: inbound
(the caller) is channel 0, outbound (the agent) channel 1. It is stored under route
`/v1/twilio` with the call's SID as its id (`<callSid>-<streamSid>` when a call has streamed
before, a new id when that is taken too: the session's row insert decides, so two streams never
share an id, a feed or a live handle), and followed live at `GET /v1/sessions/{callSid}/events`.
"""

from __future__ import annotations

import logging

import msgspec
import trio
from starlette.websockets import WebSocket

from actors.store.schema import SESSION_ID
from protocol.codec import ProtocolError
from protocol.dialects.twilio import (
    Connected,
    Start,
    StartDetails,
    TwilioCodec,
    check_start,
    parse,
    signature_matches,
)
from protocol.native import Config
from service.policy.caller import Caller
from service.policy.identity import key_identity
from service.policy.refusal import Refusal
from service.policy.security import refuse_websocket
from service.runtime import Runtime
from service.session.multichannel_serving import (
    admit_channels,
    check_multichannel,
    multichannel,
    run_guarded,
)
from service.session.ports import ClientGone, StreamOptions
from service.session.record import as_is, new_session_id
from service.session.sockets import StarletteSocket

log = logging.getLogger("chorus.twilio")
START_TIMEOUT_S = 10.0
KEY_PARAMETER = "chorus_key"
CALL_PARAMETERS = ("language",)  # session options a stream's parameters may set


def requested_url(websocket: WebSocket) -> str:
    """The URL Twilio signed: `wss://`, the Host it connected to, the path as it was sent
    (`raw_path`: still percent-encoded) and the query."""
    scope = websocket.scope
    query = scope.get("query_string", b"").decode("latin-1")
    raw_path = scope.get("raw_path")
    path = raw_path.decode("latin-1") if isinstance(raw_path, bytes) else websocket.url.path
    host = websocket.headers.get("host", "")
    return f"wss://{host}{path}" + (f"?{query}" if query else "")


async def twilio_endpoint(websocket: WebSocket) -> None:
    runtime = Runtime.of(websocket)
    token = runtime.settings.twilio_auth_token
    given = websocket.headers.get("x-twilio-signature")
    if given is not None and not (
        token and signature_matches(token, requested_url(websocket), given)
    ):
        refusal = Refusal(403, "invalid_signature", "X-Twilio-Signature does not match")
        log.info("refused a Twilio stream: %s", refusal.code)
        await refuse_websocket(websocket, refusal)
        return
    await websocket.accept()
    socket = StarletteSocket(websocket)
    try:
        await _serve(websocket, runtime, socket, signed=given is not None)
    finally:
        with trio.CancelScope(shield=True):
            await socket.drain()


async def _serve(
    websocket: WebSocket, runtime: Runtime, socket: StarletteSocket, *, signed: bool
) -> None:
    start = await _read_start(socket)
    if start is None:
        return
    client = _client(websocket, runtime, start, signed=signed)
    if client is None:
        await socket.close(1008, "a Twilio signature or a chorus_key is required")
        return
    config = call_config(start, runtime.sessions.options)
    if isinstance(config, str):
        await socket.close(1008, config.encode("ascii", "replace").decode()[:120])
        return
    services = runtime.sessions
    try:
        admissions = await admit_channels(services, client, config.channels)
    except Refusal as refusal:
        log.info("refused a Twilio stream for %s: %s", client, refusal.code)
        await socket.close(1013, refusal.code)
        return
    try:
        codec = TwilioCodec(start.tracks)
        for session_id in session_ids(start):  # the first one the store takes
            session = multichannel(
                services, socket, codec, config, "/v1/twilio", client, as_is,
                session_id=session_id, interleaved=False,
            )  # fmt: skip
            if await run_guarded(session):
                return
            log.info("Twilio stream %s: session id %s is taken", start.streamSid, session_id)
    finally:
        admissions.release()


def call_config(start: StartDetails, options: StreamOptions) -> Config | str:
    """The session's config: μ-law at 8 kHz, a channel per track, and what the stream's
    `customParameters` may set (`language`); or why it cannot be served."""
    problem = check_start(start)
    if problem is not None:
        return problem
    wanted = {
        name: start.customParameters[name]
        for name in CALL_PARAMETERS
        if name in start.customParameters
    }
    wanted.setdefault("language", "auto" if options.multilingual else "en")
    try:
        config = msgspec.convert(
            {**wanted, "encoding": "mulaw", "sample_rate": 8000, "channels": len(start.tracks)},
            Config,
            strict=False,
        )
    except msgspec.ValidationError as error:
        return f"customParameters: {error}"
    config = msgspec.structs.replace(config, multichannel=True)
    refused = check_multichannel(config, options)
    return config if refused is None else refused.message


async def _read_start(socket: StarletteSocket) -> StartDetails | None:
    """The stream's `start` (after `connected`); None, with the socket closed, if it does not
    come in time or something else comes first."""
    with trio.move_on_after(START_TIMEOUT_S):
        try:
            while True:
                event = parse(await socket.receive())
                if isinstance(event, Start):
                    return event.start
                if not isinstance(event, Connected):
                    await socket.close(1008, "`start` must come before media")
                    return None
        except ProtocolError as error:
            await socket.close(1008, error.message[:120])
            return None
        except ClientGone:
            return None
    await socket.close(1008, "no `start` in time")
    return None


def _client(
    websocket: WebSocket, runtime: Runtime, start: StartDetails, *, signed: bool
) -> str | None:
    """Whose session this is (module docstring); None: refused."""
    if signed:
        return key_identity("", runtime.settings.twilio_tenant)
    keys = runtime.security.api_keys
    if not keys.keys and not runtime.settings.twilio_auth_token:
        return Caller.of(websocket).client  # an open server: any stream, a key or not
    key = start.customParameters.get(KEY_PARAMETER)
    return keys.match(key) if key else None


def session_ids(start: StartDetails) -> list[str]:
    """The call's ids to try, in order: its SID, `<callSid>-<streamSid>`, then a new id (the
    session's row insert decides which is free, so two streams never share one); only a new
    id for SIDs that are no session ids."""
    fresh = new_session_id()
    if not SESSION_ID.fullmatch(start.callSid) or not SESSION_ID.fullmatch(start.streamSid):
        return [fresh]
    both = f"{start.callSid}-{start.streamSid}"
    return [start.callSid, *([both] if SESSION_ID.fullmatch(both) else []), fresh]
