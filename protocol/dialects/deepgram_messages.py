"""Deepgram live-streaming wire shapes (see `protocol.dialects.deepgram` for when each is sent).

Field names and nesting follow Deepgram's published `listen.v1` schema (as the official SDK's
models read them). Sans-IO: msgspec Structs, and the client messages' decoder; each client
message says what it asks of the session (`inbound()`).
"""

from __future__ import annotations

from typing import Annotated

import msgspec

from protocol.dialects.common import ClientMessages
from protocol.native import MAX_CHANNELS, Configure, Finalize, KeepAlive, Stop


class Word(msgspec.Struct, kw_only=True, omit_defaults=True):
    word: str
    start: float
    end: float
    confidence: float
    punctuated_word: str
    language: str | None = None


class Alternative(msgspec.Struct, kw_only=True, omit_defaults=True):
    transcript: str
    confidence: float
    words: list[Word]
    languages: list[str] | None = None


class Channel(msgspec.Struct, kw_only=True):
    alternatives: list[Alternative]


class ModelInfo(msgspec.Struct, kw_only=True):
    name: str
    version: str
    arch: str


class ResultsMetadata(msgspec.Struct, kw_only=True):
    request_id: str
    model_info: ModelInfo
    model_uuid: str


class Message(msgspec.Struct, tag_field="type", kw_only=True):
    pass


class Results(Message, tag="Results"):
    channel_index: list[int]
    duration: float
    start: float
    is_final: bool
    speech_final: bool
    channel: Channel
    metadata: ResultsMetadata
    from_finalize: bool


class SpeechStartedMessage(Message, tag="SpeechStarted"):
    channel: list[int]
    timestamp: float


class UtteranceEndMessage(Message, tag="UtteranceEnd"):
    channel: list[int]
    last_word_end: float


class Metadata(Message, tag="Metadata"):
    transaction_key: str
    request_id: str
    sha256: str
    created: str
    duration: float
    channels: int
    models: list[str]
    model_info: dict[str, ModelInfo]


class ErrorMessage(Message, tag="Error"):
    variant: str
    description: str
    code: str


class ConfigureSuccess(Message, tag="ConfigureSuccess", omit_defaults=True):
    request_id: str
    keyterms: list[str] | None = None  # present when the `Configure` replaced them


class ConfigureFailure(Message, tag="ConfigureFailure"):
    request_id: str
    code: str
    description: str


class ClientMessage(msgspec.Struct, tag_field="type"):
    pass


class KeepAliveMessage(ClientMessage, tag="KeepAlive"):
    def inbound(self) -> KeepAlive:
        return KeepAlive()


class FinalizeMessage(ClientMessage, tag="Finalize"):
    # multichannel: finalize only this channel
    channel: Annotated[int, msgspec.Meta(ge=0, lt=MAX_CHANNELS)] | None = None

    def inbound(self) -> Finalize:
        return Finalize(channel=self.channel)


class CloseStreamMessage(ClientMessage, tag="CloseStream"):
    def inbound(self) -> Stop:
        return Stop()


class ConfigureMessage(ClientMessage, tag="Configure"):
    keyterms: list[str] | None = None  # replaces the stream's key terms; None keeps them
    features: dict[str, bool] | None = None  # formatting features: accepted, not applied

    def inbound(self) -> Configure:
        return Configure(keyterms=self.keyterms)


Incoming = KeepAliveMessage | FinalizeMessage | CloseStreamMessage | ConfigureMessage
client_messages: ClientMessages[Incoming] = ClientMessages(
    msgspec.json.Decoder(Incoming), dialect="Deepgram"
)
