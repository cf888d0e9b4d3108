"""The VAD actor: one per app, shared by every live session; runs Silero off the event loop.

Ownership: `open_vad()` opens a nursery that owns one task (`_serve_batches`) and yields a
`VadHandle`. Each session's segmenter stage (`service/session/segmenting.py`) opens one `VadStream`
through the handle and closes it with `with` when the stage ends. The actor keeps that stream's
Silero state (the LSTM's `h` and `c` and the 64 samples before its next frame: 1.3 KB) in its
table from open to close and nothing of it after; a stream that closes while its frames are in a
batch is not written back. The stream keeps the samples short of a whole 512-sample frame.

A stream submits its complete frames (at most `max_frames` a request; a larger chunk goes in
turns) into one bounded channel (`queue_size`: a full queue blocks the caller, and so its
session's pipeline) and waits for their probabilities. A stream has one request out at a time.
The actor takes whatever is waiting, up to `max_streams` requests, and runs them as one batch in
a worker thread (`trio.to_thread.run_sync` with a `CapacityLimiter(1)`, never abandoned on
cancel): one onnxruntime call for every stream in it (`vad_batch`), the LSTM stepping
all of them at once, each as far as its own frames go. It never waits to fill a batch unless
told to: with `gather_s` a batch waits that long for the other open streams' requests (a lone
stream never waits). A stream's next request waits for its last one's answer, so a window also
caps how often one stream asks (about once per `gather_s`); the segmenter stage joins the chunks
already waiting into one request, so that is not a cap on how fast its audio goes.

A request whose caller was cancelled is dropped before its batch. A cancelled call leaves its
stream's state unknown (its frames may or may not have run), so the stream is broken from then
on; nothing but the end of its session cancels a segmenter stage.

Leaving `open_vad` closes the queue; the actor answers what is queued and exits. If the actor
dies (the model raised: a bug, not a matter of one stream's input, which is only 512 floats a
frame), every waiting caller gets `VadClosed` and the error surfaces to whoever opened it: the
app lifespan's `ActorWatch` names the `vad` actor and `/health` answers 503.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from types import TracebackType

import attrs
import numpy as np
import trio

from actors.model.port import Samples
from actors.reply import Reply, snapshot
from actors.speech.vad import FRAME
from actors.speech.vad_batch import BatchedSilero, VadModel, VadState, Vector, Work


class VadClosed(Exception):
    """The VAD actor is gone (shut down or crashed); no more probabilities will come."""


@attrs.frozen
class VadConfig:
    queue_size: int = 64  # requests waiting (one per stream at most); more block their sessions
    max_streams: int = 64  # requests in one batch, one onnxruntime call
    max_frames: int = 64  # frames in one request (2 s): a larger chunk goes in turns
    # after the first request, how long a batch may wait for the other open streams' requests
    gather_s: float = 0.0


@attrs.frozen
class VadStatistics:
    streams: int  # open streams: the states the actor holds
    batches: int
    requests: int
    frames: int
    largest_batch: int  # requests
    busy_s: float
    queue: int  # requests waiting
    dropped: int  # requests whose caller had gone

    @property
    def mean_batch_size(self) -> float:
        return self.requests / self.batches if self.batches else 0.0


@attrs.define(eq=False)
class _Request:
    stream: int
    frames: Vector
    reply: Reply[Vector] = attrs.field(factory=Reply)
    abandoned: bool = False


@attrs.define
class _Table:
    """What the actor and the handle share, all on the trio thread (so no lock)."""

    states: dict[int, VadState] = attrs.field(factory=dict)  # open stream → its state
    running: list[_Request] = attrs.field(factory=list)  # the batch in the worker thread
    opened: int = 0  # streams ever opened: the next id (ids are never reused)
    batches: int = 0
    requests: int = 0
    frames: int = 0
    largest_batch: int = 0
    busy_s: float = 0.0
    dropped: int = 0


class VadHandle:
    """What the app holds: opens one stream per session, reads statistics."""

    def __init__(
        self, requests: trio.MemorySendChannel[_Request], table: _Table, config: VadConfig
    ) -> None:
        self._requests = requests
        self._table = table
        self._config = config

    def open_stream(self) -> VadStream:
        """A new stream with fresh state; close it (`with stream:`) to free that state."""
        table = self._table
        table.opened += 1
        table.states[table.opened] = VadState()
        return VadStream(self, table.opened, self._config.max_frames)

    def statistics(self) -> VadStatistics:
        return snapshot(
            VadStatistics,
            self._table,
            streams=len(self._table.states),
            queue=self._requests.statistics().current_buffer_used,
        )

    async def _submit(self, stream: int, frames: Vector) -> Vector:
        request = _Request(stream, frames)
        try:
            await self._requests.send(request)
        except (trio.ClosedResourceError, trio.BrokenResourceError):
            raise VadClosed("the VAD actor is not running") from None
        try:
            return await request.reply.wait()
        except VadClosed as closed:
            raise VadClosed(str(closed)) from None
        finally:
            if not request.reply.done:
                request.abandoned = True

    def _forget(self, stream: int) -> None:
        self._table.states.pop(stream, None)


class VadStream:
    """One session's view of the VAD actor: speech probability per 32 ms frame of its audio."""

    def __init__(self, handle: VadHandle, stream: int, max_frames: int) -> None:
        self._handle = handle
        self._stream = stream
        self._max_frames = max(1, max_frames)
        self._rest = np.zeros(0, dtype=np.float32)
        self._busy = self._broken = self._closed = False

    async def probabilities(self, samples: Samples) -> Vector:
        """One probability per frame that `samples` completes; the remainder waits for more.

        Raises `VadClosed` when the actor is gone.
        """
        if self._closed:
            raise trio.ClosedResourceError("this VAD stream is closed")
        if self._broken:
            raise trio.BrokenResourceError("a cancelled call left this VAD stream's state unknown")
        if self._busy:
            raise trio.BusyResourceError("another task is waiting on this VAD stream")
        audio = np.concatenate([self._rest, samples]) if len(self._rest) else samples
        count = len(audio) // FRAME
        if count == 0:
            await trio.lowlevel.checkpoint()
            self._rest = audio.astype(np.float32, copy=True)
            return np.zeros(0, dtype=np.float32)
        self._rest = audio[count * FRAME :].astype(np.float32, copy=True)
        frames = audio[: count * FRAME].astype(np.float32, copy=False).reshape(count, FRAME)
        self._busy = True
        try:
            pieces = [
                await self._handle._submit(self._stream, frames[start : start + self._max_frames])
                for start in range(0, count, self._max_frames)
            ]
        except BaseException:
            self._broken = True
            raise
        finally:
            self._busy = False
        return pieces[0] if len(pieces) == 1 else np.concatenate(pieces)

    def close(self) -> None:
        """Free this stream's state in the actor; idempotent."""
        self._closed = True
        self._handle._forget(self._stream)

    def __enter__(self) -> VadStream:
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()


@asynccontextmanager
async def open_vad(
    model: VadModel | None = None, config: VadConfig = VadConfig()
) -> AsyncIterator[VadHandle]:
    """Start the VAD actor; `model` injects one (tests), else the batched Silero is loaded."""
    if model is None:
        model = await trio.to_thread.run_sync(BatchedSilero)
    requests_send, requests_recv = trio.open_memory_channel[_Request](config.queue_size)
    table = _Table()
    with requests_recv:
        try:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(_serve_batches, model, requests_recv, table, config)
                with requests_send:  # leaving closes the queue; the actor drains and exits
                    yield VadHandle(requests_send, table, config)
        except BaseException as error:
            closed = VadClosed(f"the VAD actor stopped: {error!r}")
            for request in table.running:
                if not request.reply.done:
                    request.reply.fail(closed)
            while True:
                try:
                    requests_recv.receive_nowait().reply.fail(closed)
                except (trio.WouldBlock, trio.EndOfChannel):
                    break
            raise


async def _gather(
    requests: trio.MemoryReceiveChannel[_Request], table: _Table, config: VadConfig
) -> list[_Request]:
    """The next batch: whatever waits, and with `gather_s` what the other open streams send
    meanwhile (a lone stream never waits: it has no others)."""
    batch = [await requests.receive()]
    wanted = min(config.max_streams, len(table.states))
    if config.gather_s > 0:
        with trio.move_on_after(config.gather_s):
            while len(batch) < wanted:
                try:
                    batch.append(await requests.receive())
                except trio.EndOfChannel:
                    break
    while len(batch) < config.max_streams:
        try:
            batch.append(requests.receive_nowait())
        except (trio.WouldBlock, trio.EndOfChannel):
            break
    return batch


async def _serve_batches(
    model: VadModel,
    requests: trio.MemoryReceiveChannel[_Request],
    table: _Table,
    config: VadConfig,
) -> None:
    limiter = trio.CapacityLimiter(1)
    while True:
        try:
            batch = await _gather(requests, table, config)
        except trio.EndOfChannel:
            return
        # a request outlives its stream only when its caller was cancelled: nobody waits on it
        live = [r for r in batch if not r.abandoned and r.stream in table.states]
        table.dropped += len(batch) - len(live)
        if not live:
            continue
        work = [Work(table.states[request.stream], request.frames) for request in live]
        table.running = live
        started = trio.current_time()
        answers = await trio.to_thread.run_sync(model.run, work, limiter=limiter)
        table.busy_s += trio.current_time() - started
        if len(answers) != len(live):
            raise RuntimeError(f"the VAD model answered {len(answers)} of {len(live)} streams")
        table.batches += 1
        table.requests += len(live)
        table.frames += sum(len(item.frames) for item in work)
        table.largest_batch = max(table.largest_batch, len(live))
        for request, answer in zip(live, answers, strict=True):
            if request.stream in table.states:  # closed mid-batch: its state stays gone
                table.states[request.stream] = answer.state
            request.reply.set(answer.probabilities)
        table.running = []
