"""Admission's latency guard: the window of recent finals' waits, the refusal of a new live
session while they are slow, and the transcriber client recording each final's wait."""

from __future__ import annotations

import pytest
import trio
from support.audio_files import pcm16
from support.fakes import FakeSocket, FakeTranscriber
from support.session_parts import native_session, speech_with_pauses

from actors.model.port import Priority, Request, Result
from protocol.native import Final, Stop, encoder
from service.policy.latency import FinalWaits
from service.session.ports import StreamOptions
from service.session.supervisor import run_session

OPTIONS = StreamOptions(model="fake", final_beam_size=1)
FINAL_S = 0.7


def test_no_answer_below_the_minimum_of_samples() -> None:
    waits = FinalWaits(min_samples=8)
    for at in range(7):
        waits.record(float(at), 3.0)
    assert waits.percentile(7.0) is None
    waits.record(7.0, 3.0)
    assert waits.percentile(7.0) == 3.0


def test_the_percentile_is_the_nearest_rank() -> None:
    waits = FinalWaits(min_samples=1, quantile=0.95)
    for wait in range(1, 21):  # 0.1 .. 2.0, shuffled in time
        waits.record(0.0, ((wait * 7) % 20 + 1) / 10)
    assert waits.percentile(0.0) == pytest.approx(1.9)  # the 19th of 20
    waits.record(0.0, 9.0)
    assert waits.percentile(0.0) == pytest.approx(2.0)  # the 20th of 21: one outlier is not p95
    assert FinalWaits(min_samples=1, quantile=0.5).percentile(0.0) is None


def test_waits_older_than_the_window_are_forgotten() -> None:
    waits = FinalWaits(window_s=30.0, min_samples=2)
    waits.record(0.0, 5.0)
    waits.record(10.0, 5.0)
    waits.record(20.0, 0.5)
    assert waits.percentile(30.0) == 5.0
    assert waits.waits(35.0) == [5.0, 0.5]  # the first is 35 s old
    assert waits.percentile(45.0) is None  # one left: too few to say
    assert waits.waits(60.0) == []


def test_the_window_holds_at_most_max_samples_the_oldest_dropped() -> None:
    waits = FinalWaits(max_samples=4, min_samples=1, quantile=1.0)
    for at, wait in enumerate([9.0, 1.0, 1.0, 1.0, 1.0]):
        waits.record(float(at), wait)
    assert waits.waits(5.0) == [1.0] * 4
    assert waits.percentile(5.0) == 1.0


def test_a_negative_wait_counts_as_none() -> None:
    waits = FinalWaits(min_samples=1)
    waits.record(0.0, -0.2)
    assert waits.waits(0.0) == [0.0]


class SlowFinals(FakeTranscriber):
    """Finals take `FINAL_S` of (virtual) time; drafts are instant."""

    async def transcribe(
        self, request: Request, *, priority: Priority = "final", **_: object
    ) -> Result:
        if priority == "final":
            await trio.sleep(FINAL_S)
        return await super().transcribe(request, priority=priority)


async def test_the_transcriber_client_records_each_finals_wait(
    autojump_clock: trio.abc.Clock,
) -> None:
    socket, waits = FakeSocket(), FinalWaits(min_samples=1)
    data = pcm16(speech_with_pauses())

    async def client() -> None:
        for offset in range(0, len(data), 3200):  # real-time pace, on the virtual clock
            await socket.to_server.send(data[offset : offset + 3200])
            await trio.sleep(0.1)
        await socket.to_server.send(encoder.encode(Stop()).decode())

    async with trio.open_nursery() as nursery:
        nursery.start_soon(client)
        session = native_session(socket, SlowFinals(), OPTIONS, final_waits=waits)
        await run_session(session)
        frames = await socket.frames()
    finals = [frame for frame in frames if isinstance(frame, Final)]
    assert len(finals) == 2
    # one per final, each from its ask to its frame handed on: the model's time, no more
    assert waits.waits(trio.current_time()) == pytest.approx([FINAL_S, FINAL_S], abs=0.01)
    assert session.finals.queue == 0
