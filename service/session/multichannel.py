"""A multichannel session: one connection, one native pipeline per channel (issue 24).

A stereo call (agent and customer) is two streams of speech that overlap: averaged to mono they
garble each other. A multichannel session runs the one native pipeline (`run_session`) once per
channel, composed, not forked: each channel has its own segmenter, drafts and finals, its own
limits and pacer, and is a live stream of its own in `LiveSessions` while it runs (so admission
prices it and a drain stops it). The per-channel adapters are `service/session/channels.py`;
admitting and building one is `service/session/multichannel_serving.py`.

`run_multichannel` owns one nursery: the demux (`_read`) reads the client, decodes with the
dialect's codec and hands each channel its part (interleaved audio split by
`protocol.multichannel.Deinterleaver`, a dialect's `ChannelAudio` as it is, a `finalize` to its
channel or to all, `configure`, `stop` and `keepalive` to all, `ping` to channel 0); each
channel's task
runs its pipeline, then closes its inbox and outbox; the writer (`_write`) sends every
channel's frames on through the dialect's codec, tagged with their channel: one `ready` (the
session's), then the channels' frames as they come, then one `stopped` once every channel has
stopped (their finals joined in the order they came) and the close. What the client asked once
the session answers once (`ChannelAnswers`, `service/session/channel_answers.py`): one
`finalized` after every targeted channel's final, one `configured`. The session is stored once
(`hooks`), its finals tagged with their channel. When every channel has ended the demux is
cancelled; a client that leaves ends the demux, which closes the inboxes, and each channel reads
that as its client gone (its finals still reach the store). A channel that ends while others go
on (its idle timeout, a limit) is logged and told to the client once, as a non-fatal `Error`
`channel_ended`; what is sent to it afterwards is dropped.

Memory: each channel's pipeline holds what `supervisor.memory_bound` says of a mono session of
the same encoding (its commands are the channel's share of each client message), plus the
session's own: `queue_size` messages in each channel's inbox, `queue_size` + `channels` frames
in the outbox (16 KiB each at most), and the message being split (one client message and its
split copy). A two-channel call is about two sessions' worth.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager, ExitStack, suppress
from typing import Protocol

import attrs
import msgspec
import trio

from protocol.codec import Inbound, ProtocolError
from protocol.multichannel import ChannelAudio, Deinterleaver
from protocol.native import (
    Config,
    Configure,
    Error,
    Final,
    Finalize,
    KeepAlive,
    Partial,
    Ping,
    Ready,
    ServerFrame,
    SpeechStarted,
    Stop,
    Stopped,
    UtteranceEnd,
    encoder,
    server_decoder,
)
from service.session.channel_answers import ChannelAnswers
from service.session.channels import ChannelHooks, ChannelSocket, Outgoing
from service.session.config import ready_frame
from service.session.handle import SessionHandle
from service.session.inbound import too_large_error
from service.session.ports import (
    ClientGone,
    FrameSocket,
    SessionHooks,
    SessionInfo,
    StreamOptions,
    unless,
)
from service.session.record import Session, new_session_id
from service.session.supervisor import run_session
from service.session.vocabulary import configure_error

log = logging.getLogger("chorus.session")
STOP, KEEPALIVE = '{"type":"stop"}', '{"type":"keepalive"}'
ChannelMaker = Callable[[int, ChannelSocket, SessionHooks], Session]


class MuxCodec(Protocol):
    """A dialect's codec as a multichannel session uses it: it may decode `ChannelAudio`."""

    name: str

    def decode(self, message: str | bytes) -> Sequence[Inbound | ChannelAudio]: ...

    def encode(self, frame: ServerFrame) -> list[str | bytes]: ...


@attrs.frozen(kw_only=True)
class Multichannel:
    """One multichannel session, as `run_multichannel` runs it."""

    socket: FrameSocket  # the route owns the connection
    codec: MuxCodec  # the dialect's
    config: Config  # the client's: `channels` of them, interleaved unless the codec splits them
    options: StreamOptions
    hooks: SessionHooks  # the one stored session
    make_channel: ChannelMaker  # each channel's `Session`, around its socket and hooks
    hold: Callable[[SessionHandle], AbstractContextManager[None]]  # live while it runs
    interleaved: bool = True  # False: the codec decodes `ChannelAudio`, never bare bytes
    session_id: str = attrs.field(factory=new_session_id)
    route: str = "/v1/stream"
    client: str = "anonymous"

    def info(self) -> SessionInfo:
        return SessionInfo(
            self.session_id, self.route, self.client, self.options.model, self.config
        )


@attrs.define
class _Outcome:
    """What the writer gathers for the session's `stopped`."""

    answers: ChannelAnswers  # the session's one answer to each `finalize` and `configure`
    finals: list[str] = attrs.field(factory=list)
    duration_s: float = 0.0
    utterances: int = 0
    fatal: bool = False  # the demux met a fatal protocol error: close 1008
    client_gone: bool = False  # the demux saw the client leave: nothing more is sent


async def run_multichannel(session: Multichannel) -> None:
    """Run the session until every channel has ended; the caller owns the connection."""
    channels, size = session.config.channels, session.options.limits.queue_size
    outbox, outgoing = trio.open_memory_channel[Outgoing | ServerFrame](size)
    inboxes = [trio.open_memory_channel[str | bytes](size) for _ in range(channels)]
    sockets = [
        ChannelSocket(channel, receive, outbox.clone(), session.socket)
        for channel, (_, receive) in enumerate(inboxes)
    ]
    parts = [
        session.make_channel(socket.channel, socket, ChannelHooks(session.hooks, c, channels))
        for c, socket in enumerate(sockets)
    ]
    outcome = _Outcome(answers=ChannelAnswers(channels))
    notice = await session.hooks.started(session.info())
    if session.config.record and notice is None:
        message = "multichannel sessions are not recorded; the session goes on unrecorded"
        notice = Error(code="recording_disabled", message=message)
    try:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(_write, session, sockets, outgoing, outcome, notice)
            with outbox:
                reading = await nursery.start(
                    _read, session, [send for send, _ in inboxes], outbox.clone(), outcome
                )
            async with trio.open_nursery() as pipelines:
                for socket, part in zip(sockets, parts, strict=True):
                    pipelines.start_soon(_run_channel, session, socket, part)
            reading.cancel()
    finally:
        reason = parts[0].ending.reason if parts else "stop"
        duration = max((part.audio.received_s for part in parts), default=0.0)
        await session.hooks.ended(reason, round(duration, 3))


async def _run_channel(session: Multichannel, socket: ChannelSocket, part: Session) -> None:
    with socket.inbox, socket.outbox, session.hold(SessionHandle.of(part)):
        await run_session(part)


async def _read(
    session: Multichannel,
    inboxes: list[trio.MemorySendChannel[str | bytes]],
    outbox: trio.MemorySendChannel[Outgoing | ServerFrame],
    outcome: _Outcome,
    *,
    task_status: trio.TaskStatus[trio.CancelScope] = trio.TASK_STATUS_IGNORED,
) -> None:
    """The demux: read the client until it stops or leaves, or every channel has ended."""
    with trio.CancelScope() as scope, outbox, ExitStack() as stack:
        for inbox in inboxes:
            stack.enter_context(inbox)
        task_status.started(scope)
        demux = _Demux(session, inboxes, outbox, outcome.answers)
        while True:
            try:
                message = await session.socket.receive()
            except ClientGone:
                outcome.client_gone = True
                return
            too_large = too_large_error(message, session.options.limits)
            if too_large is not None:  # as a mono session's reader does (`inbound.py`)
                await outbox.send(too_large)
                continue
            try:
                items = session.codec.decode(message)
            except ProtocolError as error:
                await outbox.send(Error(code=error.code, message=error.message, fatal=error.fatal))
                if error.fatal:
                    outcome.fatal = True
                    await demux.to_all(STOP)
                    return
                continue
            for item in items:
                if not await demux.route(item):
                    outcome.client_gone = demux.gone
                    return


class _Demux:
    """Each decoded item to its channel(s); `route` says False once reading must end."""

    def __init__(
        self,
        session: Multichannel,
        inboxes: list[trio.MemorySendChannel[str | bytes]],
        outbox: trio.MemorySendChannel[Outgoing | ServerFrame],
        answers: ChannelAnswers,
    ) -> None:
        self.socket, self.inboxes, self.outbox = session.socket, inboxes, outbox
        self.answers = answers
        config = session.config
        self.splitter = (
            Deinterleaver(config.encoding, config.channels) if session.interleaved else None
        )
        self.gone = False
        self.gone_channels: set[int] = set()

    async def route(self, item: Inbound | ChannelAudio) -> bool:
        match item:
            case ChannelAudio(channel=channel, data=data):
                await self.give(channel, data)
            case bytes() if self.splitter is not None:
                for channel, part in enumerate(self.splitter.split(item)):
                    if part:
                        await self.give(channel, part)
            case Finalize(channel=None):
                await self.finalize(item, range(len(self.inboxes)))
            case Finalize(channel=int(channel)) if 0 <= channel < len(self.inboxes):
                await self.finalize(item, [channel])
            case Finalize(channel=channel):
                message = f"no channel {channel}: this session has {len(self.inboxes)}"
                await self.outbox.send(Error(code="invalid_channel", message=message))
            case Stop():
                await self.to_all(STOP)
                return False
            case KeepAlive():
                await self.to_all(KEEPALIVE)
            case Configure():  # every channel's vocabulary; answered once (`ChannelAnswers`)
                refused = configure_error(item)  # checked once: a dialect's is unchecked
                if refused is not None:
                    await self.outbox.send(refused)
                else:
                    await self.to_all(encoder.encode(item).decode())
            case Ping():
                await self.give(0, encoder.encode(item).decode())
            case Config():
                message = "a multichannel session takes its config from the query only"
                await self.outbox.send(Error(code="config_after_start", message=message))
        return not self.gone

    async def finalize(self, finalize: Finalize, channels: Sequence[int]) -> None:
        """`finalize` to `channels`; with an `id`, each sees the session's token instead, and
        the client gets one `finalized` once all have answered (a channel that has ended
        never will: it is counted as done)."""
        if finalize.id is None:
            message = _for_a_channel(finalize, None)
            for channel in channels:
                await self.give(channel, message)
            return
        message = _for_a_channel(finalize, self.answers.ask(finalize.id, set(channels)))
        for channel in channels:
            if not await self.give(channel, message):
                for frame in self.answers.stopped(channel):
                    await self.outbox.send(frame)

    async def to_all(self, message: str) -> None:
        for channel in range(len(self.inboxes)):
            await self.give(channel, message)

    async def give(self, channel: int, message: str | bytes) -> bool:
        """`message` to `channel`'s inbox (False: not given); a channel that has ended takes
        nothing more, and while one is full a client that leaves ends the wait (and the
        demux)."""
        inbox = self.inboxes[channel]
        try:
            try:
                inbox.send_nowait(message)
            except trio.WouldBlock:
                if not await unless(self.socket.wait_gone, functools.partial(inbox.send, message)):
                    self.gone = True
                    return False
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            await self.ended(channel)
            return False
        return True

    async def ended(self, channel: int) -> None:
        """A channel that has ended while the session goes on: logged and told to the client
        once (a non-fatal `channel_ended`), never dropped silently."""
        if channel in self.gone_channels:
            return
        self.gone_channels.add(channel)
        log.info("a multichannel session's channel %d has ended; its audio is dropped", channel)
        message = f"channel {channel} has ended; what is sent to it is dropped"
        await self.outbox.send(Error(code="channel_ended", message=message, fatal=False))


def _for_a_channel(finalize: Finalize, token: int | None) -> str:
    """The `finalize` as a channel's pipeline takes it: without a channel, and with the
    session's token for its `id`."""
    return encoder.encode(msgspec.structs.replace(finalize, channel=None, id=token)).decode()


async def _write(
    session: Multichannel,
    sockets: list[ChannelSocket],
    outgoing: trio.MemoryReceiveChannel[Outgoing | ServerFrame],
    outcome: _Outcome,
    notice: Error | None,
) -> None:
    """Every channel's frames to the client, tagged, as one stream (module docstring)."""
    limits = session.options.limits
    sender = _Sender(session.socket, session.codec, limits.send_timeout_s, outcome)
    await sender.send(ready_frame(session.session_id, session.config, session.options))
    if notice is not None:
        await sender.send(notice)
    with outgoing:
        async for item in outgoing:
            for frame in _tagged(item, outcome):
                await sender.send(frame)
    await sender.send(
        Stopped(
            session_id=session.session_id,
            transcript=" ".join(outcome.finals),
            duration_s=round(outcome.duration_s, 3),
            utterances=outcome.utterances,
        )
    )
    codes = [socket.close_code for socket in sockets if socket.close_code != 1000]
    await sender.close(1008 if outcome.fatal else (codes[0] if codes else 1000))


def _tagged(item: Outgoing | ServerFrame, outcome: _Outcome) -> list[ServerFrame]:
    """What the client gets for one outbox item: a channel's frame tagged with its channel;
    none, or the session's one answer, where the session answers as a whole."""
    if not isinstance(item, tuple):
        return [item]  # the demux's own
    channel, text = item
    frame = server_decoder.decode(text)
    answers = outcome.answers.answered(channel, frame)
    if answers is not None:
        return answers
    match frame:
        case Stopped():
            outcome.duration_s = max(outcome.duration_s, frame.duration_s)
            outcome.utterances += frame.utterances
            return outcome.answers.stopped(channel)
        case SpeechStarted() | Partial() | UtteranceEnd():
            frame.channel = channel
        case Final():
            frame.channel = channel
            if frame.text.strip():
                outcome.finals.append(frame.text.strip())
        case Ready():
            return []
    return [frame]


class _Sender:
    """Sends to the client until it leaves or stops reading for `timeout_s`; then nothing."""

    def __init__(
        self, socket: FrameSocket, codec: MuxCodec, timeout_s: float, outcome: _Outcome
    ) -> None:
        self.socket, self.codec, self.timeout_s = socket, codec, timeout_s
        self._outcome = outcome
        self._gone = False

    @property
    def gone(self) -> bool:
        return self._gone or self._outcome.client_gone

    async def send(self, frame: ServerFrame) -> None:
        if self.gone:
            return
        with trio.move_on_after(self.timeout_s) as sending:
            try:
                for message in self.codec.encode(frame):
                    await self.socket.send(message)
            except ClientGone:
                self._gone = True
        self._gone = self._gone or sending.cancelled_caught

    async def close(self, code: int) -> None:
        if not self.gone:
            with suppress(ClientGone):
                await self.socket.close(code)
