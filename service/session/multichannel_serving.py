"""Admitting and building a multichannel session (`service/session/multichannel.py`).

`serve_multichannel` is what a WebSocket route calls for `multichannel=true` with more than one
channel, as `serve_session` (`service/session/admission.py`) is for one: it checks the config,
admits the session at the price of one session per channel (`admit_channels`: a gate slot each,
then `admit`, then room in the capacity plan for every channel), accepts and runs it. A route
that must read the client before it knows who it is (Twilio's `start`,
`service/routes/twilio.py`) accepts first, then calls `admit_channels` and `multichannel`
itself. The admission slots are given back when the session ends, however it ends.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable

import attrs
import msgspec
import trio
from starlette.websockets import WebSocket

from actors.store.schema import AlreadyStored
from protocol.native import COMPANDED, Config, Error, Final
from service.policy.caller import Caller
from service.policy.limits import Admission
from service.policy.refusal import Refusal
from service.session.admission import (
    SessionServices,
    _subprotocol,
    admit,
    admitted,
    observe,
    turn_away,
)
from service.session.channels import ChannelCodec, ChannelSocket
from service.session.config import check_config
from service.session.multichannel import Multichannel, MuxCodec, run_multichannel
from service.session.ports import SessionHooks, StreamOptions
from service.session.record import Session, as_is, new_session_id
from service.session.recorder import StoreHooks
from service.session.sockets import StarletteSocket

log = logging.getLogger("chorus.session")
RAW = ("pcm_s16le", "pcm_f32le", *COMPANDED)


def check_multichannel(config: Config, options: StreamOptions) -> Error | None:
    """What is wrong with a multichannel config (None: nothing)."""
    if config.encoding not in RAW:
        return Error(
            code="invalid_config",
            message="multichannel needs raw audio (pcm_s16le, pcm_f32le, mulaw or alaw): "
            "a container's channels are mixed by its decoder",
        )
    return check_config(config, options)


@attrs.frozen
class Admissions:
    """A multichannel session's admission slots, one per channel."""

    slots: tuple[Admission, ...]

    def release(self) -> None:
        for slot in self.slots:
            slot.release()


async def admit_channels(services: SessionServices, client: str, channels: int) -> Admissions:
    """`channels` live session slots for `client`, or `Refusal`: the caps for every channel,
    then `admit` (which spends one rate-limit token: one call is one recording), then room in
    the capacity plan for all of them. Every slot is given back on a refusal."""
    slots: list[Admission] = []
    admitted = False
    try:
        for _ in range(channels):
            slots.append(services.gate.admit(client))
        refusal = await admit(services, client)
        if refusal is not None:
            raise refusal
        if not _fits(services, channels):
            raise Refusal(
                503,
                "at_capacity",
                f"the server cannot serve {channels} more live channels on time; try again soon",
                retry_after=10,
            )
        admitted = True
        return Admissions(tuple(slots))
    finally:
        if not admitted:
            for slot in slots:
                slot.release()


def _fits(services: SessionServices, channels: int) -> bool:
    if services.settings.admission_utilization <= 0:
        return True
    live = observe(services.capacity, services.transcriber, services.live, trio.current_time())
    allowance = services.capacity.allowance(live)
    return allowance is None or allowance >= channels


async def serve_multichannel(
    websocket: WebSocket,
    services: SessionServices,
    codec: MuxCodec,
    config: Config,
    *,
    route: str,
    annotate: Callable[[Final], Final] = as_is,
    refuse: Callable[[Error], Awaitable[None]] | None = None,
) -> None:
    """Check the config, admit, accept and run one multichannel session."""
    client = Caller.of(websocket).client
    problem = check_multichannel(config, services.options)
    if problem is not None and refuse is not None:
        await refuse(problem)
        return
    try:
        admissions = await admit_channels(services, client, config.channels)
    except Refusal as refusal:
        await turn_away(websocket, route, client, refusal)
        return
    async with admitted(websocket, admissions) as socket:
        await websocket.accept(subprotocol=_subprotocol(websocket, None))
        if problem is not None:
            problem.fatal = True
            for message in codec.encode(problem):
                await socket.send(message)
            await socket.close(1008, problem.code)
            return
        session = multichannel(services, socket, codec, config, route, client, annotate)
        if not await run_guarded(session):  # a new id is another session's: never so far
            log.error("multichannel session %s: its id is taken", session.session_id)
            await socket.close(1011, "internal error")


async def run_guarded(session: Multichannel) -> bool:
    """Run it; False, with nothing run or sent, when its id is another session's (the store
    refused its row: `AlreadyStored`). A failure is logged and closes the connection with 1011."""
    try:
        await run_multichannel(session)
    except AlreadyStored:  # raised only by `started`, before the session's nursery
        return False
    except Exception:
        log.exception("multichannel session %s failed", session.session_id)
        await session.socket.close(1011, "internal error")
    return True


def multichannel(
    services: SessionServices,
    socket: StarletteSocket,
    codec: MuxCodec,
    config: Config,
    route: str,
    client: str,
    annotate: Callable[[Final], Final],
    *,
    session_id: str | None = None,
    interleaved: bool = True,
) -> Multichannel:
    """The session, its channels built around the app's services (each one a mono native
    session of the same encoding and rate, unrecorded)."""
    session_id = session_id or new_session_id()
    mono = msgspec.structs.replace(config, channels=1, multichannel=False, record=False)

    def make_channel(channel: int, channel_socket: ChannelSocket, hooks: SessionHooks) -> Session:
        return Session(
            socket=channel_socket,
            codec=ChannelCodec(),
            transcriber=services.transcriber,
            config=mono,
            options=services.options,
            session_id=f"{session_id}.{channel}",
            route=route,
            client=client,
            hooks=hooks,
            annotate=annotate,
            vad=services.vad,
            final_waits=services.final_waits,
        )

    return Multichannel(
        socket=socket,
        codec=codec,
        config=config,
        options=services.options,
        hooks=services.feeds.hooks(StoreHooks(services.store, record=False)),
        make_channel=make_channel,
        hold=services.live.holding,
        interleaved=interleaved,
        session_id=session_id,
        route=route,
        client=client,
    )
