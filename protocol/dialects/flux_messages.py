"""Deepgram Flux (`WS /v2/listen`) wire shapes; `protocol.dialects.flux` says when each is sent.

Field names and nesting follow Deepgram's `listen.v2` schema, as the official SDK's models read
them. Every server message carries `sequence_id`, stamped by the codec. Sans-IO: msgspec
Structs and the client messages' decoder.
"""

from __future__ import annotations

from typing import Literal

import msgspec

from protocol.dialects.common import ClientMessages

Trigger = Literal["model", "manual", "timeout"]
TurnEvent = Literal["Update", "StartOfTurn", "EagerEndOfTurn", "TurnResumed", "EndOfTurn"]


class Thresholds(msgspec.Struct, kw_only=True, omit_defaults=True):
    eot_threshold: float | None = None
    eager_eot_threshold: float | None = None
    eot_timeout_ms: int | None = None


class TurnWord(msgspec.Struct, kw_only=True):
    word: str  # punctuated, as the transcript has it
    confidence: float
    start: float
    end: float


class Message(msgspec.Struct, tag_field="type", kw_only=True):
    sequence_id: int = 0


class Connected(Message, tag="Connected"):
    request_id: str


class TurnInfo(Message, tag="TurnInfo", omit_defaults=True):
    request_id: str
    event: TurnEvent
    turn_index: int
    audio_window_start: float
    audio_window_end: float
    transcript: str
    words: list[TurnWord]
    end_of_turn_confidence: float
    trigger: Trigger | None = None  # on `EndOfTurn` only


class ConfigureSuccess(Message, tag="ConfigureSuccess"):
    request_id: str
    thresholds: Thresholds
    keyterms: list[str]


class ConfigureFailure(Message, tag="ConfigureFailure"):
    request_id: str
    code: str
    description: str


class FatalError(Message, tag="Error"):
    code: str
    description: str


class FluxWarning(Message, tag="Warning"):
    """A message the server could not accept, the stream going on (`ListenV2Warning`; the
    SDK takes every `Error` as fatal)."""

    request_id: str
    code: str
    description: str


class ClientMessage(msgspec.Struct, tag_field="type", forbid_unknown_fields=True):
    pass


class CloseStream(ClientMessage, tag="CloseStream"):
    pass


class ForceEndTurn(ClientMessage, tag="ForceEndTurn"):
    pass


class KeepAlive(ClientMessage, tag="KeepAlive"):
    pass


class Configure(ClientMessage, tag="Configure", kw_only=True):
    thresholds: Thresholds | None = None
    keyterms: str | list[str] | None = None  # replaces the key terms; None keeps them
    language_hints: list[str] | None = None  # flux-general-multi's: accepted, not applied
    numerals: bool | None = None  # accepted, not applied


Incoming = CloseStream | ForceEndTurn | KeepAlive | Configure
client_messages: ClientMessages[Incoming] = ClientMessages(
    msgspec.json.Decoder(Incoming), dialect="Deepgram Flux"
)
