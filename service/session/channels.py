"""One channel of a multichannel session, as the native pipeline sees it.

A multichannel session (`service/session/multichannel.py`) runs the one native pipeline
(`run_session`) once per channel, unchanged; what differs is what each pipeline is given:

* `ChannelSocket`: its `FrameSocket`. It receives the channel's messages from an inbox the
  session's demux fills (its audio as bytes, its `finalize`, `configure`, `stop`, `keepalive`
  and `ping` as native JSON), and sends the pipeline's frames, tagged with the channel, into
  the session's one outbox, which the session's writer sends on to the client. An inbox that
  closes is a client that left. The channel's task owns its outbox clone and closes it when
  the pipeline has ended.
* `ChannelCodec`: its `Codec`: native JSON both ways, without `seq` (the dialect's codec stamps
  and shapes each frame once, in the session's writer).
* `ChannelHooks`: its `SessionHooks`: the session's one stored session takes each channel's
  finals, renumbered so that the channels' utterances never collide (`stored_index`) and
  tagged with their channel. The session begins and ends the stored session itself.
"""

from __future__ import annotations

import msgspec
import trio

from actors.model.port import Samples
from protocol.codec import decode_client_message
from protocol.native import ClientFrame, Error, Final, ServerFrame, encoder
from service.session.ports import ClientGone, FrameSocket, SessionHooks, SessionInfo

Outgoing = tuple[int, str]  # (channel, a native server frame as JSON)


def stored_index(utterance: int, channel: int, channels: int) -> int:
    """Where a channel's utterance goes among the session's stored finals."""
    return utterance * channels + channel


class ChannelSocket:
    """One channel's end of the session's connection (see the module docstring)."""

    def __init__(
        self,
        channel: int,
        inbox: trio.MemoryReceiveChannel[str | bytes],
        outbox: trio.MemorySendChannel[Outgoing],
        connection: FrameSocket,
    ) -> None:
        self.channel = channel
        # the channel's task closes both when its pipeline has ended
        self.inbox, self.outbox, self._connection = inbox, outbox, connection
        self.close_code = 1000

    async def receive(self) -> str | bytes:
        try:
            return await self.inbox.receive()
        except (trio.EndOfChannel, trio.ClosedResourceError):
            raise ClientGone("the session's connection has stopped reading") from None

    async def send(self, message: str | bytes) -> None:
        try:
            await self.outbox.send((self.channel, str(message)))
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            raise ClientGone("the session's writer has gone") from None

    async def close(self, code: int = 1000, reason: str = "") -> None:
        """The pipeline is done with the client; the session closes the connection."""
        self.close_code = code

    async def wait_gone(self) -> None:
        await self._connection.wait_gone()


class ChannelCodec:
    """Native JSON both ways, with no `seq` (the dialect's codec stamps it, once)."""

    name = "channel"

    def decode(self, message: str | bytes) -> list[bytes | ClientFrame]:
        return decode_client_message(message)

    def encode(self, frame: ServerFrame) -> list[str | bytes]:
        return [encoder.encode(frame).decode()]


class ChannelHooks:
    """One channel's finals into the session's stored session (see the module docstring)."""

    def __init__(self, hooks: SessionHooks, channel: int, channels: int) -> None:
        self._hooks, self._channel, self._channels = hooks, channel, channels

    async def started(self, session: SessionInfo) -> Error | None:
        return None

    async def audio(self, samples: Samples) -> Error | None:
        return None

    async def final(self, frame: Final) -> Error | None:
        index = stored_index(frame.utterance, self._channel, self._channels)
        tagged = msgspec.structs.replace(frame, utterance=index, channel=self._channel)
        return await self._hooks.final(tagged)

    async def ended(self, reason: str, duration_s: float) -> None:
        return None
