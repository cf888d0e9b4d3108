"""What the stages of one session share: its meters and how it ends (all on one trio thread).

Each field has one writer: the segmenter counts the audio, the transcriber client keeps when
each final still owed was asked for and where the text shown stands (`Captions`: its drafts
worker and finals worker each move `shown_end` forward), and the stage that ends the session
says why. Nothing
outside the session touches this record: the server holds a `SessionHandle`
(`service/session/handle.py`), which asks for `statistics()` and calls `stop`. `stop` is the
one place that cancels the reader's scope, which the reader (and only it) runs in: the reader
stops taking input and closes its channels, and that close ripples down the pipeline.
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
        """How far the text is behind the audio, while someone speaks (0 between utterances)."""
        if self.open_since is None:
            return 0.0
        return max(0.0, received_s - self.shown_end)

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


@attrs.define
class SessionState:
    session_id: str
    received_samples: int = 0  # written by the segmenter
    speech_samples: int = 0  # written by the segmenter
    # when each final still owed was asked for (trio clock), oldest first; the transcriber client
    pending_finals: list[float] = attrs.field(factory=list)
    captions: Captions = attrs.field(factory=Captions)  # the transcriber client's workers
    stop_reason: str = "client_closed"
    close_code: int = 1000
    _left: trio.Event = attrs.field(factory=trio.Event, init=False)  # the client has gone
    _reading: trio.CancelScope = attrs.field(factory=trio.CancelScope, init=False)

    @property
    def client_gone(self) -> bool:
        """Set by the reader or the writer; the segmenter's pacer stops waiting for it."""
        return self._left.is_set()

    @client_gone.setter
    def client_gone(self, gone: bool) -> None:
        if gone:
            self._left.set()

    async def wait_client_gone(self) -> None:
        await self._left.wait()

    @property
    def reading(self) -> trio.CancelScope:
        """The scope the reader runs in; only `stop` cancels it."""
        return self._reading

    def stop(self, reason: str, code: int | None = None) -> None:
        """End the session cleanly: the reader stops taking input, the pipeline finishes every
        final it owes, and the socket closes with `code` (the one set so far when None)."""
        self.stop_reason = reason
        if code is not None:
            self.close_code = code
        self._reading.cancel()

    @property
    def received_s(self) -> float:
        return self.received_samples / SAMPLE_RATE

    @property
    def speech_s(self) -> float:
        return self.speech_samples / SAMPLE_RATE

    @property
    def lag_s(self) -> float:
        """How long the oldest final still owed has waited, in wall time. Not audio received
        past it: a client that sends ahead of real time (by up to the pacer's burst) would
        look 10 s behind while the model is keeping up, and admission would refuse everyone."""
        if not self.pending_finals:
            return 0.0
        return max(0.0, trio.current_time() - self.pending_finals[0])

    def statistics(self) -> SessionStatistics:
        return SessionStatistics(
            session_id=self.session_id,
            received_s=self.received_s,
            speech_s=self.speech_s,
            lag_s=self.lag_s,
            queue=len(self.pending_finals),
            caption_delay_s=round(self.captions.delay_s(self.received_s), 3),
            stop_reason=self.stop_reason,
            close_code=self.close_code,
            client_gone=self.client_gone,
        )
