"""Issue 21, finding 3: what one WebSocket connection may cost (`service/serving.py`), through a
real `chorus serve` (hypercorn) and a raw client that can send what well-behaved ones won't:
text counted in bytes, permessage-deflate declined, oversized frames behind a paced stream,
and a client that leaves while its session is paced. Memory is the server's peak resident
memory (`VmHWM`, reset through `/proc/<pid>/clear_refs` before each attack)."""

from __future__ import annotations

import base64
import contextlib
import os
import struct
import sys
import zlib
from pathlib import Path

import httpx
import pytest
import trio
from support.servers import free_port, start_server, stop

pytestmark = pytest.mark.skipif(
    not sys.platform.startswith("linux"), reason="reads /proc for memory"
)

MiB = 1 << 20
OPCODES = {"text": 0x1, "binary": 0x2, "close": 0x8}


def _reset_peak(pid: int) -> None:
    Path(f"/proc/{pid}/clear_refs").write_text("5")


def _kib(pid: int, field: str) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(f"{field}:"):
            return int(line.split()[1])
    raise AssertionError(f"no {field}")


class RawSocket:
    """One client WebSocket over a bare TCP stream: any frame, any extension offer."""

    def __init__(self, stream: trio.SocketStream, headers: dict[str, str]) -> None:
        self.stream, self.headers = stream, headers
        self._unread = b""

    @classmethod
    async def open(cls, port: int, path: str, extensions: str | None = None) -> RawSocket:
        stream = await trio.open_tcp_stream("127.0.0.1", port)
        key = base64.b64encode(os.urandom(16)).decode()
        request = (
            f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nUpgrade: websocket\r\n"
            f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n"
        )
        if extensions is not None:
            request += f"Sec-WebSocket-Extensions: {extensions}\r\n"
        await stream.send_all(f"{request}\r\n".encode())
        response = b""
        while b"\r\n\r\n" not in response:
            response += await stream.receive_some(4096)
        head, _, rest = response.partition(b"\r\n\r\n")
        lines = head.decode().split("\r\n")
        assert " 101 " in lines[0], lines[0]
        headers = {
            k.strip().lower(): v.strip() for k, _, v in (x.partition(":") for x in lines[1:])
        }
        socket = cls(stream, headers)
        socket._unread = rest
        return socket

    async def send(self, kind: str, payload: bytes, *, rsv1: bool = False) -> None:
        """One frame, masked with a zero key (so the payload goes as it is), sent in pieces."""
        first = 0x80 | (0x40 if rsv1 else 0) | OPCODES[kind]
        size = len(payload)
        if size < 126:
            head = struct.pack("!BB", first, 0x80 | size)
        elif size < 1 << 16:
            head = struct.pack("!BBH", first, 0x80 | 126, size)
        else:
            head = struct.pack("!BBQ", first, 0x80 | 127, size)
        await self.stream.send_all(head + b"\0\0\0\0")
        view = memoryview(payload)
        for at in range(0, size, 256 << 10):
            await self.stream.send_all(view[at : at + (256 << 10)])

    async def close_code(self) -> int:
        """Read the server's frames until its close; return the close code."""
        while True:
            while len(self._unread) < 2:
                self._unread += await self._more()
            first, second = self._unread[0], self._unread[1] & 0x7F
            at = 2
            if second == 126:
                second, at = struct.unpack("!H", (await self._peek(4))[2:4])[0], 4
            elif second == 127:
                second, at = struct.unpack("!Q", (await self._peek(10))[2:10])[0], 10
            frame = await self._peek(at + second)
            self._unread = self._unread[at + second :]
            if first & 0x0F == OPCODES["close"]:
                code: int = struct.unpack("!H", frame[at : at + 2])[0]
                return code

    async def _peek(self, size: int) -> bytes:
        while len(self._unread) < size:
            self._unread += await self._more()
        return self._unread[:size]

    async def _more(self) -> bytes:
        data = await self.stream.receive_some(65536)
        if not data:
            raise EOFError("the server closed the TCP connection without a close frame")
        return data


async def _sessions(port: int) -> int:
    async with httpx.AsyncClient() as http:
        sessions: int = (await http.get(f"http://127.0.0.1:{port}/health")).json()["sessions"]
        return sessions


async def test_text_is_counted_in_bytes_so_wide_characters_close_1009(tmp_path: Path) -> None:
    """6.5 M × U+1F600 is 26 MB of UTF-8 under `WS /ws`'s 25 MiB of *characters*: hypercorn
    held it as a 26 MB `str` (and twice that while building it). Counted in bytes, text past
    the JSON limit must be ASCII (base64), so it is closed with 1009 after 64 KiB; on a
    streaming route 300 k of them (1.2 MB, under 1 MiB + 64 KiB characters) are closed too."""
    port = free_port()
    process = await start_server(tmp_path, port)
    try:
        for path, count in (("/ws", 6_500_000), ("/v1/stream", 300_000)):
            _reset_peak(process.pid)
            before = _kib(process.pid, "VmRSS")
            socket = await RawSocket.open(port, path)
            text = ("\U0001f600" * count).encode()
            # the server may stop reading once it has refused, or drop the connection under it
            with trio.move_on_after(10), contextlib.suppress(trio.BrokenResourceError):
                await socket.send("text", text)
            with trio.fail_after(10):
                assert await socket.close_code() == 1009
            grown = _kib(process.pid, "VmHWM") - before
            await socket.stream.aclose()
            assert grown < 8 * 1024, f"{path}: the server's peak grew by {grown} KiB"
    finally:
        await stop(process)


async def test_permessage_deflate_is_declined_and_a_compressed_frame_refused(
    tmp_path: Path,
) -> None:
    """hypercorn accepted permessage-deflate on every route, and inflated without a bound: 25 MiB
    of zeros is 25 KB on the wire. The 101 now carries no extension, and a compressed frame
    sent anyway is a protocol error that ends the connection, with nothing inflated."""
    port = free_port()
    process = await start_server(tmp_path, port)
    try:
        _reset_peak(process.pid)
        before = _kib(process.pid, "VmRSS")
        offer = "permessage-deflate; client_max_window_bits"
        socket = await RawSocket.open(port, "/ws", extensions=offer)
        assert "sec-websocket-extensions" not in socket.headers
        squeeze = zlib.compressobj(9, zlib.DEFLATED, -15)
        bomb = squeeze.compress(bytes(25 * MiB)) + squeeze.flush(zlib.Z_SYNC_FLUSH)
        assert len(bomb) < 30_000
        await socket.send("binary", bomb[:-4], rsv1=True)  # permessage-deflate drops 00 00 ff ff
        # wsproto fails the connection (1002); hypercorn then drops the TCP connection
        # without a close frame
        with pytest.raises((EOFError, trio.BrokenResourceError)), trio.fail_after(10):
            await socket.close_code()
        await socket.stream.aclose()
        grown = _kib(process.pid, "VmHWM") - before
        assert grown < 8 * 1024, f"the server's peak grew by {grown} KiB"
    finally:
        await stop(process)


async def _flood(socket: RawSocket, frames: list[bytes], seconds: float) -> int:
    """Send binary frames until the server stops reading (TCP pushes back) or `seconds` pass;
    return how many were sent whole."""
    sent = 0
    with trio.move_on_after(seconds), contextlib.suppress(trio.BrokenResourceError):
        for frame in frames:
            await socket.send("binary", frame)
            sent += 1
    return sent


async def test_oversized_frames_behind_a_paced_stream_stay_within_the_bound(
    tmp_path: Path,
) -> None:
    """A client 10 minutes ahead of real time holds its session at the pacer; 20 MiB frames sent
    behind that were under hypercorn's one limit for every route (25 MiB) and queued (10 + 1,
    less the audio frames already there) while the session did not read: 180 MiB. Now the
    streaming routes' door is 1 MiB + 64 KiB and one message is queued, so the server stays
    within `service.serving`'s bound for hypercorn, `(q + 2) × L + 64 KiB`, plus the
    session's (`memory_bound`)."""
    from protocol.native import Config
    from service.policy.limits import Limits
    from service.session.supervisor import memory_bound

    limits = Limits()
    door = limits.max_frame_bytes + limits.max_message_bytes
    bound = 3 * door + (64 << 10) + memory_bound(limits.session_limits(), Config())
    port = free_port()
    process = await start_server(tmp_path, port)
    try:
        _reset_peak(process.pid)
        before = _kib(process.pid, "VmRSS")
        socket = await RawSocket.open(port, "/v1/stream")
        # 33 s of silence a frame: the segmenter waits at the pacer with one, the command
        # channel holds 16 and the reader one more, so the next wait in hypercorn's queue
        audio = bytes(limits.max_frame_bytes)
        assert await _flood(socket, [audio] * 20, 10) == 20
        await trio.sleep(0.5)
        await _flood(socket, [bytes(20 * MiB)] * 12, 5)
        await trio.sleep(0.5)
        grown = _kib(process.pid, "VmHWM") - before
        await socket.stream.aclose()
        assert grown * 1024 < bound, f"the server's peak grew by {grown} KiB, bound {bound >> 10}"
        print(f"peak growth {grown} KiB, bound {bound >> 10} KiB")
        with trio.fail_after(10):
            while await _sessions(port):  # noqa: ASYNC110 (another process's state)
                await trio.sleep(0.2)
    finally:
        await stop(process)


async def test_a_client_that_leaves_while_paced_ends_its_session(tmp_path: Path) -> None:
    """A client far ahead of real time waits at the pacer with its messages queued behind; it
    closes its end. The server's next pings find it gone (a reset), and the session ends within
    seconds instead of after pacing through what it had queued (minutes)."""
    port = free_port()
    process = await start_server(tmp_path, port)
    try:
        socket = await RawSocket.open(port, "/v1/stream")
        sent = await _flood(socket, [bytes(256 << 10)] * 200, 5)  # 8 s of audio a frame
        assert sent < 200
        assert await _sessions(port) == 1
        with trio.move_on_after(0.5):  # read what the server sent, so the close is a FIN
            while await socket.stream.receive_some(65536):
                pass
        await socket.stream.aclose()
        left = trio.current_time()
        with trio.fail_after(10):
            while await _sessions(port):  # noqa: ASYNC110 (another process's state)
                await trio.sleep(0.2)
        assert trio.current_time() - left < 8
    finally:
        await stop(process)


def test_the_live_stream_on_ws_gets_the_streams_door() -> None:
    """`/ws?stream=true` is that route's live PCM stream: it gets the streams' limit, not the
    recordings' 25 MiB (a paced stream would hold three of those)."""
    from service.serving import WebSocketBounds

    bounds = WebSocketBounds(stream_bytes=1, recordings_bytes=25, wide_text_bytes=1)
    assert bounds.message_bytes("/ws") == 25
    assert bounds.message_bytes("/ws", "token=k") == 25
    assert bounds.message_bytes("/ws", "stream=true&token=k") == 1
    assert bounds.message_bytes("/ws", "stream=1") == 1
    assert bounds.message_bytes("/v1/stream") == 1
    assert bounds.message_bytes("/v1/twilio") == 16 << 10  # Twilio's messages are small
