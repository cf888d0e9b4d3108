"""Deepgram Flux (`WS /v2/listen`): conversational turns as a codec over the native session.

Sans-IO. `FluxCodec` (one per connection) keeps the turn state and translates both ways; the
query parameters and the thresholds it ends turns by are `protocol.dialects.flux_query`'s
(bad ones are refused before the upgrade with HTTP 400, as on `/v1/listen`).

Turns are the segmenter's utterances. Each draft of the open utterance (a native `partial`,
about every `UPDATE_S` of audio: the route asks for drafts that often) becomes a `TurnInfo`:
`StartOfTurn` for the turn's first text, then `Update`, `EagerEndOfTurn` when the end-of-turn
confidence first reaches `eager_eot_threshold`, `TurnResumed` when it falls back under it. A
turn starts at its first text, not at the VAD's onset, so that noise the model hears nothing
in opens no turn that would never end; a draft of the next utterance that comes before this
turn's final is not sent, so turns never overlap. The turn ends (`EndOfTurn`, with the final
transcript and words, `trigger`) when the confidence reaches `eot_threshold` ("model"), when
the silence reaches `eot_timeout_ms` whatever the confidence ("timeout"), on `ForceEndTurn`
("manual"); the codec asks the session to finalize the utterance (a native `finalize`, sent
with the next client message), and the final's frame ends the turn. The segmenter's own
endpointing is the longest timeout, a backstop.

End-of-turn confidence (`end_of_turn_confidence`): from what the segmenter and the draft
know, `min(1, silence / REFERENCE_SILENCE_S + PUNCTUATION_WEIGHT x ends_sentence)`, where
`silence` is the VAD's silence since the last speech at the draft's end and `ends_sentence`
is 1 when the draft ends in final punctuation (`.`, `?`, `!`). With the defaults a turn ends
after 0.7 s of silence, or 0.4 s after a finished sentence.

Client messages: binary audio, `CloseStream` (the last turn ends, then close 1000),
`ForceEndTurn`, `KeepAlive`, `Configure` {`thresholds`, `keyterms`}: answered by exactly one
`ConfigureSuccess` (the thresholds and key terms in effect) or `ConfigureFailure`. Every
server message carries `sequence_id`, from 0 (`Connected`) up by one a message. A message the
server cannot accept, the stream going on (bad JSON, an unknown type, one over the size limit),
is answered with `Warning` {`request_id`, `code`, `description`}: deepgram-sdk takes every
`Error` as fatal (`ListenV2FatalError`), so `Error` {`code`, `description`} is sent only when
the stream ends with it.
"""

from __future__ import annotations

import uuid

import attrs
import msgspec

from protocol.codec import Inbound, ProtocolError
from protocol.dialects.common import merge_punctuation
from protocol.dialects.configure import CONFIGURE_FAILURES, configure_failure_on
from protocol.dialects.flux_messages import (
    CloseStream,
    ConfigureFailure,
    ConfigureSuccess,
    Connected,
    FatalError,
    FluxWarning,
    ForceEndTurn,
    Message,
    Thresholds,
    Trigger,
    TurnEvent,
    TurnInfo,
    TurnWord,
    client_messages,
)
from protocol.dialects.flux_messages import Configure as ConfigureMessage
from protocol.dialects.flux_query import FluxThresholds
from protocol.native import (
    Configure,
    Configured,
    Error,
    Final,
    Finalize,
    KeepAlive,
    Partial,
    Ready,
    ServerFrame,
    Stop,
    Word,
)

UPDATE_S = 0.25  # drafts (and so `Update`s) this often, in audio time
REFERENCE_SILENCE_S = 1.0  # the silence that alone makes the confidence 1
PUNCTUATION_WEIGHT = 0.3  # what a draft that ends a sentence adds to it
FINAL_MARKS = (".", "?", "!", "。", "？", "！")
LATE_S = 1.0  # a turn's end asked this far behind the audio received waits for a newer draft


def end_of_turn_confidence(silence_s: float, transcript: str) -> float:
    """How sure the turn is over: the silence so far against `REFERENCE_SILENCE_S`, plus
    `PUNCTUATION_WEIGHT` when the draft ends a sentence; between 0 and 1."""
    ends_sentence = transcript.rstrip().rstrip("\"'”’)]").endswith(FINAL_MARKS)
    value = max(0.0, silence_s) / REFERENCE_SILENCE_S + PUNCTUATION_WEIGHT * ends_sentence
    return round(min(1.0, value), 3)


@attrs.define
class _Turn:
    utterance: int
    start: float
    started: bool = False  # `StartOfTurn` sent
    eager: bool = False  # `EagerEndOfTurn` sent and not resumed since
    confidence: float = 0.0
    silence_s: float = 0.0


class FluxCodec:
    """One connection's turns, and its translation between Flux messages and native frames."""

    name = "flux"

    def __init__(self, thresholds: FluxThresholds, *, bytes_per_second: int = 0) -> None:
        self.thresholds = thresholds
        self.request_id = ""
        self._sequence = 0
        self._bytes_per_second = bytes_per_second  # 0: a container, its time unknown here
        self._received = 0  # audio bytes
        self._pending: list[FluxThresholds] = []  # per unanswered `Configure`
        self._turn: _Turn | None = None
        self._turn_index = 0
        self._end: tuple[Trigger, float] | None = None  # a turn end to ask for, the draft's end
        self._trigger: Trigger | None = None  # why the coming final ends its turn
        self._closing = False

    # client → native

    def decode(self, message: str | bytes) -> list[Inbound]:
        if isinstance(message, bytes):
            if not message:
                return [Stop()]
            self._received += len(message)
            return [*self._ending(), message]
        parsed = configure_failure_on(client_messages.parse, message)
        match parsed:
            case CloseStream():
                self._closing = True
                return [Stop()]
            case ForceEndTurn():
                if self._turn is not None:
                    self._end, self._trigger = None, self._trigger or "manual"
                return [Finalize()]
            case ConfigureMessage():
                return [self._configure(parsed)]
        return [KeepAlive()]

    def _ending(self) -> list[Inbound]:
        """A `finalize` when a draft said the turn is over (unless the audio is far past it)."""
        if self._end is None or self._trigger is not None:
            return []
        trigger, draft_end = self._end
        self._end = None
        received_s = self._received / self._bytes_per_second if self._bytes_per_second else 0.0
        if received_s - draft_end > LATE_S:
            return []  # the session is behind the client: a newer draft decides
        self._trigger = trigger
        return [Finalize()]

    def _configure(self, message: ConfigureMessage) -> Configure:
        base = self._pending[-1] if self._pending else self.thresholds
        thresholds = base.updated(message.thresholds or Thresholds())
        if (problem := thresholds.problem()) is not None:
            raise ProtocolError("invalid_configure", problem[1])
        self._pending.append(thresholds)
        keyterms = message.keyterms
        return Configure(keyterms=[keyterms] if isinstance(keyterms, str) else keyterms)

    # native → client

    def encode(self, frame: ServerFrame) -> list[str | bytes]:
        messages: list[Message] = []
        match frame:
            case Ready(session_id=session_id):
                self.request_id = _as_uuid(session_id)
                messages.append(Connected(request_id=self.request_id))
            case Partial() if self._turn is None or self._turn.utterance == frame.utterance:
                messages.append(self._update(frame))
            case Partial():
                pass  # the next utterance's draft before this turn's final: turns do not overlap
            case Final():
                messages.extend(self._end_of_turn(frame))
            case Configured():
                self.thresholds = self._pending.pop(0) if self._pending else self.thresholds
                messages.append(
                    ConfigureSuccess(
                        request_id=self.request_id,
                        thresholds=self.thresholds.wire(),
                        keyterms=frame.keyterms,
                    )
                )
            case Error() if frame.code in CONFIGURE_FAILURES:
                if frame.code != "invalid_configure" and self._pending:
                    self._pending.pop(0)  # the session refused it: its thresholds too
                messages.append(
                    ConfigureFailure(
                        request_id=self.request_id,
                        code=CONFIGURE_FAILURES[frame.code],
                        description=frame.message,
                    )
                )
            case Error(fatal=False):  # the stream goes on: the SDK's non-fatal `Warning`
                warning = FluxWarning(
                    request_id=self.request_id, code=frame.code.upper(), description=frame.message
                )
                messages.append(warning)
            case Error():  # the stream ends with it
                messages.append(FatalError(code=frame.code.upper(), description=frame.message))
        return [self._stamp(message) for message in messages]

    def _stamp(self, message: Message) -> str:
        message.sequence_id = self._sequence
        self._sequence += 1
        return _encoder.encode(message).decode()

    def _update(self, frame: Partial) -> TurnInfo:
        turn = self._turn_of(frame.utterance, frame.start)
        confidence = end_of_turn_confidence(frame.silence_s, frame.text)
        turn.confidence, turn.silence_s = confidence, frame.silence_s
        eager = self.thresholds.eager_eot_threshold
        event: TurnEvent = "Update"
        if not turn.started:
            event, turn.started = "StartOfTurn", True
        elif eager is not None and not turn.eager and confidence >= eager:
            event, turn.eager = "EagerEndOfTurn", True
        elif turn.eager and eager is not None and confidence < eager:
            event, turn.eager = "TurnResumed", False
        if frame.silence_s * 1000 >= self.thresholds.eot_timeout_ms:
            self._end = ("timeout", frame.end)
        elif confidence >= self.thresholds.eot_threshold:
            self._end = ("model", frame.end)
        return self._turn_info(event, turn, frame.end, frame.text, frame.words, confidence)

    def _end_of_turn(self, frame: Final) -> list[TurnInfo]:
        turn = self._turn_of(frame.utterance, frame.start)
        trigger: Trigger = "manual" if frame.from_finalize or self._closing else "timeout"
        if frame.from_finalize and self._trigger is not None:
            trigger = self._trigger
        self._turn, self._end, self._trigger = None, None, None
        if not turn.started and not frame.text:
            return []  # nothing was said: no turn
        confidence = max(turn.confidence, end_of_turn_confidence(turn.silence_s, frame.text))
        infos = []
        if not turn.started:
            infos.append(self._turn_info("StartOfTurn", turn, frame.end, frame.text, None, 0.0))
        end = self._turn_info("EndOfTurn", turn, frame.end, frame.text, frame.words, confidence)
        end.trigger = trigger
        self._turn_index += 1
        return [*infos, end]

    def _turn_of(self, utterance: int, start: float) -> _Turn:
        if self._turn is None or self._turn.utterance != utterance:
            self._turn = _Turn(utterance, start)
        return self._turn

    def _turn_info(
        self,
        event: TurnEvent,
        turn: _Turn,
        end: float,
        text: str,
        words: list[Word] | None,
        confidence: float,
    ) -> TurnInfo:
        timed = [(w.word, w.start, w.end, w.confidence) for w in words or []]
        return TurnInfo(
            request_id=self.request_id,
            event=event,
            turn_index=self._turn_index,
            audio_window_start=turn.start,
            audio_window_end=end,
            transcript=text.strip(),
            words=[
                TurnWord(word=word, confidence=round(score, 3), start=start, end=stop)
                for word, start, stop, score in merge_punctuation(timed)
            ],
            end_of_turn_confidence=confidence,
        )


_encoder = msgspec.json.Encoder()


def _as_uuid(session_id: str) -> str:
    try:
        return str(uuid.UUID(session_id))
    except ValueError:
        return session_id
