"""Fakes for unit tests of the pipeline (STYLE.md): no mocks, small honest stand-ins.

- `FakeModel`: instant; records every batch; can be gated (a `threading.Event`, since it runs
  in the actor's worker thread) and told to fail.
- `FakeTranscriber`: the `Transcriber` protocol without an actor, gated by a `trio.Event`.
- `FakeSocket`: the `FrameSocket` protocol over two memory channels.
- `quiet_session`: a session record for driving one stage on its own.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Sequence

import msgspec
import trio

from actors.model.port import SAMPLE_RATE, Priority, Request, Result
from protocol.codec import NativeCodec
from protocol.native import Config, ServerFrame, server_decoder
from service.session.ports import ClientGone, StreamOptions, Transcriber
from service.session.record import Session


def describe(request: Request) -> str:
    return f"speech of {len(request.audio) / SAMPLE_RATE:.1f} seconds"


class FakeModel:
    name = "fake"
    multilingual = False
    languages: tuple[str, ...] = ("en",)
    workers = 1

    def __init__(
        self,
        text: Callable[[Request], str] = describe,
        *,
        fail: Callable[[Request], bool] = lambda request: False,
    ) -> None:
        self.batches: list[list[Request]] = []
        self.gate = threading.Event()
        self.gate.set()
        self.entered = threading.Event()
        self._text = text
        self._fail = fail

    def transcribe_batch(self, requests: Sequence[Request]) -> list[Result]:
        self.entered.set()
        self.gate.wait(timeout=30)
        self.batches.append(list(requests))
        if any(self._fail(request) for request in requests):
            raise RuntimeError("the fake model broke")
        return [Result(text=self._text(request), language="en") for request in requests]

    @property
    def seen(self) -> list[Request]:
        return [request for batch in self.batches for request in batch]


class SlowModel:
    """Costs `cost` wall seconds per second of audio, like a real model but predictable."""

    name = "slow"
    multilingual = False
    languages: tuple[str, ...] = ("en",)
    workers = 1

    def __init__(self, cost: float) -> None:
        self.cost = cost

    def transcribe_batch(self, requests: Sequence[Request]) -> list[Result]:
        time.sleep(self.cost * sum(len(r.audio) for r in requests) / SAMPLE_RATE)
        return [Result(text="words", language="en") for _ in requests]


class FakeTranscriber:
    def __init__(self, text: Callable[[Request], str] = describe) -> None:
        self.gate = trio.Event()
        self.gate.set()
        self.calls: list[tuple[Request, Priority]] = []
        self._text = text

    async def transcribe(
        self, request: Request, *, priority: Priority = "final", **_: object
    ) -> Result:
        self.calls.append((request, priority))
        await self.gate.wait()
        return Result(text=self._text(request), language="en")


class FakeSocket:
    """The server's end; the test holds `to_server` and `from_server`."""

    def __init__(self, size: int = 256) -> None:
        self.to_server, self._incoming = trio.open_memory_channel[str | bytes](size)
        self._outgoing, self.from_server = trio.open_memory_channel[str | bytes](size)
        self.closed_with: int | None = None
        self.gone = trio.Event()  # set by a test: the transport knows the client has left

    async def receive(self) -> str | bytes:
        try:
            return await self._incoming.receive()
        except trio.EndOfChannel:
            raise ClientGone("client closed") from None

    async def wait_gone(self) -> None:
        await self.gone.wait()

    async def send(self, message: str | bytes) -> None:
        if self.closed_with is not None:
            raise ClientGone("closed")
        try:
            await self._outgoing.send(message)
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            raise ClientGone("client gone") from None

    async def close(self, code: int = 1000, reason: str = "") -> None:
        self.closed_with = code
        await self._outgoing.aclose()

    async def frames(self) -> list[ServerFrame]:
        """Every frame the server sent until it closed."""
        return [server_decoder.decode(message) async for message in self.from_server]


def frame_types(frames: Sequence[msgspec.Struct]) -> list[str]:
    return [type(frame).__name__ for frame in frames]


def quiet_session(transcriber: Transcriber, options: StreamOptions) -> Session:
    """A session's record for a test that drives one stage itself (nobody reads its socket)."""
    return Session(
        socket=FakeSocket(),
        codec=NativeCodec(),
        transcriber=transcriber,
        config=Config(),
        options=options,
        session_id="s",
    )
