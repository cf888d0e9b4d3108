"""A session's live parts: each has one owner that writes it, and the rest read it.

- `AudioMeter`, the segmenter's: the audio received and how much of it was speech. The reader
  reads it (a session's length counts audio time), the transcriber client (`stopped`, the
  caption delay), and the handle (`statistics()`, for admission and `/health`).
- `FinalsMeter`, the transcriber client's: when each final still owed was asked for, and where
  the text shown stands (`Captions`). The handle reads it.
- `Ending`, the reader's: the scope the reader runs in, why the session ends and with which
  close code, and whether the client has gone. It is the one part that others act on, through
  its methods: `stop` (the handle; a segmenter that cannot decode the stream; a writer whose
  client stopped reading) asks the reader to stop taking input, and the writer, which sees a
  client vanish on a send, says so (`left`). The segmenter waits on `wait_client_gone`, the
  writer reads the close code.

All on one trio thread; each meter's writes are plain method calls on it. Nothing outside the
session touches them but its `SessionHandle` (`service/session/handle.py`), which reads
`statistics()` and calls `stop`.
"""

from __future__ import annotations

import attrs
import trio

from actors.model.port import SAMPLE_RATE


@attrs.define
class Captions:
    """Where this session's text stands (one writer each: drafts and finals workers).

    `shown_end` is the audio time up to which the newest text sent covers the speech;
    `open_since` is the start of the utterance being spoken, None between utterances."""

    shown_end: float = 0.0
    open_since: float | None = None

    def delay_s(self, received_s: float) -> float:
        """How far the text is behind the speech, while someone speaks (0 between utterances).

        Counted from the newest text's end, or from the utterance's start when the text ends
        before it: the silence before an utterance is not speech the text owes."""
        if self.open_since is None:
            return 0.0
        return max(0.0, received_s - max(self.shown_end, self.open_since))

    def shown(self, end: float) -> None:
        self.shown_end = max(self.shown_end, end)


@attrs.frozen
class SessionStatistics:
    session_id: str
    received_s: float  # audio received so far
    speech_s: float  # of it, what the segmenter judged speech (the open utterance too)
    lag_s: float  # how long the oldest final still owed has waited
    queue: int  # finals still owed
    caption_delay_s: float  # how far the newest text is behind the speech (0 between utterances)
    stop_reason: str
    close_code: int
    client_gone: bool


class AudioMeter:
    """The session's audio so far, in 16 kHz samples. Written by the segmenter only. A resumed
    session's starts at `origin_s`, the audio time its earlier connections reached, of which
    `origin_speech_s` was speech (its stored finals)."""

    def __init__(self, origin_s: float = 0.0, origin_speech_s: float = 0.0) -> None:
        self.origin_s = origin_s
        self._received = round(origin_s * SAMPLE_RATE)
        self._origin_speech = round(origin_speech_s * SAMPLE_RATE)
        self._speech = 0

    def received(self, samples: int) -> None:
        """`samples` more of audio decoded (the segmenter, before it cuts them)."""
        self._received += samples

    def spoken(self, samples: int) -> None:
        """Of the audio so far, `samples` were speech (the segmenter, after it cut them)."""
        self._speech = samples

    @property
    def received_s(self) -> float:
        return self._received / SAMPLE_RATE

    @property
    def speech_s(self) -> float:
        return (self._origin_speech + self._speech) / SAMPLE_RATE


class FinalsMeter:
    """The finals a session still owes and where its text stands. Written by the transcriber
    client only (its router asks, its finals worker answers, both workers move `captions`)."""

    def __init__(self) -> None:
        self._asked: list[float] = []  # when each final still owed was asked for, oldest first
        self.captions = Captions()

    def asked(self) -> None:
        self._asked.append(trio.current_time())

    def answered(self) -> float:
        """The oldest final owed is out; how long it waited since it was asked for."""
        return max(0.0, trio.current_time() - self._asked.pop(0))

    @property
    def queue(self) -> int:
        return len(self._asked)

    @property
    def lag_s(self) -> float:
        """How long the oldest final still owed has waited, in wall time. Not audio received
        past it: a client that sends ahead of real time (by up to the pacer's burst) would
        look 10 s behind while the model is keeping up, and admission would refuse everyone."""
        if not self._asked:
            return 0.0
        return max(0.0, trio.current_time() - self._asked[0])


@attrs.define
class Ending:
    """How the session ends: the reader's scope, the reason and close code, the client's leave."""

    reason: str = "client_closed"
    close_code: int = 1000
    client_code: int | None = None  # the close code the client sent, when it sent one
    _left: trio.Event = attrs.field(factory=trio.Event, init=False)  # the client has gone
    _reading: trio.CancelScope = attrs.field(factory=trio.CancelScope, init=False)

    @property
    def reading(self) -> trio.CancelScope:
        """The scope the reader runs in; only `stop` cancels it."""
        return self._reading

    def stop(self, reason: str, code: int | None = None) -> None:
        """End the session cleanly: the reader stops taking input, the pipeline finishes every
        final it owes, and the socket closes with `code` (the one set so far when None)."""
        self.ended(reason, code)
        self._reading.cancel()

    def ended(self, reason: str, code: int | None = None) -> None:
        """Say why the session ends (the reader, as it returns), without cancelling anything."""
        self.reason = reason
        if code is not None:
            self.close_code = code

    @property
    def client_gone(self) -> bool:
        """Set by the reader or the writer; the segmenter's pacer stops waiting for it."""
        return self._left.is_set()

    def left(self, code: int | None = None) -> None:
        """The client has gone (a receive or a send said so, or it stopped reading); `code`:
        the close code it sent, when known."""
        if code is not None and not self._left.is_set():
            self.client_code = code
        self._left.set()

    @property
    def resumable(self) -> bool:
        """Whether the client may want to come back (`service/session/resume.py`): its
        connection was lost (no close of its own, or not a normal one) or the server is
        draining; not after `stop`, a normal close, an error or a limit."""
        if self.reason == "server_shutdown":
            return True
        return self.reason == "client_closed" and self.client_code != 1000

    async def wait_client_gone(self) -> None:
        await self._left.wait()
