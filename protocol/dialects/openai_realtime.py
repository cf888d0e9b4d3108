"""OpenAI Realtime transcription (`WS /v1/realtime?intent=transcription`) as a codec over the
native session. Sans-IO; one `RealtimeCodec` per connection.

What the `openai` SDK's `client.realtime.connect(extra_query={"intent": "transcription"})`
sends and reads (the GA events; shapes in `openai_realtime_messages.py`):

* `session.created` answers the connection (the native `ready`), with the default session:
  24 kHz `audio/pcm`, server VAD. `session.update` before any audio becomes a native `config`
  (its `ready` answers `session.updated`); after audio has started, the format and turn
  detection are fixed (an `error`); a new `prompt` or `keywords` is a native `configure`
  (the session's vocabulary from the next draft and utterance on), answered with
  `session.updated` once its `configured` comes back, or with an `error` (param `keywords`)
  when the session refuses it; any other update (a new language, which the running session
  does not change) is answered with `session.updated` at once. `openai_realtime_session.py`
  maps the settings.
* `input_audio_buffer.append` is audio; `commit` of less than 100 ms since the last commit or
  clear is refused with `input_audio_buffer_commit_empty`, as OpenAI's is; otherwise it is a
  native `finalize` with an id (its `finalized` completes a manual item, or says a server VAD
  commit cut no speech) and, in manual mode, a `ping` whose `pong` is answered with
  `committed` at once; `clear` is a
  `finalize` whose turn is dropped (`openai_realtime_turns.py`), and a `ping` answered with
  `cleared`.
* Server VAD's `idle_timeout_ms`: an append that takes the audio that far past the end of the
  last speech (or the last timeout) with no speech open adds a `ping`; its `pong`, if no
  speech started meanwhile, is answered with `input_audio_buffer.timeout_triggered`, then the
  silent item's `committed` and `completed` (empty). Time is the appended audio's.
* Every server event has an `event_id`; errors have OpenAI's shape {`type`
  (`invalid_request_error`, or `server_error` for the server's own failures), `code`,
  `message`, `param`, `event_id` (the client event at fault)}.
"""

from __future__ import annotations

import secrets
from collections import deque

from protocol.codec import Inbound, ProtocolError
from protocol.dialects.common import b64_audio, encoder
from protocol.dialects.openai_realtime_messages import (
    Append,
    Clear,
    Cleared,
    Commit,
    ErrorEvent,
    RealtimeError,
    ServerEvent,
    SessionCreated,
    SessionUpdate,
    SessionUpdated,
    client_events,
)
from protocol.dialects.openai_realtime_session import (
    Refused,
    SessionState,
    native_config,
    refusal,
    updated,
)
from protocol.dialects.openai_realtime_turns import VAD_COMMIT, Ids, Turns
from protocol.native import (
    Config,
    Configured,
    Error,
    Final,
    Finalize,
    Finalized,
    Partial,
    Ping,
    Pong,
    Ready,
    ServerFrame,
    SpeechStarted,
    SpeechStopped,
)

MIN_COMMIT_S = 0.1
MAX_FAULTS = 64
# the native errors that answer a `config` or a `configure` (the session refused an update)
CONFIG_ERRORS = frozenset(
    {"unsupported_language", "unsupported_task", "invalid_config", "invalid_vocabulary"}
)
SERVER_ERRORS = frozenset({"internal_error", "model_error", "not_stored"})
_UPDATE, _COMMIT, _CLEAR, _IDLE = "session.update ", "commit ", "clear", "idle "
_TRANSCRIPTION = "session.audio.input.transcription"


class RealtimeCodec:
    """One connection's translation between Realtime events and native frames."""

    name = "openai_realtime"

    def __init__(self, model: str, *, prefix: str | None = None) -> None:
        self.session = SessionState.default(model)
        self.ids = Ids(prefix or secrets.token_hex(5))
        # updates sent as `config` or `configure`, awaiting `ready` or `configured` (or an
        # `error`), in order: their states and the event ids of the `session.update`s
        self._pending: deque[tuple[SessionState, str | None]] = deque()
        self._asked = self.session  # the newest state asked for
        self._updates: dict[str, SessionState] = {}  # mid-stream updates awaiting their pong
        self._readies = 0
        self._received = 0  # bytes of audio since the start
        self._buffered = 0  # ... since the last commit or clear
        self._turns: Turns | None = None  # made at the first audio, when the mode is fixed
        # the client events refused, until their `error`s go out: (code, message) → event_id,
        # param (the reader answers a refusal while this codec may decode the next event)
        self._faults: dict[tuple[str, str], tuple[str | None, str | None]] = {}

    @property
    def config(self) -> Config:
        """The native config the session starts with."""
        return native_config(self.session)

    # client → native

    def decode(self, message: str | bytes) -> list[Inbound]:
        if isinstance(message, bytes):
            raise ProtocolError(
                "invalid_value",
                "binary frames are not Realtime events: send input_audio_buffer.append",
            )
        event = client_events.parse(message)
        try:
            match event:
                case Append():
                    return self._append(b64_audio(event.audio, "audio"))
                case Commit():
                    return self._commit()
                case Clear():
                    return self._clear()
                case SessionUpdate():
                    return [self._update(event)]
        except ProtocolError as error:
            if len(self._faults) < MAX_FAULTS:
                param = getattr(error, "param", None)
                self._faults[(error.code, error.message)] = (event.event_id, param)
            raise
        return []

    def _append(self, audio: bytes) -> list[Inbound]:
        if self._turns is None:
            self._turns = Turns(self.ids, manual=self._asked.manual)
        self._turns.appended(self._seconds(self._received))
        self._received += len(audio)
        self._buffered += len(audio)
        idle = self._asked.idle_timeout_s
        since = self._turns.idle_since(self._seconds(self._received), idle)
        if idle is None or since is None:
            return [audio]
        return [audio, Ping(id=f"{_IDLE}{since}:{since + idle}")]

    def _commit(self) -> list[Inbound]:
        buffered_s = self._seconds(self._buffered)
        if self._turns is None or buffered_s < MIN_COMMIT_S:
            raise Refused(
                "input_audio_buffer_commit_empty",
                "Error committing input audio buffer: buffer too small. Expected at least "
                f"100ms of audio, but buffer only has {buffered_s * 1000:.2f}ms of audio.",
            )
        self._buffered = 0
        if not self._turns.manual:  # the open utterance's final commits its item
            key = self._turns.vad_commit(buffered_s)
            return [Finalize(id=key)]
        item_id = self._turns.commit(self._seconds(self._received))
        return [Finalize(id=_COMMIT + item_id), Ping(id=_COMMIT + item_id)]

    def _clear(self) -> list[Inbound]:
        self._buffered = 0
        if self._turns is not None:
            self._turns.clear(self._seconds(self._received))
        marker = _CLEAR if self._turns is not None and self._turns.manual else None
        return [Finalize(id=marker), Ping(id=_CLEAR)]

    def _update(self, event: SessionUpdate) -> Inbound:
        state = updated(self._asked, event.session)
        asked, self._asked = self._asked, state
        if self._turns is None:  # before any audio: the session starts with it
            self._pending.append((state, event.event_id))
            return native_config(state)
        for name in ("format", "turn_detection"):
            if getattr(state.input, name) != getattr(asked.input, name):
                self._asked = asked
                param = f"session.audio.input.{name}"
                raise refusal(param, "cannot change once audio has been appended")
        if state.vocabulary() != asked.vocabulary():  # the session's, from the next draft on
            self._pending.append((state, event.event_id))
            return state.configure()
        key = f"{_UPDATE}{len(self._updates)}:{self.ids.event()}"
        self._updates[key] = state
        return Ping(id=key)

    def _seconds(self, count: int) -> float:
        return count / self._asked.bytes_per_second

    # native → client

    def encode(self, frame: ServerFrame) -> list[str | bytes]:
        return [encoder.encode(event).decode() for event in self._events(frame)]

    def _events(self, frame: ServerFrame) -> list[ServerEvent]:
        turns = self._turns
        match frame:
            case Ready():
                return [self._ready()]
            case Configured():
                return [self._configured()]
            case Pong(id=str(key)):
                return self._pong(key)
            case Error():
                return [self._error(frame)]
            case SpeechStarted(at=at) if turns is not None:
                return turns.speech_started(at)
            case SpeechStopped() if turns is not None:
                return turns.speech_stopped(frame.utterance, frame.at)
            case Partial() if turns is not None:
                return turns.partial(frame)
            case Final() if turns is not None:
                return turns.final(frame)
            case Finalized(id=str(key)) if turns is not None and key == _CLEAR:
                return turns.finalized(None)
            case Finalized(id=str(key)) if turns is not None and key.startswith(VAD_COMMIT):
                return turns.vad_committed(key)
            case Finalized(id=str(key)) if turns is not None and key.startswith(_COMMIT):
                item_id = key.removeprefix(_COMMIT)
                return turns.committed(item_id) + turns.finalized(item_id)
        return []

    def _ready(self) -> ServerEvent:
        self._readies += 1
        if self._readies == 1:
            return SessionCreated(event_id=self.ids.event(), session=self.session.shown())
        if self._pending:
            self.session = self._pending.popleft()[0]
        return SessionUpdated(event_id=self.ids.event(), session=self.session.shown())

    def _configured(self) -> ServerEvent:
        if self._pending:
            self.session = self._pending.popleft()[0]
        return SessionUpdated(event_id=self.ids.event(), session=self.session.shown())

    def _pong(self, key: str) -> list[ServerEvent]:
        if key.startswith(_IDLE) and self._turns is not None:
            start, end = key.removeprefix(_IDLE).split(":")
            events = self._turns.timed_out(float(start), float(end))
            if events:
                self._buffered = 0  # the silence is committed, as OpenAI's is
            return events
        if key in self._updates:
            self.session = self._updates.pop(key)
            return [SessionUpdated(event_id=self.ids.event(), session=self.session.shown())]
        if key == _CLEAR:
            return [Cleared(event_id=self.ids.event())]
        if key.startswith(_COMMIT) and self._turns is not None:
            return self._turns.committed(key.removeprefix(_COMMIT))
        return []

    def _error(self, frame: Error) -> ServerEvent:
        event_id, param = self._faults.pop((frame.code, frame.message), (None, None))
        if frame.code in CONFIG_ERRORS and self._pending:
            _, update_id = self._pending.popleft()  # the update the session refused
            event_id = event_id or update_id
            self._asked = self._pending[-1][0] if self._pending else self.session
            field = "keywords" if frame.code == "invalid_vocabulary" else "language"
            param = param or f"{_TRANSCRIPTION}.{field}"
        kind = "server_error" if frame.code in SERVER_ERRORS else "invalid_request_error"
        error = RealtimeError(
            type=kind, code=frame.code, message=frame.message, param=param, event_id=event_id
        )
        return ErrorEvent(event_id=self.ids.event(), error=error)
