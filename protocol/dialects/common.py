"""What the seed dialects share: JSON decoding with stable error codes, base64 audio, words.

Sans-IO helpers; each raises `protocol.codec.ProtocolError` (not fatal) for input a client got
wrong: `invalid_json` (a text message that is not JSON), `unknown_type` (a `type` / `event`
the dialect does not know, or none), `invalid_message` (known type, wrong fields),
`invalid_base64`, `empty_frame`.
"""

from __future__ import annotations

import base64
import binascii
from typing import TypeVar

import msgspec

from protocol.codec import ProtocolError

T = TypeVar("T")

encoder = msgspec.json.Encoder()


def decode_json(decoder: msgspec.json.Decoder[T], message: str, tag: str) -> T:
    """Decode one text message into the dialect's tagged union (tag field `tag`)."""
    try:
        return decoder.decode(message)
    except msgspec.ValidationError as error:
        text = str(error)
        if text.endswith(f"`$.{tag}`") or text == f"Object missing required field `{tag}`":
            raise ProtocolError("unknown_type", f"unknown or missing `{tag}`: {text}") from None
        raise ProtocolError("invalid_message", text) from None
    except msgspec.DecodeError:
        raise ProtocolError("invalid_json", "text message is not a JSON object") from None


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
_PREPEND = frozenset("\"'“¿([{-«")
_APPEND = frozenset("\"'.。,，!！?？:：”)]}、»;…")


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
