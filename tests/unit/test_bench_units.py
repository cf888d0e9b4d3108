"""Unit tests of the bench's pieces, and of its client against a small fake `/v1/stream` server.

The fake speaks just enough of the native protocol: it cuts an utterance after 0.5 s of digital
silence (the bench's conversations have exact zeros between clips) and answers each with the
next text it was given, so figures can be checked exactly.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from functools import partial
from pathlib import Path

import numpy as np
import pytest
import trio
from support.audio_files import SPEECH
from trio_websocket import WebSocketRequest, serve_websocket

from bench.audio import SAMPLE_RATE, Clip, make_clip, read_audio, speech_bounds
from bench.client import (
    CHORUS_DRIVER,
    Arrival,
    Outcome,
    SessionRecord,
    StreamOptions,
    stream_conversation,
    stream_url,
)
from bench.conversation import Conversation, build_conversation, build_conversations, chunks
from bench.figures import (
    batch_difference,
    distribution,
    session_figures,
    word_error_rate,
)
from bench.ratios import compare
from bench.report import load_markdown, write_load
from bench.run import Criteria, RunPlan, judge, run_load, search_capacity, session_url
from bench.schema import (
    CapacitySearch,
    Health,
    LoadReport,
    TranscriberHealth,
)
from bench.timeline import sent_time
from protocol.codec import NativeCodec
from protocol.native import (
    Final,
    Partial,
    Ready,
    ServerFrame,
    Status,
    Stopped,
)


def tone(seconds: float, *, level: float = 0.3) -> np.ndarray:
    t = np.arange(round(seconds * SAMPLE_RATE)) / SAMPLE_RATE
    return (level * np.sin(2 * np.pi * 220 * t)).astype(np.float32)


def clip(name: str, seconds: float, reference: str | None) -> Clip:
    return make_clip(name, tone(seconds), reference)


# --- conversations and audio ------------------------------------------------------------------


def test_conversation_lays_clips_out_with_pauses() -> None:
    clips = [clip("a", 1.0, "one"), clip("b", 2.0, "two"), clip("c", 1.5, "three")]
    conversation = build_conversation(clips, target_s=4.0, pause_s=1.0, lead_s=0.5)
    # 0.5 lead + a(1) + 1 + b(2) + 1 = 5.5 >= 4: two clips
    assert [span.clip for span in conversation.spans] == ["a", "b"]
    assert conversation.spans[0].start == pytest.approx(0.5, abs=0.03)
    assert conversation.spans[1].start == pytest.approx(2.5, abs=0.03)
    assert conversation.spans[1].end == pytest.approx(4.5, abs=0.03)
    assert conversation.duration == pytest.approx(5.5)
    pieces = list(chunks(conversation, 0.1))
    assert b"".join(piece.payload for piece in pieces) == conversation.pcm
    assert pieces[-1].audio_end == pytest.approx(conversation.duration)


def test_conversations_are_the_same_unless_distinct() -> None:
    clips = [clip(name, 1.0, name) for name in "abcdefghij"]
    same = build_conversations(clips, 3, target_s=1.0)
    assert len({conversation.spans[0].clip for conversation in same}) == 1
    distinct = build_conversations(clips, 3, target_s=1.0, distinct=True)
    assert [c.spans[0].clip for c in distinct] == ["a", "h", "e"]


def test_speech_bounds_skip_silence() -> None:
    samples = np.concatenate([np.zeros(8000, np.float32), tone(1.0), np.zeros(16000, np.float32)])
    start, end = speech_bounds(samples)
    assert start == pytest.approx(0.5, abs=0.03)
    assert end == pytest.approx(1.5, abs=0.03)


def test_read_audio_resamples_to_16k() -> None:
    samples = read_audio(SPEECH / "faster_whisper" / "jfk.flac")
    assert len(samples) / SAMPLE_RATE == pytest.approx(11.0, abs=0.05)
    assert samples.dtype == np.float32
    assert 0.1 < float(np.abs(samples).max()) <= 1.0


# --- figures ----------------------------------------------------------------------------------


def record_with(
    arrivals: Sequence[tuple[float, ServerFrame]], *, outcome: Outcome = "completed"
) -> SessionRecord:
    conversation = build_conversation([clip("a", 1.0, "hello there")], target_s=0.0, lead_s=0.5)
    ends = tuple(round(0.1 * (index + 1), 1) for index in range(25))
    return SessionRecord(
        client=0,
        conversation=conversation,
        outcome=outcome,
        reason="",
        started=True,
        audio_ends=ends,
        sent_at=tuple(100.0 + end for end in ends),  # sent exactly in real time from t=100
        send_lag_s=0.0,
        arrivals=tuple(Arrival(at=at, frame=frame) for at, frame in arrivals),
        close_code=1000,
    )


def final(text: str, start: float, end: float, utterance: int = 0) -> Final:
    return Final(utterance=utterance, text=text, start=start, end=end, language="en", confidence=1)


def test_sent_time_finds_the_chunk_holding_an_audio_time() -> None:
    record = record_with([])
    assert sent_time(record, 0.1) == pytest.approx(100.1)
    assert sent_time(record, 0.15) == pytest.approx(100.2)
    assert sent_time(record, 99.0) == pytest.approx(102.5)


def test_session_figures_measure_from_the_send_times() -> None:
    arrivals: list[tuple[float, ServerFrame]] = [
        (100.9, Partial(utterance=0, revision=0, text="hello", start=0.4, end=0.8)),
        (101.3, Partial(utterance=0, revision=1, text="hello the", start=0.4, end=1.2)),
        (102.3, final("Hello there!", 0.4, 2.0)),  # speech ends at 1.5
        (102.4, final("thank you", 2.1, 2.3, utterance=1)),  # inside the pause: unmatched
        (102.5, Status(lag_s=0.7, queue=1, degraded=False)),
    ]
    figures = session_figures(record_with(arrivals))
    assert figures.final_latencies == pytest.approx((0.3, 0.1))
    assert figures.end_of_speech_latencies == pytest.approx((0.8,))
    assert figures.first_partial_latencies == pytest.approx((0.4,))
    assert figures.unmatched_finals == 1
    assert figures.partials == 2
    assert figures.speech_s == pytest.approx(1.0, abs=0.05)
    assert figures.hypothesis == "Hello there! thank you"
    assert figures.max_lag_s == pytest.approx(0.7)


def test_word_error_rate_normalizes_like_whisper() -> None:
    rate = word_error_rate([("Mr. Smith paid ten dollars.", "mister smith paid $10")])
    assert rate.wer == 0.0
    rate = word_error_rate([("red green blue white", "red green white"), ("black", "black cat")])
    assert rate.reference_words == 5
    assert rate.wer == pytest.approx(2 / 5)
    assert (rate.substitutions, rate.deletions, rate.insertions) == (0, 1, 1)
    assert word_error_rate([]).wer is None


def test_distribution_percentiles() -> None:
    spread = distribution([float(value) for value in range(1, 101)])
    assert spread.count == 100
    assert spread.p50 == pytest.approx(50.5)
    assert spread.p95 == pytest.approx(95.05)
    assert spread.max == 100
    assert distribution([]).p95 is None


def test_batch_difference() -> None:
    before = Health(transcriber=TranscriberHealth(batches=2, items=3, batch_sizes={"1": 1, "2": 1}))
    after = Health(
        transcriber=TranscriberHealth(
            batches=5, items=10, batch_sizes={"1": 1, "2": 2, "3": 2}, busy_s=1.5
        )
    )
    stats = batch_difference(before, after)
    assert stats is not None
    assert (stats.batches, stats.items) == (3, 7)
    assert stats.mean_batch == pytest.approx(7 / 3)
    assert stats.batch_sizes == {"2": 1, "3": 2}
    assert stats.model_s == {} and stats.drafts_share is None  # a server that does not say
    assert batch_difference(None, after) is None


def test_the_drafts_share_of_the_model_time_during_a_run() -> None:
    spent = {"final": 10.0, "first_draft": 2.0, "revision": 5.0, "other": 1.0}
    before = Health(transcriber=TranscriberHealth(model_s=spent))
    later = {"final": 16.0, "first_draft": 4.0, "revision": 14.0, "other": 9.0}
    stats = batch_difference(before, Health(transcriber=TranscriberHealth(model_s=later)))
    assert stats is not None
    assert stats.model_s == {"final": 6.0, "first_draft": 2.0, "revision": 9.0, "other": 8.0}
    assert stats.drafts_share == pytest.approx(11 / 17)  # uploads ("other") are not live work


# --- the client against a fake server ---------------------------------------------------------


async def fake_stream(request: WebSocketRequest, *, texts: Sequence[str], mode: str) -> None:
    if mode == "reject":
        await request.reject(503)
        return
    socket = await request.accept()
    if mode == "busy":
        await socket.aclose(code=1013, reason="try again later")
        return
    codec = NativeCodec()

    async def send(frame: ServerFrame) -> None:
        for message in codec.encode(frame):
            await socket.send_message(message)

    await send(Ready(session_id="s", model="fake", sample_rate=SAMPLE_RATE, language="en"))
    audio_s, speech_start, last_voice, utterance = 0.0, None, 0.0, 0
    while True:
        message = await socket.get_message()
        if isinstance(message, str):
            assert json.loads(message) == {"type": "stop"}
            await send(Stopped(session_id="s", transcript="", duration_s=audio_s, utterances=0))
            await socket.aclose(code=1000)
            return
        samples = np.frombuffer(message, dtype="<i2")
        chunk_s = len(samples) / SAMPLE_RATE
        if np.any(samples != 0):
            if speech_start is None:
                speech_start = audio_s
            last_voice = audio_s + chunk_s
            text = texts[utterance % len(texts)]
            await send(
                Partial(
                    utterance=utterance, revision=0, text=text, start=speech_start, end=last_voice
                )
            )
        elif speech_start is not None and audio_s + chunk_s - last_voice >= 0.5:
            text = texts[utterance % len(texts)]
            await send(final(text, speech_start, audio_s + chunk_s, utterance))
            await send(Status(lag_s=0.01, queue=0, degraded=False))
            speech_start, utterance = None, utterance + 1
        audio_s += chunk_s


async def open_fake(nursery: trio.Nursery, texts: Sequence[str], mode: str = "ok") -> str:
    handler = partial(fake_stream, texts=texts, mode=mode)
    server = await nursery.start(
        partial(serve_websocket, handler, "127.0.0.1", 0, ssl_context=None)
    )
    return f"http://127.0.0.1:{server.port}"


FAST = StreamOptions(speed=10.0, drain_s=5.0)


async def test_client_records_a_whole_session(nursery: trio.Nursery) -> None:
    clips = [clip("a", 1.0, "hello there"), clip("b", 1.2, "general kenobi")]
    conversation = build_conversation(clips, target_s=3.0)
    url = await open_fake(nursery, ["Hello there.", "General Kenobi!"])
    record = await stream_conversation(stream_url(url), conversation, FAST)
    assert (record.outcome, record.reason, record.close_code) == ("completed", "", 1000)
    assert record.audio_sent_s == pytest.approx(conversation.duration)
    figures = session_figures(record)
    assert figures.finals == 2
    assert figures.unmatched_finals == 0
    assert all(latency > 0 for latency in figures.final_latencies)
    assert len(figures.first_partial_latencies) == 2
    assert word_error_rate([("hello there general kenobi", figures.hypothesis)]).wer == 0.0


@pytest.mark.parametrize(
    ("mode", "reason"), [("reject", "HTTP 503"), ("busy", "closed 1013 before ready")]
)
async def test_client_tells_refusals(nursery: trio.Nursery, mode: str, reason: str) -> None:
    url = await open_fake(nursery, ["x"], mode)
    conversation = build_conversation([clip("a", 0.5, "x")], target_s=0.0)
    record = await stream_conversation(stream_url(url), conversation, FAST)
    assert (record.outcome, record.reason) == ("refused", reason)


async def test_client_gives_up_at_its_deadline(nursery: trio.Nursery) -> None:
    url = await open_fake(nursery, ["x"])
    conversation = build_conversation([clip("a", 2.0, "x")], target_s=0.0)
    options = StreamOptions(speed=1.0)
    record = await stream_conversation(
        stream_url(url), conversation, options, deadline=trio.current_time() + 0.5
    )
    assert record.outcome == "failed"
    assert "time limit" in record.reason
    assert 0 < len(record.sent_at) < len(list(chunks(conversation)))


async def test_capacity_search_and_report(nursery: trio.Nursery, tmp_path: Path) -> None:
    clips = [clip("a", 1.0, "hello there"), clip("b", 1.0, "general kenobi")]
    url = await open_fake(nursery, ["hello there", "general kenobi"])
    plan = RunPlan(
        label="chorus",
        url=url,
        stream=FAST,
        stagger_s=0.05,
        slack_s=5.0,
        trace_prefix=tmp_path / "trace",
        score_together=False,  # every final counted, however the fake's timing falls
    )

    def conversations(count: int) -> list[Conversation]:
        return build_conversations(clips, count, target_s=3.0)

    search = await search_capacity(plan, [1, 2], conversations, naive=False)
    assert search.capacity == 2, search.stop_reason
    two = search.runs[1]
    assert (two.sessions.started, two.sessions.completed) == (2, 2)
    assert two.finals == 4
    assert two.wer == 0.0
    assert two.final_latency_s.count == 4
    assert two.server is None  # no pid given
    assert two.caption_delay_s.count > 0
    assert two.caption_delay_sessions is not None
    assert len(two.caption_delay_sessions.p95_s) == 2
    assert two.together is not None and not two.together.scored
    assert 0 < two.together.seconds <= two.together.planned_s + 0.2
    assert two.speech_fraction is not None and 0 < two.speech_fraction < 1
    assert search.caption_source  # the native protocol gives every text's audio end
    assert two.transcriber is None  # the fake has no /health
    trace = (tmp_path / "trace-chorus-n2.jsonl").read_text()
    sessions = [json.loads(line) for line in trace.splitlines()]
    assert [session["client"] for session in sessions] == [0, 1]
    kinds = [frame["type"] for _, frame in sessions[1]["frames"]]
    assert kinds[0] == "ready"
    assert kinds.count("final") == 2
    assert kinds[-1] == "stopped"
    assert len(sessions[1]["sends"]) == len(list(chunks(conversations(1)[0])))

    refusing = await open_fake(nursery, ["x"], "reject")
    refused = await run_load(RunPlan(label="naive", url=refusing, stream=FAST), conversations(1))
    refused = judge(refused, Criteria(), None)
    assert not refused.held
    assert refused.sessions.refused == 1

    naive = CapacitySearch(
        label="naive", url=refusing, naive=True, runs=[refused], capacity=0, stop_reason="refused"
    )
    report = LoadReport(
        kind="load",
        created="now",
        machine={},
        options={},
        searches=[search, naive],
        comparison=compare(search, naive),
    )
    written = write_load(report, tmp_path / "load-test")
    assert sorted(path.name for path in written) == [
        "load-test-latency.png",
        "load-test-wer.png",
        "load-test.json",
        "load-test.md",
    ]
    assert all(path.stat().st_size > 0 for path in written)
    data = json.loads((tmp_path / "load-test.json").read_text())
    assert data["searches"][0]["runs"][1]["final_latency_s"]["count"] == 4
    assert "| chorus | 2 | 2 | 2 | 0 | 0 |" in load_markdown(report)


async def limited_stream(
    request: WebSocketRequest, *, texts: Sequence[str], live: list[int], limit: int
) -> None:
    """`fake_stream`, refusing (503) a session while `limit` others are live."""
    if live[0] >= limit:
        await request.reject(503)
        return
    live[0] += 1
    try:
        await fake_stream(request, texts=texts, mode="ok")
    finally:
        live[0] -= 1


async def test_search_warms_up_then_refines_between_held_and_failed(
    nursery: trio.Nursery,
) -> None:
    clips = [clip("a", 1.0, "hello there"), clip("b", 1.0, "general kenobi")]
    handler = partial(limited_stream, texts=["hello there", "general kenobi"], live=[0], limit=2)
    server = await nursery.start(
        partial(serve_websocket, handler, "127.0.0.1", 0, ssl_context=None)
    )
    plan = RunPlan(
        label="chorus",
        url=f"http://127.0.0.1:{server.port}",
        stream=FAST,
        stagger_s=0.02,
        slack_s=5.0,
        score_together=False,
    )

    def conversations(count: int) -> list[Conversation]:
        return build_conversations(clips, count, target_s=3.0)

    warm = build_conversations(clips, 1, target_s=1.0)
    search = await search_capacity(plan, [1, 4], conversations, naive=False, warm_up=warm)
    # 4 at once: two refused; the refinement tries (1 + 4) // 2 = 2, which the fake takes
    assert search.warm_up is not None and search.warm_up.sessions.completed == 1
    assert [run.clients for run in search.runs] == [1, 2, 4]
    assert [run.refinement for run in search.runs] == [False, True, False]
    assert (search.refined, search.capacity) == (2, 2), search.stop_reason
    assert search.stop_reason.startswith("4 clients: 2 refused")
    text = load_markdown(
        LoadReport(kind="load", created="now", machine={}, options={}, searches=[search])
    )
    assert "| chorus | 2 (refinement) | 2 | 2 | 0 | 0 |" in text
    assert "refinement: N=2: held" in text
    assert "warm-up (not scored): 1 sessions of" in text
    unrefined = await search_capacity(plan, [1, 4], conversations, naive=False, refine=False)
    assert (unrefined.refined, unrefined.capacity) == (None, 1)


def test_judge_applies_the_criteria() -> None:
    record = record_with([(104.5, final("hello there", 0.4, 1.5))])
    plan = RunPlan(label="x", url="http://127.0.0.1:1", stream=FAST)
    from bench.run import summarize

    slow = judge(summarize(plan, [record], wall_s=1.0), Criteria(), None)
    assert not slow.held
    assert "p95 final latency" in slow.verdict
    fine = judge(summarize(plan, [record], wall_s=1.0), Criteria(max_p95_final_s=5.0), 0.0)
    assert fine.held, fine.verdict
    wrong = record_with([(101.0, final("goodbye", 0.4, 1.5))])
    worse = judge(summarize(plan, [wrong], wall_s=1.0), Criteria(max_p95_final_s=5.0), 0.0)
    assert not worse.held
    assert "WER" in worse.verdict


def test_finals_only_clients_ask_chorus_for_no_partials() -> None:
    base = "http://127.0.0.1:8000"
    default = session_url(CHORUS_DRIVER, base, StreamOptions())
    assert "interim" not in default
    finals_only = session_url(CHORUS_DRIVER, base, StreamOptions(interim=False))
    assert finals_only == default + "&interim=false"
    assert finals_only.startswith("ws://127.0.0.1:8000/v1/stream?")


def test_the_reference_is_the_median_pass() -> None:
    from bench.reference import OfflineThroughput

    # 60 s of audio in 4 s, 5 s (a machine hiccup) and 3 s: the median pass is 4 s
    measured = OfflineThroughput.of_passes(60.0, [4.0, 5.0, 3.0], 10, 5, 2)
    assert measured.audio_s_per_wall_s == pytest.approx(15.0)
    assert measured.passes == pytest.approx((15.0, 12.0, 20.0))
    assert OfflineThroughput.of_passes(60.0, [4.0], 10, 5, 2).audio_s_per_wall_s == 15.0
    assert OfflineThroughput.of_passes(60.0, [4.0, 6.0], 10, 5, 2).wall_s == 4.0  # lower middle
