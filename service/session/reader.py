"""The reader stage: the client's messages in, commands out (`service/session/supervisor.py`).

`read_frames` is one task of the session's nursery; it owns the command channel's send end and
a clone of the frame channel, and closes both on exit. It answers what needs no audio itself
(`ping`, `config` before audio, a frame over the limit, a protocol error), and keeps the
client's config until the first audio, which the settled `SessionConfig` precedes down the
command channel (`service/session/config.py`). It ends the session by returning: on `stop`, a
client that leaves (also while the pacer holds the command channel full: the transport's
`wait_gone`), a fatal protocol error, or an idle or length limit; the close ripples down.
It runs in the session's reading scope, which only `Ending.stop` cancels (the session's
handle, a segmenter that cannot decode the stream, a writer whose client stopped reading).
"""

from __future__ import annotations

import functools

import attrs
import trio

from protocol.codec import ProtocolError
from protocol.native import Config, Error, Finalize, KeepAlive, Ping, Pong, Stop
from service.session.config import SessionConfig, check_config, ready_frame, settle
from service.session.messages import Command, ServerFrame
from service.session.ports import ClientGone, FrameSocket, unless
from service.session.record import Session


async def read_frames(
    session: Session,
    commands: trio.MemorySendChannel[Command],
    frames: trio.MemorySendChannel[ServerFrame],
    *,
    task_status: trio.TaskStatus[SessionConfig | None] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Read the client's messages into commands, and answer those that need no audio.

    `session.config` is the one the route checked; a `config` frame may replace it until the
    first audio, when the reader settles it and hands it over (`task_status.started`), ahead
    of that audio. A session that ends before any audio hands over None as it returns.
    """
    handover = _Handover(task_status)
    await _read(session, commands, frames, handover)
    handover.give(None)


class _Handover:
    """The settled config, handed over once."""

    def __init__(self, task_status: trio.TaskStatus[SessionConfig | None]) -> None:
        self._task_status = task_status
        self.given = False

    def give(self, config: SessionConfig | None) -> None:
        if not self.given:
            self.given = True
            self._task_status.started(config)


async def _read(
    session: Session,
    commands: trio.MemorySendChannel[Command],
    frames: trio.MemorySendChannel[ServerFrame],
    handover: _Handover,
) -> None:
    socket, codec, options, ending = session.socket, session.codec, session.options, session.ending
    config = session.config
    limits = options.limits
    now = trio.current_time()
    deadline = now + limits.max_session_s
    idle_deadline = now + limits.idle_timeout_s
    audio_deadline = now + limits.audio_idle_timeout_s
    expired: _Expired | None = None
    with commands, frames, ending.reading:
        while expired is None:
            with trio.move_on_at(min(deadline, idle_deadline, audio_deadline)):
                try:
                    message = await socket.receive()
                except ClientGone:
                    ending.left()
                    return
                if _too_large(message, limits.max_frame_bytes, limits.max_message_bytes):
                    kind = "binary frame" if isinstance(message, bytes) else "text message"
                    await frames.send(
                        Error(
                            code="frame_too_large",
                            message=(
                                f"{kind} of {len(message)} bytes is over the limit ("
                                f"{limits.max_frame_bytes} binary, "
                                f"{limits.max_message_bytes} text)"
                            ),
                        )
                    )
                    continue
                try:
                    items = codec.decode(message)
                except ProtocolError as error:
                    await frames.send(
                        Error(code=error.code, message=error.message, fatal=error.fatal)
                    )
                    if error.fatal:
                        ending.ended("protocol_error", 1008)
                        return
                    continue
                for item in items:
                    # keepalives hold a session only once it has sent audio: one that never
                    # does gives its slot back after the idle timeout (issue 21)
                    settled = handover.given
                    if isinstance(item, bytes) or (isinstance(item, KeepAlive) and settled):
                        idle_deadline = trio.current_time() + limits.idle_timeout_s
                    if isinstance(item, bytes):
                        audio_deadline = trio.current_time() + limits.audio_idle_timeout_s
                    if isinstance(item, bytes) and not settled:
                        settled = True
                        handover.give(settle(config, options))
                    if isinstance(item, bytes | Finalize) and settled:  # before audio: no cut
                        try:
                            await _hand_on(commands, item, socket)
                        except trio.BrokenResourceError:
                            return  # the segmenter gave up on this stream
                        except ClientGone:
                            ending.left()
                            return
                    elif isinstance(item, Stop):
                        ending.ended("stop")
                        return
                    elif isinstance(item, Ping):
                        await frames.send(Pong(id=item.id))
                    elif isinstance(item, Config) and settled:
                        await frames.send(
                            Error(
                                code="config_after_audio",
                                message="`config` must come before any audio; it was ignored",
                            )
                        )
                    elif isinstance(item, Config):
                        problem = check_config(item, options)
                        config = config if problem is not None else item
                        ready = ready_frame(session.session_id, config, options)
                        await frames.send(problem or ready)
                # audio time counts too: a client faster than real time reaches it first
                if session.audio.received_s >= limits.max_session_s:
                    expired = _Expired("session_too_long", "audio", limits.max_session_s)
                continue
            now = trio.current_time()
            if now >= deadline:
                expired = _Expired("session_too_long", "session length", limits.max_session_s)
            elif now >= idle_deadline:
                expired = _Expired("idle_timeout", "no audio or keepalive", limits.idle_timeout_s)
            else:
                expired = _Expired(
                    "audio_idle_timeout", "no audio (keepalives only)", limits.audio_idle_timeout_s
                )
        await frames.send(
            Error(
                code=expired.code,
                fatal=True,
                message=f"{expired.what} for {expired.limit:g} s: closing",
            )
        )
        ending.ended(expired.code)


async def _hand_on(
    commands: trio.MemorySendChannel[Command], command: Command, socket: FrameSocket
) -> None:
    """Send `command` down; while the channel is full (the segmenter's pacer holds a client
    that is ahead of real time), a client that leaves ends the wait with `ClientGone`: what
    it sent meanwhile waits unread behind the full channel, its close too."""
    try:
        commands.send_nowait(command)
        return
    except trio.WouldBlock:
        pass
    if await unless(socket.wait_gone, functools.partial(commands.send, command)):
        return
    raise ClientGone("the client left while its audio waited for the pacer")


@attrs.frozen
class _Expired:
    code: str
    what: str
    limit: float


def _too_large(message: str | bytes, frame_limit: int, text_limit: int) -> bool:
    if isinstance(message, bytes):
        return len(message) > frame_limit
    return len(message) > text_limit
