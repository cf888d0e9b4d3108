"""What the client's messages mean for a session: the reader's sans-IO half.

As hypercorn's `protocol.handle(event)` does for its connections, `ClientProtocol` takes each
message the reader (`service/session/reader.py`) receives and says what to do with it; it
does no I/O and never awaits, so it reads top to bottom and is tested without a socket. The
dialect's codec (`protocol.codec.Codec`) turns the wire's shapes into native items; this
decides what they do: audio and `finalize` go down the pipeline once the config has settled,
the config settles at the first audio (`SessionConfig`, handed over by the reader), `ping`,
`config` and `configure` (the vocabulary, `SessionVocabulary`) are answered here, `stop`, a
fatal protocol error and the session's limits end it (`Ended`). It keeps the session's
deadlines (the length limit, the idle and audio-idle timeouts) and the client's config until
it settles.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

import attrs

from protocol.codec import Inbound, ProtocolError
from protocol.native import (
    Config,
    Configure,
    Configured,
    Error,
    Finalize,
    KeepAlive,
    Ping,
    Pong,
    Ready,
    Stop,
)
from service.session.config import SessionConfig, check_config, ready_frame, settle
from service.session.messages import Command
from service.session.ports import SessionLimits
from service.session.record import Session


@attrs.frozen
class Ended:
    """Reading ends: why, the close code (None: the one set so far), and the last frame for
    the client, sent once the reader has stopped waiting on it (a limit's fatal `error`)."""

    reason: str
    code: int | None = None
    farewell: Error | None = None


Reply = Ready | Pong | Configured | Error  # answered to the client at once
Forward = Command | SessionConfig | Reply  # what the reader forwards, each to its place
Action = Forward | Ended


class ClientProtocol:
    """One session's reading of its client (one per reader). `clock` is the trio clock."""

    def __init__(self, session: Session, clock: Callable[[], float]) -> None:
        self._session, self._clock = session, clock
        self._config = session.config
        self._limits = limits = session.limits
        self.settled = False
        now = clock()
        self._ends_at = now + limits.max_session_s
        self._idle_at = now + limits.idle_timeout_s
        self._audio_idle_at = now + limits.audio_idle_timeout_s

    @property
    def deadline(self) -> float:
        """When the session ends unless a message comes first (and counts)."""
        return min(self._ends_at, self._idle_at, self._audio_idle_at)

    def receive(self, message: str | bytes) -> Iterator[Action]:
        """What to do with one client message, an action at a time: the reader acts on each
        before the next is worked out (handing audio on may wait behind the pacer, and each
        item's deadlines count from when the reader gets to it)."""
        limits = self._limits
        too_large = too_large_error(message, limits)
        if too_large is not None:
            yield too_large
            return
        try:
            items = self._session.codec.decode(message)
        except ProtocolError as error:
            yield Error(code=error.code, message=error.message, fatal=error.fatal)
            if error.fatal:
                yield Ended("protocol_error", 1008)
            return
        for item in items:
            yield from self.handle(item)
        # audio time counts too: a client faster than real time reaches it first
        if self._session.audio.received_s >= limits.max_session_s:
            yield self._expired("session_too_long", "audio", limits.max_session_s)

    def handle(self, item: Inbound) -> Iterator[Action]:
        """What to do with one item the codec decoded."""
        now, limits = self._clock(), self._limits
        # keepalives hold a session only once it has sent audio: one that never does gives
        # its slot back after the idle timeout (issue 21)
        if isinstance(item, bytes) or (isinstance(item, KeepAlive) and self.settled):
            self._idle_at = now + limits.idle_timeout_s
        match item:
            case bytes():
                self._audio_idle_at = now + limits.audio_idle_timeout_s
                if not self.settled:
                    self.settled = True
                    yield settle(self._config, self._session.options)
                yield item
            case Finalize() if self.settled:  # before any audio there is nothing to cut
                yield item
            case Stop():
                yield Ended("stop")
            case Ping():
                yield Pong(id=item.id)
            case Config() if self.settled:
                yield Error(
                    code="config_after_audio",
                    message="`config` must come before any audio; it was ignored",
                )
            case Config():
                yield self._reconfigure(item)
            case Configure():  # the vocabulary, at any time (`service/session/vocabulary.py`)
                yield self._session.vocabulary.configure(item, self._config)

    def expire(self) -> Ended:
        """The deadline has passed: which limit ended the session."""
        limits, now = self._limits, self._clock()
        if now >= self._ends_at:
            return self._expired("session_too_long", "session length", limits.max_session_s)
        if now >= self._idle_at:
            return self._expired("idle_timeout", "no audio or keepalive", limits.idle_timeout_s)
        return self._expired(
            "audio_idle_timeout", "no audio (keepalives only)", limits.audio_idle_timeout_s
        )

    def _reconfigure(self, config: Config) -> Ready | Error:
        session = self._session
        problem = check_config(config, session.options)
        if problem is None:
            self._config = config
        return problem or ready_frame(
            session.session_id, self._config, session.options, session.resume
        )

    @staticmethod
    def _expired(code: str, what: str, limit: float) -> Ended:
        farewell = Error(code=code, fatal=True, message=f"{what} for {limit:g} s: closing")
        return Ended(code, farewell=farewell)


def too_large_error(message: str | bytes, limits: SessionLimits) -> Error | None:
    """The non-fatal `frame_too_large` for a message over the session's limits (None: within
    them); a multichannel session's demux checks each message so too, before it splits it."""
    if isinstance(message, bytes):
        if len(message) <= limits.max_frame_bytes:
            return None
    elif len(message) <= limits.max_message_bytes:
        return None
    kind = "binary frame" if isinstance(message, bytes) else "text message"
    return Error(
        code="frame_too_large",
        message=(
            f"{kind} of {len(message)} bytes is over the limit ("
            f"{limits.max_frame_bytes} binary, {limits.max_message_bytes} text)"
        ),
    )
