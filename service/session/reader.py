"""The reader stage: the client's messages in, commands out (`service/session/supervisor.py`).

`read_frames` is the session's first task, started with `nursery.start`; it owns the command
channel's send end and a clone of the frame channel, and closes both on exit. It reads each
message and forwards what `ClientProtocol` (`service/session/inbound.py`, sans-IO) makes of
it: audio and `finalize` down the command channel, answers to the client, the settled config
to `run_session` at the first audio (`task_status.started`). It ends the session by returning:
on `stop`, a client that leaves (also while the pacer holds the command channel full: the
transport's `wait_gone`), a fatal protocol error, or an idle or length limit; the close
ripples down. It runs in the session's reading scope (`Ending.reading`), which only
`Ending.stop` cancels (the session's handle, a segmenter that cannot decode the stream, a
writer whose client stopped reading).
"""

from __future__ import annotations

import functools

import trio

from protocol.native import Finalize
from service.session.config import SessionConfig
from service.session.inbound import ClientProtocol, Ended, Forward
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
    """Read the client's messages and forward what they mean, until the session ends.

    `session.config` is the one the route checked; a `config` frame may replace it until the
    first audio, when it settles and is handed over, ahead of that audio. A session that ends
    before any audio hands over None as the reader returns.
    """
    reading = _Reading(session, commands, frames, task_status)
    with commands, frames, session.ending.reading:
        ended = await reading.read()
        if ended is not None:
            if ended.farewell is not None:  # a limit's: sent once nothing waits on the client
                await frames.send(ended.farewell)
            session.ending.ended(ended.reason, ended.code)
    reading.hand_over(None)


class _Reading:
    """The reader at work: its protocol, its channel ends, and the config's handover."""

    def __init__(
        self,
        session: Session,
        commands: trio.MemorySendChannel[Command],
        frames: trio.MemorySendChannel[ServerFrame],
        task_status: trio.TaskStatus[SessionConfig | None],
    ) -> None:
        self.session, self.commands, self.frames = session, commands, frames
        self.protocol = ClientProtocol(session, trio.current_time)
        self._task_status = task_status
        self._handed_over = False

    async def read(self) -> Ended | None:
        """Receive and forward until the session ends; None when the client has gone or the
        segmenter gave up on the stream."""
        protocol, socket = self.protocol, self.session.socket
        while True:
            with trio.move_on_at(protocol.deadline):
                try:
                    message = await socket.receive()
                except ClientGone as gone:
                    self.session.ending.left(gone.code)
                    return None
                for action in protocol.receive(message):
                    if isinstance(action, Ended):
                        return action
                    if not await self.forward(action):
                        return None
                continue
            return protocol.expire()

    async def forward(self, action: Forward) -> bool:
        """Act on one action; False when reading must end (the pipeline or the client gone)."""
        match action:
            case SessionConfig():
                self.hand_over(action)
            case bytes() | Finalize():
                try:
                    await _hand_on(self.commands, action, self.session.socket)
                except trio.BrokenResourceError:
                    return False  # the segmenter gave up on this stream
                except ClientGone:
                    self.session.ending.left()
                    return False
            case _:
                await self.frames.send(action)
        return True

    def hand_over(self, config: SessionConfig | None) -> None:
        """The settled config to `run_session`, once (None: the session had no audio)."""
        if not self._handed_over:
            self._handed_over = True
            self._task_status.started(config)


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
