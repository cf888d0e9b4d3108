"""The ChatServer seed's `POST /transcribe` shapes (seed 004). Sans-IO: Structs only.

The seed's README shows one answer, `{"transcript": "..."}`, and that is all a client gets by
default (`Transcript`). `?verbose=true` adds what Chorus knows besides (`VerboseTranscript`:
the language it heard or was told, and the audio's length in seconds). The README shows no
error; a FastAPI server like the seed's answers `{"detail": "..."}`, so errors carry `detail`
(the message) beside Chorus's usual `{"error": {"code", "message"}}` (`ChatServerError`).
"""

from __future__ import annotations

import msgspec


class Transcript(msgspec.Struct, kw_only=True):
    transcript: str


class VerboseTranscript(msgspec.Struct, kw_only=True):
    transcript: str
    language: str
    duration: float


class ChatServerErrorBody(msgspec.Struct, kw_only=True):
    code: str
    message: str


class ChatServerError(msgspec.Struct, kw_only=True):
    detail: str
    error: ChatServerErrorBody


encoder = msgspec.json.Encoder()


def error_body(code: str, message: str) -> bytes:
    return encoder.encode(
        ChatServerError(detail=message, error=ChatServerErrorBody(code=code, message=message))
    )
