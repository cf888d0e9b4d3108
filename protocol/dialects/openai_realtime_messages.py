"""The OpenAI Realtime transcription events (GA shapes), as msgspec Structs. Sans-IO.

Client events (`client_events` decodes them; unknown fields are refused, as the wire types of
every dialect): `session.update` {`session`: a transcription session, see `SessionRequest`},
`input_audio_buffer.append` {`audio`: base64}, `input_audio_buffer.commit`,
`input_audio_buffer.clear`. A session's optional fields are `UNSET` when the update leaves
them as they were, and None where the client turned them off (`turn_detection: null`).

Server events carry every field the `openai` SDK's models define (null where Chorus has
nothing to say), so a client that reads any of them finds it; `protocol/dialects/
openai_realtime.py` builds them from the native frames.
"""

from __future__ import annotations

from typing import Annotated, Literal

import msgspec
from msgspec import UNSET, UnsetType

from protocol.dialects.common import ClientMessages

# -- the session -------------------------------------------------------------------------------


class Format(msgspec.Struct, kw_only=True, forbid_unknown_fields=True, omit_defaults=True):
    """`audio/pcm` (24 kHz), `audio/pcmu` or `audio/pcma` (8 kHz G.711)."""

    type: str | None = None
    rate: int | None = None


class NoiseReduction(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    type: Literal["near_field", "far_field"] | None = None
    strength: float | None = None


class Transcription(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    model: str | None = None
    language: str | None = None
    languages: list[str] | None = None
    prompt: str | None = None
    keywords: list[str] | None = None
    delay: Literal["minimal", "low", "medium", "high", "xhigh"] | None = None


Unit = Annotated[float, msgspec.Meta(ge=0.0, le=1.0)]
Millis = Annotated[int, msgspec.Meta(ge=0, le=60_000)]


class ServerVad(
    msgspec.Struct, tag="server_vad", tag_field="type", kw_only=True, forbid_unknown_fields=True
):
    threshold: Unit | None = None
    prefix_padding_ms: Millis | None = None
    silence_duration_ms: Millis | None = None
    idle_timeout_ms: Annotated[int, msgspec.Meta(ge=0)] | None = None
    create_response: bool | None = None
    interrupt_response: bool | None = None


class SemanticVad(
    msgspec.Struct, tag="semantic_vad", tag_field="type", kw_only=True, forbid_unknown_fields=True
):
    eagerness: Literal["low", "medium", "high", "auto"] | None = None
    create_response: bool | None = None
    interrupt_response: bool | None = None


TurnDetection = ServerVad | SemanticVad


class AudioInput(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    format: Format | UnsetType = UNSET
    noise_reduction: NoiseReduction | UnsetType | None = UNSET
    transcription: Transcription | UnsetType | None = UNSET
    turn_detection: TurnDetection | UnsetType | None = UNSET


class AudioConfig(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    input: AudioInput | None = None


class SessionRequest(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    type: str
    audio: AudioConfig | None = None
    include: list[Literal["item.input_audio_transcription.logprobs"]] | UnsetType | None = UNSET


# -- client events -----------------------------------------------------------------------------


class ClientEvent(msgspec.Struct, tag_field="type", kw_only=True, forbid_unknown_fields=True):
    event_id: str | None = None


class SessionUpdate(ClientEvent, tag="session.update"):
    session: SessionRequest


class Append(ClientEvent, tag="input_audio_buffer.append"):
    audio: str


class Commit(ClientEvent, tag="input_audio_buffer.commit"):
    pass


class Clear(ClientEvent, tag="input_audio_buffer.clear"):
    pass


Incoming = SessionUpdate | Append | Commit | Clear
client_events: ClientMessages[Incoming] = ClientMessages(msgspec.json.Decoder(Incoming))


# -- server events -----------------------------------------------------------------------------


class ServerEvent(msgspec.Struct, tag_field="type", kw_only=True):
    event_id: str


class SessionOut(msgspec.Struct, kw_only=True):
    """A transcription session as `session.created` / `session.updated` show it."""

    type: str = "transcription"
    audio: AudioConfig
    include: list[str] | None = None


class SessionCreated(ServerEvent, tag="session.created"):
    session: SessionOut


class SessionUpdated(ServerEvent, tag="session.updated"):
    session: SessionOut


class SpeechStartedOut(ServerEvent, tag="input_audio_buffer.speech_started"):
    audio_start_ms: int
    item_id: str


class SpeechStoppedOut(ServerEvent, tag="input_audio_buffer.speech_stopped"):
    audio_end_ms: int
    item_id: str


class TimeoutTriggered(ServerEvent, tag="input_audio_buffer.timeout_triggered"):
    audio_start_ms: int
    audio_end_ms: int
    item_id: str


class Committed(ServerEvent, tag="input_audio_buffer.committed"):
    item_id: str
    previous_item_id: str | None


class Cleared(ServerEvent, tag="input_audio_buffer.cleared"):
    pass


class Delta(ServerEvent, tag="conversation.item.input_audio_transcription.delta"):
    item_id: str
    delta: str
    content_index: int = 0
    logprobs: None = None


class Usage(msgspec.Struct, kw_only=True):
    type: str = "duration"
    seconds: float


class Language(msgspec.Struct, kw_only=True):
    code: str


class Completed(ServerEvent, tag="conversation.item.input_audio_transcription.completed"):
    item_id: str
    transcript: str
    usage: Usage
    content_index: int = 0
    languages: list[Language] | None = None
    logprobs: None = None


class Problem(msgspec.Struct, kw_only=True):
    type: str
    code: str | None
    message: str
    param: str | None


class Failed(ServerEvent, tag="conversation.item.input_audio_transcription.failed"):
    item_id: str
    error: Problem
    content_index: int = 0


class RealtimeError(msgspec.Struct, kw_only=True):
    type: str
    code: str | None
    message: str
    param: str | None
    event_id: str | None


class ErrorEvent(ServerEvent, tag="error"):
    error: RealtimeError


Outgoing = (
    SessionCreated
    | SessionUpdated
    | SpeechStartedOut
    | SpeechStoppedOut
    | TimeoutTriggered
    | Committed
    | Cleared
    | Delta
    | Completed
    | Failed
    | ErrorEvent
)
