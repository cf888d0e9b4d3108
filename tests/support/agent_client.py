"""Ask a HAProxy agent (`service/agent.py`) what it says, as HAProxy's `agent-check` does."""

from __future__ import annotations

import trio


async def ask_agent(port: int, send: bytes = b"", host: str = "127.0.0.1") -> bytes:
    """Connect, send `send`, read until the agent closes; what it said."""
    received = b""
    async with await trio.open_tcp_stream(host, port) as stream:
        with trio.fail_after(10):
            try:
                await stream.send_all(send)
                while data := await stream.receive_some():
                    received += data
            except trio.BrokenResourceError:  # closed under a peer that sent more than is read
                pass
    return received
