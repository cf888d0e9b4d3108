"""`chorus stream`'s client of the native protocol, resuming a session whose connection drops.

`stream_file` decodes a file to 16 kHz PCM and streams it to `/v1/stream` (trio-websocket) at
`speed` times real time, printing partials and finals as they come (`_LivePrinter`), then
sends `stop` and waits for `stopped`. Each connection is one `_connect` call that owns a
nursery with its sender task; the file's PCM is the buffer it re-sends from.

When a connection closes unexpectedly (no close frame, 1001, 1011, or 1012 from a server that
is shutting down) before the session has stopped, the client reconnects with the `ready`'s
`resume_token` and the highest `seq` it received (`resume=…&after_seq=…`,
docs/protocols.md#resuming-a-session), up to `MAX_RESUMES` times, and re-sends from the end of
the last final it printed: the server drops what it already has. A final whose `seq` is not
above the last final's printed is not printed again.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any, TextIO
from urllib.parse import urlencode, urlsplit, urlunsplit

import attrs
import numpy as np
import trio

from actors.audio.file_decoder import UndecodableAudio, decode_file_async

RESUMABLE_CODES = frozenset({1001, 1006, 1011, 1012})
MAX_RESUMES = 5
RETRY_S = 0.5
BYTES_PER_S = 16000 * 2


def stream_url(url: str, language: str | None, **extra: str) -> str:
    """The native endpoint for `url` (path `/v1/stream` when none is given), with options."""
    parts = urlsplit(url)
    path = parts.path if parts.path not in ("", "/") else "/v1/stream"
    options = ({"language": language} if language else {}) | extra
    query = "&".join(part for part in (parts.query, urlencode(options)) if part)
    return urlunsplit((parts.scheme, parts.netloc, path, query, ""))


@attrs.define
class _Session:
    """What the client knows of its session across connections."""

    token: str | None = None  # the last `ready`'s resume token
    last_seq: int = 0  # the highest `seq` received
    last_final_seq: int = 0  # the highest `seq` of a final printed
    seen_end: float = 0.0  # the end of the last final received: re-sent from here
    stop_sent: bool = False

    def resume_query(self) -> dict[str, str]:
        if self.token is None:
            return {}
        return {"resume": self.token, "after_seq": str(self.last_seq)}

    def fresh(self, frame: dict[str, Any]) -> bool:
        """Note one frame; False for a final already printed (a replay)."""
        seq = int(frame.get("seq", 0))
        self.last_seq = max(self.last_seq, seq)
        kind = frame.get("type")
        if kind == "ready":
            self.token = frame.get("resume_token")
        elif kind == "final":
            if seq <= self.last_final_seq:
                return False
            self.last_final_seq = seq
            self.seen_end = max(self.seen_end, float(frame["end"]))
        return True


async def stream_file(
    url: str,
    path: Path,
    speed: float,
    chunk_ms: int,
    language: str | None,
    token: str | None,
    out: TextIO,
) -> int:
    """Stream `path` to a native endpoint at `speed` times real time; print text live."""
    from trio_websocket import HandshakeError

    from service.websocket_client import answer_pings_only_while_open

    answer_pings_only_while_open()  # or a ping during our close ends the stream silently
    try:
        samples = await decode_file_async(path)
    except UndecodableAudio as error:
        print(f"chorus stream: {path}: {error.reason}", file=sys.stderr)
        return 1
    pcm = (np.clip(samples, -1.0, 1.0) * 32767).astype("<i2").tobytes()
    headers = [(b"authorization", f"Bearer {token}".encode())] if token else []
    printer, session = _LivePrinter(out), _Session()
    pace = _Pace(step=16000 * chunk_ms // 1000 * 2, pause_s=chunk_ms / 1000 / speed)
    resumes = 0
    while True:
        target = stream_url(url, language, **session.resume_query())
        try:
            code = await _connect(target, headers, pcm, pace, session, printer)
        except (HandshakeError, OSError) as error:
            if session.token is None or resumes >= MAX_RESUMES or _refused(error):
                print(f"chorus stream: cannot stream to {url}: {error}", file=sys.stderr)
                return 1
            code = 1006
        if printer.stopped and (session.stop_sent or code not in RESUMABLE_CODES):
            break
        if code not in RESUMABLE_CODES or session.token is None or resumes >= MAX_RESUMES:
            break
        resumes += 1
        print(f"chorus stream: connection lost ({code}); resuming", file=sys.stderr)
        printer.stopped = False
        await trio.sleep(RETRY_S)
    return 0 if printer.stopped and not printer.fatal else 1


def _refused(error: Exception) -> bool:
    """A handshake the server answered with a 4xx: retrying will not help."""
    status = getattr(error, "status_code", None)
    return isinstance(status, int) and 400 <= status < 500


@attrs.frozen
class _Pace:
    step: int  # bytes a frame
    pause_s: float  # between frames


async def _connect(
    url: str,
    headers: list[tuple[bytes, bytes]],
    pcm: bytes,
    pace: _Pace,
    session: _Session,
    printer: _LivePrinter,
) -> int:
    """One connection: send the PCM from the end of the last final seen, print what comes;
    the close code (1006 when the connection was lost without one)."""
    from trio_websocket import ConnectionClosed, open_websocket_url

    start = round(session.seen_end * 16000) * 2
    session.stop_sent = False
    code = 1006
    streams: list[trio.abc.AsyncResource] = []
    try:
        async with open_websocket_url(url, extra_headers=headers) as ws:
            streams.append(ws._stream)  # closed below: see the `finally`

            async def send() -> None:
                try:
                    for offset in range(start, len(pcm), pace.step):
                        await ws.send_message(pcm[offset : offset + pace.step])
                        await trio.sleep(pace.pause_s)
                    await ws.send_message(json.dumps({"type": "stop"}))
                    session.stop_sent = True
                except ConnectionClosed:
                    return  # the receiving side sees the close too

            async with trio.open_nursery() as nursery:
                nursery.start_soon(send)
                try:  # until the server closes, after `stopped` (or a fatal error)
                    while True:
                        frame = json.loads(await ws.get_message())
                        if session.fresh(frame):
                            printer.show(frame)
                except ConnectionClosed as closed:
                    code = closed.reason.code if closed.reason is not None else 1006
                nursery.cancel_scope.cancel()
    finally:
        # trio-websocket 0.12 can leave the TCP stream open when the server closes first.
        for stream in streams:
            await stream.aclose()
    return int(code)


class _LivePrinter:
    """Partials rewrite one line on a terminal (or print as `… ` lines); finals print whole."""

    def __init__(self, out: TextIO) -> None:
        self.out = out
        self.tty = out.isatty()
        self.partial = False
        self.stopped = False
        self.fatal = False

    def show(self, frame: dict[str, object]) -> bool:
        """Print one server frame; True once the session has stopped."""
        kind = frame.get("type")
        if kind == "partial":
            if self.tty:
                self.out.write(f"\r\x1b[2K… {frame['text']}")
                self.partial = True
            else:
                self.out.write(f"… {frame['text']}\n")
        elif kind == "final" and frame.get("text"):
            self._clear()
            self.out.write(f"[{frame['start']:7.2f} → {frame['end']:7.2f}] {frame['text']}\n")
        elif kind == "error":
            self._clear()
            self.fatal = self.fatal or bool(frame.get("fatal"))
            print(
                f"chorus stream: server error {frame['code']}: {frame['message']}", file=sys.stderr
            )
        elif kind == "stopped":
            self._clear()
            self.stopped = True
        self.out.flush()
        return self.stopped

    def _clear(self) -> None:
        if self.partial:
            self.out.write("\r\x1b[2K")
            self.partial = False
