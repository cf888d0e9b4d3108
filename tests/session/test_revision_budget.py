"""The revisions' budget (`TranscriberConfig.partial_share`): later drafts of an utterance get
a share of the workers' time and wait while it is spent; finals and first drafts never wait
for it; and a session's draft that waits is abandoned when its utterance's final is asked for
or a newer utterance's first draft arrives."""

from __future__ import annotations

import numpy as np
import pytest
import trio
import trio.testing
from support.fakes import FakeModel, quiet_session
from support.transcriber_jobs import batch_lengths, queue_behind_a_busy_model

from actors.model.port import Priority, Request, Result
from actors.speech.segmenter import Segment, SegmenterConfig
from actors.transcriber.actor import TranscriberConfig, open_transcriber
from actors.transcriber.schedule import Budget
from protocol.native import Partial, ServerFrame
from service.session.config import SessionConfig
from service.session.messages import Segmented
from service.session.ports import StreamOptions
from service.session.transcribing import transcribe_segments


async def batches(model: FakeModel, count: int) -> None:
    """Wait until the model (in its worker thread) has run `count` batches."""
    with trio.fail_after(5):
        while len(model.batches) < count:  # noqa: ASYNC110 - the model runs in a thread
            await trio.sleep(0.01)


def test_the_budget_earns_its_share_spends_model_time_and_saves_up_to_its_burst() -> None:
    config = TranscriberConfig(workers=2, partial_share=0.25, partial_burst_s=1.0)
    budget = Budget.of(config.partial_share, config.partial_burst_s, config.workers, now=0.0)
    assert budget is not None and budget.rate == 0.5  # a quarter of two workers
    assert budget.wait_s(0.0) == 0.0  # a fresh server starts with its burst
    budget.spend(1.5, now=0.0)  # one batch of revisions ran 1.5 s: 0.5 s overdrawn
    assert budget.wait_s(0.0) == pytest.approx(1.0)
    assert budget.wait_s(0.5) == pytest.approx(0.5)
    assert budget.wait_s(1.1) == 0.0
    assert budget.wait_s(100.0) == 0.0 and budget.balance == 1.0  # saved up to the burst
    assert Budget.of(None, 1.0, 1, now=0.0) is None  # no share: no budget
    never = Budget.of(0.0, 0.0, 1, now=0.0)
    assert never is not None
    never.spend(0.1, now=0.0)
    assert never.wait_s(1e6) == float("inf")


async def test_revisions_wait_for_their_budget_and_nothing_else_does() -> None:
    """With no share, revisions wait while finals, first drafts and uploads run; when the
    transcriber closes, what waits runs."""
    model = FakeModel()
    model.gate.clear()
    config = TranscriberConfig(partial_share=0.0, partial_burst_s=0.0)
    async with trio.open_nursery() as nursery, open_transcriber(model, config) as transcriber:
        order: list[tuple[Priority, float]] = [
            ("partial", 1.0),
            ("background", 5.0),
            ("first_partial", 2.0),
            ("final", 3.0),
            ("partial", 4.0),
        ]
        await queue_behind_a_busy_model(nursery, transcriber, model, order)
        await batches(model, 4)
        await trio.sleep(0.1)
        assert batch_lengths(model) == [[9.0], [3.0], [2.0], [5.0]]  # revisions held back
        assert transcriber.statistics().queue == 2
    assert batch_lengths(model)[4:] == [[1.0, 4.0]]  # the closing transcriber ran them
    assert transcriber.statistics().revisions_held_s > 0


async def test_a_spent_budget_trims_a_batch_to_its_first_drafts() -> None:
    model = FakeModel()
    model.gate.clear()
    config = TranscriberConfig(partial_share=0.0, partial_burst_s=0.0, partial_batch_size=4)
    async with trio.open_nursery() as nursery, open_transcriber(model, config) as transcriber:
        order: list[tuple[Priority, float]] = [
            ("partial", 1.0),
            ("first_partial", 2.0),
            ("first_partial", 3.0),
        ]
        await queue_behind_a_busy_model(nursery, transcriber, model, order)
        await batches(model, 2)
        assert batch_lengths(model) == [[9.0], [2.0, 3.0]]
        stats = transcriber.statistics()
        assert (stats.first_partials, stats.partials) == (2, 2)


class HeldRevisions:
    """A transcriber whose revisions never come back (their budget is spent for good); first
    drafts and finals answer at once."""

    def __init__(self) -> None:
        self.calls: list[tuple[float, Priority]] = []
        self.abandoned: list[float] = []

    async def transcribe(
        self, request: Request, *, priority: Priority = "final", **_: object
    ) -> Result:
        seconds = len(request.audio) / 16000
        self.calls.append((seconds, priority))
        if priority == "partial":
            try:
                await trio.sleep_forever()
            finally:
                self.abandoned.append(seconds)
        return Result(text=f"{priority} of {seconds:.1f} s", language="en")


def segment(utterance: int, seconds: float, *, final: bool = False) -> Segment:
    audio = np.zeros(int(seconds * 16000), np.float32)
    return Segment(utterance=utterance, final=final, audio=audio, start=0.0, end=seconds)


async def test_a_waiting_draft_gives_way_to_the_next_utterances_first_draft() -> None:
    transcriber = HeldRevisions()
    events_send, events = trio.open_memory_channel[Segmented](16)
    frames_send, frames = trio.open_memory_channel[ServerFrame](64)
    config = SessionConfig(
        encoding="pcm_s16le",
        sample_rate=16000,
        channels=1,
        segmenter=SegmenterConfig(),
        language="en",
        task="transcribe",
        prompt=None,
        words=False,
    )
    partials: list[Partial] = []
    async with trio.open_nursery() as nursery:
        nursery.start_soon(
            transcribe_segments,
            quiet_session(transcriber, StreamOptions()),
            config,
            events,
            frames_send,
        )
        for event in (segment(0, 1.0), segment(0, 1.6)):  # a first draft, then a revision
            await events_send.send(event)
            await trio.testing.wait_all_tasks_blocked()
        assert transcriber.calls == [(1.0, "first_partial"), (1.6, "partial")]
        await events_send.send(segment(0, 2.0, final=True))  # the revision is abandoned
        await events_send.send(segment(1, 1.0))  # and the next utterance is heard at once
        with trio.fail_after(5):
            async for frame in frames:
                if isinstance(frame, Partial):
                    partials.append(frame)
                    if frame.utterance == 1:
                        break
        await events_send.aclose()
    assert transcriber.abandoned == [1.6]
    assert [(p.utterance, p.text) for p in partials] == [
        (0, "first_partial of 1.0 s"),
        (1, "first_partial of 1.0 s"),
    ]
