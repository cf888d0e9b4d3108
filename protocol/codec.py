"""What a dialect is: a sans-IO codec between one client's wire shapes and the native frames.

The session pipeline (`service/session/supervisor.py`) speaks only native frames
(`protocol.native`). Each route owns one `Codec` per connection: `decode` turns what the client
sent into audio bytes and native client frames, `encode` turns a native server frame into zero or
more messages for the client. A codec keeps whatever per-session state its dialect needs (sequence
numbers, the session's start, which events the client asked for); it never does I/O.

`NativeCodec` is the native dialect (`WS /v1/stream`): the frames as JSON, stamped with `seq`.
"""

from __future__ import annotations

import base64
import binascii
from typing import Protocol

import msgspec

from protocol.native import Audio, ClientFrame, ServerFrame, client_decoder, encoder


class ProtocolError(Exception):
    """A client message that the dialect cannot accept; answered with an error frame."""

    def __init__(self, code: str, message: str, *, fatal: bool = False) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.fatal = fatal


Inbound = bytes | ClientFrame
"""What `Codec.decode` yields: raw audio bytes in the session's encoding, or a native frame."""


class Codec(Protocol):
    name: str

    def decode(self, message: str | bytes) -> list[Inbound]:
        """Turn one client message into audio and native frames; raise `ProtocolError`."""
        ...

    def encode(self, frame: ServerFrame) -> list[str | bytes]:
        """Turn one native server frame into the client's messages (maybe none)."""
        ...


class NativeCodec:
    """Stamps `seq` on server frames and encodes them as JSON text (one codec per session).

    A frame that carries its `seq` already keeps it: a final replayed on a resumed connection
    goes out as it was first sent. `seq` is the last one stamped; a resumed session's route
    sets it to where the session's frames go on (`service/session/resume.py`)."""

    name = "native"

    def __init__(self, seq: int = 0) -> None:
        self.seq = seq

    def decode(self, message: str | bytes) -> list[bytes | ClientFrame]:
        return decode_client_message(message)

    def encode(self, frame: ServerFrame) -> list[str | bytes]:
        if not frame.seq:
            self.seq += 1
            frame.seq = self.seq
        return [encoder.encode(frame).decode()]


def decode_client_message(message: str | bytes) -> list[bytes | ClientFrame]:
    """Native decoding: binary frames are audio, text frames are JSON client frames.

    Raises `ProtocolError` with a stable code for anything a client got wrong.
    """
    if isinstance(message, bytes):
        if not message:
            raise ProtocolError("empty_frame", "binary frame carries no audio")
        return [message]
    try:
        frame = client_decoder.decode(message)
    except msgspec.ValidationError as error:
        text = str(error)
        code = "unknown_type" if text.endswith("`$.type`") else "invalid_message"
        raise ProtocolError(code, text) from None
    except msgspec.DecodeError as error:
        raise ProtocolError("invalid_json", f"text frame is not JSON: {error}") from None
    if isinstance(frame, Audio):
        try:
            data = base64.b64decode(frame.data, validate=True)
        except (binascii.Error, ValueError):
            raise ProtocolError("invalid_base64", "`data` is not valid base64") from None
        if not data:
            raise ProtocolError("empty_frame", "`audio` frame carries no audio")
        return [data]
    return [frame]
