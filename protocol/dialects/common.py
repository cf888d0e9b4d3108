"""What the dialects share: one client-message decoder with stable error codes, base64 audio,
words.

A dialect's client text messages are JSON objects of one tagged union of msgspec Structs;
`ClientMessages` decodes them. Each message that asks one thing of the session by itself is a
`Command`: its `inbound()` is that native item (audio bytes, `Stop`, `Ping`, …), so a dialect
whose messages are all commands decodes with `decode_commands` and writes no dispatch of its own.

Sans-IO helpers; each raises `protocol.codec.ProtocolError` (not fatal) for input a client got
wrong: `invalid_json` (a text message that is not JSON), `unknown_type` (a `type` / `event`
the dialect does not know, or none), `invalid_message` (known type, wrong fields),
`invalid_base64`, `empty_frame`.
"""

from __future__ import annotations

import base64
import binascii
from typing import Any, Generic, Protocol, TypeVar

import attrs
import msgspec

from protocol.codec import Inbound, ProtocolError
from protocol.native import Ping, Stop

encoder = msgspec.json.Encoder()


class Command(Protocol):
    """A client message that asks one thing of the session by itself."""

    def inbound(self) -> Inbound:
        """What it asks, as the session takes it: audio bytes or a native client frame."""
        ...


M = TypeVar("M")
C = TypeVar("C", bound=Command)


@attrs.frozen
class ClientMessages(Generic[M]):
    """One dialect's client text messages: JSON objects of the tagged union `decoder` decodes,
    tagged by the field `tag`. `dialect` names a dialect whose messages are nothing but their
    tag (Deepgram's): anything that does not fit is then `unknown_type`, "not a <dialect>
    message", and text that is not JSON is "not JSON"."""

    decoder: msgspec.json.Decoder[M]
    tag: str = "type"
    dialect: str | None = None

    def parse(self, message: str) -> M:
        """The message a text frame holds; raises `ProtocolError` with a stable code."""
        try:
            return self.decoder.decode(message)
        except msgspec.ValidationError as error:
            text, tag = str(error), self.tag
            if self.dialect is not None:
                code, text = "unknown_type", f"not a {self.dialect} message: {text}"
            elif text.endswith(f"`$.{tag}`") or text == f"Object missing required field `{tag}`":
                code, text = "unknown_type", f"unknown or missing `{tag}`: {text}"
            else:
                code = "invalid_message"
            raise ProtocolError(code, text) from None
        except msgspec.DecodeError:
            what = "JSON" if self.dialect is not None else "a JSON object"
            raise ProtocolError("invalid_json", f"text message is not {what}") from None


class ClientMessage(msgspec.Struct, tag_field="type", kw_only=True):
    """Base of the client messages of the dialects that tag them with `type`."""


class StopMessage(ClientMessage, tag="stop"):
    def inbound(self) -> Stop:
        return Stop()


class PingMessage(ClientMessage, tag="ping"):
    timestamp: Any = None  # the call seed's README sends one; nothing reads it

    def inbound(self) -> Ping:
        return Ping()


def decode_commands(messages: ClientMessages[C], message: str | bytes) -> list[Inbound]:
    """`Codec.decode` for a dialect whose text messages are all `Command`s: a binary frame is
    audio, a text message the one item its command asks for."""
    if isinstance(message, bytes):
        return [binary_audio(message)]
    return [messages.parse(message).inbound()]


def b64_audio(data: str, field: str) -> bytes:
    try:
        audio = base64.b64decode(data, validate=True)
    except (binascii.Error, ValueError):
        raise ProtocolError("invalid_base64", f"`{field}` is not valid base64") from None
    if not audio:
        raise ProtocolError("empty_frame", f"`{field}` carries no audio")
    return audio


def binary_audio(message: bytes) -> bytes:
    if not message:
        raise ProtocolError("empty_frame", "binary frame carries no audio")
    return message


WordTuple = tuple[str, float, float, float]  # text, start, end, confidence
PREPEND_MARKS = "\"'“¿([{-«"  # joined to the word after; the model adapter uses the same sets
APPEND_MARKS = "\"'.。,，!！?？:：”)]}、»;…"  # joined to the word before
_PREPEND = frozenset(PREPEND_MARKS)
_APPEND = frozenset(APPEND_MARKS)


def merge_punctuation(words: list[WordTuple]) -> list[WordTuple]:
    """Attach punctuation-only "words" to their neighbours, as Whisper's own transcribe does:
    closing marks to the word before ("Americans", "." → "Americans."), opening marks to the
    word after. Times and confidence stay those of the real word."""
    merged: list[WordTuple] = []
    pending = ""  # opening marks waiting for the next word
    for text, start, end, confidence in words:
        if text and all(mark in _APPEND for mark in text) and merged:
            previous = merged[-1]
            merged[-1] = (previous[0] + text, previous[1], previous[2], previous[3])
        elif text and all(mark in _PREPEND for mark in text):
            pending += text
        else:
            merged.append((pending + text, start, end, confidence))
            pending = ""
    if pending and merged:
        last = merged[-1]
        merged[-1] = (last[0] + pending, last[1], last[2], last[3])
    return merged
