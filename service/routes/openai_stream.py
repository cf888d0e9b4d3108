"""`POST /v1/audio/transcriptions` with `stream=true`: the transcript as server-sent events
while the file is transcribed (`protocol.openai`: `transcript.text.delta` events, then one
`transcript.text.done`).

`stream_transcript` runs in the request's task, after `openai_api` has admitted the upload and
checked its form, and owns one nursery of two tasks: the request's task runs the upload's
transcription (`Uploads.transcribe`, which also watches for the client going away and cancels
the work), handing each segment, in file order, over a small bounded channel to `_write_deltas`,
which writes one delta per segment. When the transcription returns, the channel is closed, the
writer drains it, and the done event follows, with the text the deltas add up to.

The response's head goes with its first event, so anything that fails before any text (a file
that is not audio, a full transcriber) is an ordinary JSON error with its status; a failure
after that ends the stream with an `error` event, as OpenAI's do. A client that goes away gets
nothing more.
"""

from __future__ import annotations

from typing import BinaryIO

import trio
from starlette.requests import Request
from starlette.types import Send

from actors.transcriber.actor import TranscriberHandle
from actors.transcriber.files import FileOptions, FileSegment, FileTranscript
from protocol.openai import (
    UNSPACED,
    ErrorBody,
    Language,
    StreamError,
    StreamEvent,
    TextDelta,
    TextDone,
    Usage,
    sse,
)
from service.routes.uploads import UploadError, Uploads

SEGMENTS_BUFFERED = 4  # segments between the transcription and the writer; a few lines of text
HEADERS = [
    (b"content-type", b"text/event-stream; charset=utf-8"),
    (b"cache-control", b"no-cache"),
    (b"x-accel-buffering", b"no"),  # proxies that buffer responses (nginx) pass these on at once
]


class _EventStream:
    """The response: its head with the first event, then one event per body message. Touched
    by one task at a time (the writer, then, once it is done, the request's task)."""

    def __init__(self, send: Send) -> None:
        self._send = send
        self.started = False
        self.pieces: list[str] = []

    async def delta(self, segment: FileSegment) -> None:
        joiner = "" if not self.pieces or segment.language in UNSPACED else " "
        self.pieces.append(joiner + segment.text)
        await self.event(TextDelta(delta=self.pieces[-1]))

    async def event(self, event: StreamEvent) -> None:
        if not self.started:
            await self._send({"type": "http.response.start", "status": 200, "headers": HEADERS})
            self.started = True
        await self._send({"type": "http.response.body", "body": sse(event), "more_body": True})

    async def end(self) -> None:
        await self._send({"type": "http.response.body", "body": b"", "more_body": False})


async def stream_transcript(
    uploads: Uploads,
    request: Request,
    transcriber: TranscriberHandle,
    data: BinaryIO,
    options: FileOptions,
    send: Send,
) -> None:
    """Transcribe `data` and answer with its events on `send` (see the module docstring);
    raises `UploadError` for a failure before the first event."""
    stream = _EventStream(send)
    segments_send, segments_recv = trio.open_memory_channel[FileSegment](SEGMENTS_BUFFERED)
    # the outcome is a value: raised inside the nursery it would come out in an ExceptionGroup
    outcome: FileTranscript | UploadError
    async with trio.open_nursery() as nursery:
        nursery.start_soon(_write_deltas, segments_recv, stream)
        with segments_send:  # `transcribe_file` closes it too; closed twice is closed
            try:
                outcome = await uploads.transcribe(
                    request, transcriber, data, options, not_audio=400, segments=segments_send
                )
            except UploadError as error:
                outcome = error
    if isinstance(outcome, UploadError):
        if not stream.started:
            raise outcome
        if outcome.code == "client_gone":
            return
        kind = "server_error" if outcome.status >= 500 else "invalid_request_error"
        body = ErrorBody(message=outcome.message, type=kind, param=outcome.param, code=outcome.code)
        await stream.event(StreamError(error=body))
    else:
        await stream.event(_done(outcome, "".join(stream.pieces)))
    await stream.end()


async def _write_deltas(
    segments: trio.MemoryReceiveChannel[FileSegment], stream: _EventStream
) -> None:
    with segments:
        async for segment in segments:
            await stream.delta(segment)


def _done(transcript: FileTranscript, text: str) -> TextDone:
    languages = dict.fromkeys(segment.language for segment in transcript.segments)
    tokens = transcript.tokens
    return TextDone(
        text=text,
        languages=[Language(code=code) for code in languages],
        usage=Usage.of(audio=tokens.audio, text=tokens.text, output=tokens.output),
    )
