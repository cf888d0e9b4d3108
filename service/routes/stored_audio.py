"""A recording kept in an object store, answered over HTTP as `FileResponse` answers a file
(`GET /v1/sessions/{id}/audio` on any replica, `service/routes/sessions.py`).

`stored_audio_response` decides from the request's headers and the object's size, ETag and
time what to send: 200 and the whole object; one `Range` (`bytes=a-b`, `a-`, `-n`) answered
206 with `Content-Range`; 416 with `Content-Range: bytes */size` when it starts past the end;
400 when it is malformed. Several ranges in one header get the whole recording (HTTP lets a
server ignore `Range`), and so does an `If-Range` that matches neither the ETag nor the
`Last-Modified` time. `HEAD` gets the headers only.

Ownership: the `StoredAudioResponse` owns the store's ranged read (`RecordingStore.read`, a
`trio.abc.ReceiveStream` opened before the answer starts, so that an unreachable store is a
503 and not a broken body) and closes it when the body is sent, when the client goes
(`http.disconnect` cancels the copy) or on an error. Memory per response: one chunk
(`actors.store.recordings.CHUNK_BYTES`), never the object.
"""

from __future__ import annotations

import email.utils

import trio
from starlette.datastructures import Headers
from starlette.responses import Response
from starlette.types import Receive, Scope, Send

from actors.store.recordings import CHUNK_BYTES, RecordingStore, StoredObject
from service.policy.refusal import Refusal


class RangeNotSatisfiable(Exception):
    """The range starts at or past the end of the recording (416)."""


def byte_range(header: str, size: int) -> tuple[int, int] | None:
    """The `[start, stop)` that a `Range` header asks of `size` bytes; None for the whole
    recording (several ranges). Raises `Refusal` (400) and `RangeNotSatisfiable`."""
    unit, _, ranges = header.partition("=")
    if unit.strip().lower() != "bytes" or not ranges.strip():
        raise Refusal(400, "invalid_range", "only one range of bytes=first-last is served")
    if "," in ranges:
        return None
    first, dash, last = ranges.strip().partition("-")
    if not dash or not all(part.isascii() and part.isdigit() for part in (first, last) if part):
        raise Refusal(400, "invalid_range", f"not a range of bytes: {header!r}")
    if not first:  # the last `last` bytes
        if not last or int(last) == 0:
            raise RangeNotSatisfiable()
        return max(0, size - int(last)), size
    start = int(first)
    stop = size if not last else min(size, int(last) + 1)
    if last and int(last) < start:
        raise Refusal(400, "invalid_range", f"the range ends before it starts: {header!r}")
    if start >= size:
        raise RangeNotSatisfiable()
    return start, stop


def _validators(found: StoredObject) -> dict[str, str]:
    return {
        "etag": found.etag,
        "last-modified": email.utils.format_datetime(found.modified, usegmt=True),
    }


async def stored_audio_response(
    store: RecordingStore, session_id: str, found: StoredObject, headers: Headers, method: str
) -> Response:
    """The answer to a `GET` or `HEAD` of the stored recording `found`; see the module."""
    common = {
        "accept-ranges": "bytes",
        "content-disposition": f'inline; filename="{session_id}.wav"',
        **_validators(found),
    }
    wanted, condition = headers.get("range"), headers.get("if-range")
    span: tuple[int, int] | None = None
    if wanted is not None and (condition is None or condition in _validators(found).values()):
        try:
            span = byte_range(wanted, found.size)
        except RangeNotSatisfiable:
            return Response(status_code=416, headers={"content-range": f"bytes */{found.size}"})
    start, stop = span or (0, found.size)
    if span is not None:
        common["content-range"] = f"bytes {start}-{stop - 1}/{found.size}"
    common["content-length"] = str(stop - start)
    status = 206 if span is not None else 200
    if method == "HEAD" or start == stop:
        return Response(status_code=status, headers=common, media_type="audio/wav")
    body = await store.read(session_id, start, stop)
    return StoredAudioResponse(body, stop - start, status, common)


class StoredAudioResponse(Response):
    """Copies `length` bytes from a `ReceiveStream` to the client, chunk by chunk."""

    def __init__(
        self, body: trio.abc.ReceiveStream, length: int, status: int, headers: dict[str, str]
    ) -> None:
        super().__init__(status_code=status, headers=headers, media_type="audio/wav")
        self._body, self._length = body, length

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        async with self._body, trio.open_nursery() as nursery:
            nursery.start_soon(_cancel_on_disconnect, receive, nursery.cancel_scope)
            await send(
                {
                    "type": "http.response.start",
                    "status": self.status_code,
                    "headers": self.raw_headers,
                }
            )
            left = self._length
            while left > 0:
                chunk = await self._body.receive_some(min(left, CHUNK_BYTES))
                if not chunk:
                    raise OSError(f"the recording ended {left} bytes early")
                left -= len(chunk)
                await send({"type": "http.response.body", "body": chunk, "more_body": left > 0})
            nursery.cancel_scope.cancel()


async def _cancel_on_disconnect(receive: Receive, scope: trio.CancelScope) -> None:
    while (await receive())["type"] != "http.disconnect":
        pass
    scope.cancel()
