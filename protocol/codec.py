"""What a dialect is: a sans-IO codec between one client's wire shapes and the native frames.

The session pipeline (`service/session/supervisor.py`) speaks only native frames
(`protocol.native`). Each route owns one `Codec` per connection: `decode` turns what the client
sent into audio bytes and native client frames, `encode` turns a native server frame into zero or
more messages for the client. A codec keeps whatever per-session state its dialect needs (sequence
numbers, the session's start, which events the client asked for); it never does I/O.
"""

from __future__ import annotations

from typing import Protocol

from protocol.native import ClientFrame, ServerFrame


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
