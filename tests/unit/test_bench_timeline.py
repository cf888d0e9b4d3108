"""The bench's figures of issue 20 on hand-built session logs whose answers are worked out by
hand: caption delay, first-text delay against the clips' places, the held rule with the caption
criterion, sustained load's conversation length and live-together window, the refinement step,
E with the conversations' mean speech fraction, and what the report says about each server.

No server and no model: every record is built here, chunk send times and frame arrivals
included, so nothing depends on timing.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from pathlib import Path

import attrs
import msgspec
import numpy as np
import pytest

from bench.audio import SAMPLE_RATE, make_clip
from bench.client import Arrival, Outcome, SessionRecord, StreamOptions
from bench.conversation import Conversation, Span
from bench.figures import session_figures
from bench.launch import running_launch, started_launch, threads_of
from bench.load import Invocation
from bench.load_options import parse_arguments
from bench.ratios import efficiency
from bench.report import load_markdown, write_json
from bench.run import Criteria, RunPlan, judge, summarize
from bench.schema import CapacitySearch, LoadReport, Reference, SessionSpread
from bench.sustain import (
    conversation_seconds,
    live_window,
    planned_together_s,
    refinement_step,
)
from bench.timeline import Window, caption_delays, caption_instants, first_text_delays
from bench.trace import read_trace, write_trace
from protocol.native import Final, Partial, ServerFrame


def plan() -> RunPlan:
    return RunPlan(label="chorus", url="http://127.0.0.1:1", stream=StreamOptions())


def session(
    spans: Sequence[tuple[float, float]],
    duration: float,
    arrivals: Sequence[tuple[float, ServerFrame]],
    *,
    client: int = 0,
    outcome: Outcome = "completed",
    sent: bool = True,
) -> SessionRecord:
    """Chunks of 0.1 s, each sent exactly when its audio ends, from wall time 100."""
    ends = tuple(round(0.1 * (index + 1), 1) for index in range(round(duration * 10)))
    return SessionRecord(
        client=client,
        conversation=Conversation(
            pcm=b"",
            spans=tuple(
                Span(f"c{i}", start, end, "one two") for i, (start, end) in enumerate(spans)
            ),
            duration=duration,
        ),
        outcome=outcome,
        reason="" if outcome == "completed" else "HTTP 503",
        started=sent,
        audio_ends=ends if sent else (),
        sent_at=tuple(100.0 + end for end in ends) if sent else (),
        send_lag_s=0.0,
        arrivals=tuple(Arrival(at=at, frame=frame) for at, frame in arrivals),
        close_code=1000,
    )


def partial(text: str, start: float, end: float, revision: int = 0) -> Partial:
    return Partial(utterance=0, revision=revision, text=text, start=start, end=end)


def final(text: str, start: float, end: float, utterance: int = 0) -> Final:
    return Final(utterance=utterance, text=text, start=start, end=end, language="en", confidence=1)


# One clip, 0.5-2.5 s of a 3 s conversation. Caption delay is sampled at 1.5, 1.75, 2.0, 2.25
# and 2.5 s, sent (the chunks ending at 1.5, 1.8, 2.0, 2.3, 2.5) at 101.5, 101.8, 102.0,
# 102.3 and 102.5. Text shown by then reaches 0 (nothing yet), 1.2, 1.2 (the empty partial
# does not count), 2.3 (the final arriving at 102.3 counts at 102.3), 2.3 (a late final of an
# earlier utterance ending at 0.4 does not pull the captions back): delays 1.5, 0.55, 0.8,
# 0 (2.25 - 2.3, clamped) and 0.2.
CAPTIONED: list[tuple[float, ServerFrame]] = [
    (101.6, partial("one", 0.5, 1.2)),
    (101.9, partial("", 0.5, 1.8, revision=1)),
    (102.2, partial("one two", 0.5, 1.9, revision=2)),
    (102.3, final("one two", 0.5, 2.3)),
    (102.4, final("zero", 0.0, 0.4, utterance=1)),
]
CAPTION_DELAYS = [1.5, 0.55, 0.8, 0.0, 0.2]


def captioned() -> SessionRecord:
    return session([(0.5, 2.5)], 3.0, CAPTIONED)


def silent() -> SessionRecord:
    """0.5-2.0 s and no text at all: delays 1.5, 1.75 and 2.0 (measured against 0)."""
    return session([(0.5, 2.0)], 2.5, [], client=1)


def test_caption_delay_on_a_hand_built_session() -> None:
    assert caption_instants(Span("a", 0.5, 2.5, None)) == pytest.approx([1.5, 1.75, 2.0, 2.25, 2.5])
    assert caption_instants(Span("a", 0.5, 1.4, None)) == []  # no first second
    assert caption_delays(captioned()) == pytest.approx(CAPTION_DELAYS)
    assert caption_delays(silent()) == pytest.approx([1.5, 1.75, 2.0])
    # only instants sent inside a window count (101.8 to 102.3: the 2nd, 3rd and 4th)
    assert caption_delays(captioned(), Window(101.8, 102.3)) == pytest.approx([0.55, 0.8, 0.0])
    assert session_figures(captioned()).caption_delays == pytest.approx(CAPTION_DELAYS)


def test_caption_delay_per_run_and_per_session() -> None:
    refused = session([(0.5, 2.0)], 2.5, [], client=2, outcome="refused", sent=False)
    figures = summarize(plan(), [captioned(), silent(), refused], wall_s=3.0)
    # all samples: 0, 0.2, 0.55, 0.8, 1.5, 1.5, 1.75, 2.0 (numpy's linear percentiles)
    caption = figures.caption_delay_s
    assert caption.count == 8
    assert caption.p50 == pytest.approx((0.8 + 1.5) / 2)
    assert caption.p95 == pytest.approx(1.75 + 0.65 * 0.25)
    assert caption.max == pytest.approx(2.0)
    # p95 of 0, 0.2, 0.55, 0.8, 1.5 is 0.8 + 0.8 × 0.7; of 1.5, 1.75, 2.0 it is 1.75 + 0.9 × 0.25
    spread = figures.caption_delay_sessions
    assert spread is not None
    assert spread.p95_s == pytest.approx([1.36, 1.975, None])
    assert spread.worst_session == 1
    assert spread.worst_p95_s == pytest.approx(1.975)
    assert spread.median_p95_s == pytest.approx((1.36 + 1.975) / 2)


def test_caption_delay_is_recomputed_from_a_trace(tmp_path: Path) -> None:
    path = write_trace([captioned(), silent()], 100.0, tmp_path / "trace.jsonl")
    first, second = read_trace(path)
    assert first.conversation.duration == 3.0 and first.conversation.spans[0].start == 0.5
    assert first.sent_at[0] == pytest.approx(0.1)  # seconds from the run's start
    assert caption_delays(first) == pytest.approx(CAPTION_DELAYS)
    assert caption_delays(second) == pytest.approx([1.5, 1.75, 2.0])
    assert session_figures(first).finals == 2


# Clips at 0.5-2.7 and 4.0-6.5 s (and 7.5-8.5, under 2 s: no first text). The first's first
# second is sent at 101.5, the second's at 105.0. Its first text is the partial at 101.4
# (-0.1: before the first second was even sent); the final of the first clip arriving at 103.3
# ends before the second clip starts, so the second's first text is the partial at 105.3: 0.3.
FIRST_TEXT: list[tuple[float, ServerFrame]] = [
    (101.4, partial("one", 0.5, 1.2)),
    (103.3, final("one two", 0.5, 2.7)),
    (105.3, partial("three", 4.0, 4.6)),
    (108.9, final("three four", 4.0, 6.5, utterance=1)),
]


def test_first_text_counts_from_the_clips_places_not_the_servers_starts() -> None:
    spans = [(0.5, 2.7), (4.0, 6.5), (7.5, 8.5)]
    record = session(spans, 9.0, FIRST_TEXT)
    assert first_text_delays(record) == pytest.approx([-0.1, 0.3])
    assert session_figures(record).first_text_latencies == pytest.approx((-0.1, 0.3))
    # a server whose `start` stamps are wrong (here: after everything) measures the same
    for stamp in (0.0, 99.0):
        moved = [(at, msgspec.structs.replace(frame, start=stamp)) for at, frame in FIRST_TEXT]
        assert first_text_delays(session(spans, 9.0, moved)) == pytest.approx([-0.1, 0.3])
    assert first_text_delays(record, Window(104.0, 110.0)) == pytest.approx([0.3])


def test_held_needs_the_caption_delay_within_its_limit() -> None:
    figures = summarize(plan(), [captioned()], wall_s=3.0)
    assert figures.caption_delay_s.p95 == pytest.approx(1.36)
    held = judge(figures, Criteria(), None)
    assert held.held, held.verdict
    strict = judge(figures, Criteria(max_p95_caption_s=1.0), None)
    assert not strict.held
    assert strict.verdict == "p95 caption delay 1.36 s > 1 s"
    # the worst session far behind the median one is a note, not a failure
    lopsided = SessionSpread(
        p95_s=[0.5, 0.5, 1.2], worst_p95_s=1.2, worst_session=2, median_p95_s=0.5
    )
    noted = judge(
        msgspec.structs.replace(figures, caption_delay_sessions=lopsided), Criteria(), None
    )
    assert noted.held
    assert "worst session's caption p95 1.20 s, 2.4x the median" in noted.verdict


def test_conversations_are_long_enough_to_be_live_together() -> None:
    # 52 clients 0.25 s apart: the last starts at 12.75 s; 60 s together and 2 s of margin
    assert conversation_seconds(52, seconds=60, stagger_s=0.25) == pytest.approx(74.75)
    assert conversation_seconds(1, seconds=60, stagger_s=0.25) == pytest.approx(62.0)
    assert conversation_seconds(4, seconds=120, stagger_s=0.25) == 120  # --seconds is a floor
    assert conversation_seconds(52, seconds=30, stagger_s=0.25, together_s=0) == 30
    assert conversation_seconds(2, seconds=0, stagger_s=1.0, speed=2.0) == pytest.approx(126.0)
    # client i starts at 0.5 i and sends for its audio: the first to end is client 1, at 65.5
    assert planned_together_s([70.0, 65.0, 80.0], stagger_s=0.5, speed=1.0) == pytest.approx(64.5)
    assert planned_together_s([10.0, 10.0], stagger_s=20.0, speed=1.0) < 0  # never together


def test_the_live_window_comes_from_the_send_times() -> None:
    early = session([(0.5, 2.0)], 3.0, [])  # sends 100.1 to 103.0
    late = attrs.evolve(early, client=1, sent_at=tuple(at + 0.5 for at in early.sent_at))
    refused = session([], 1.0, [], client=2, outcome="refused", sent=False)
    window = live_window([early, late, refused])
    assert window is not None
    assert window.start == pytest.approx(100.6)
    assert window.end == pytest.approx(103.0)
    assert live_window([refused]) is None
    figures = summarize(plan(), [early, late], wall_s=3.5)
    together = figures.together
    assert together is not None and together.scored
    assert together.seconds == pytest.approx(2.4)
    assert together.start_s == pytest.approx(0.5)
    assert together.end_s == pytest.approx(2.9)
    whole = summarize(attrs.evolve(plan(), score_together=False), [early, late], wall_s=3.5)
    assert whole.together is not None and not whole.together.scored


def test_the_invocation_plans_sustained_conversations_and_a_warm_up() -> None:
    tone = (0.3 * np.sin(np.arange(4 * SAMPLE_RATE) / 10)).astype(np.float32)
    clips = [make_clip(name, tone, name) for name in "abcdefgh"]
    settings = parse_arguments(["--clients", "1,8"])
    assert (settings.stagger, settings.together_s, settings.max_caption_delay) == (0.25, 60, 1.5)
    invocation = Invocation(settings, clips, Path("unused"), "now")
    conversations = invocation.conversations(8)
    durations = [conversation.duration for conversation in conversations]
    assert min(durations) >= 0.25 * 7 + 60 + 2
    assert planned_together_s(durations, stagger_s=0.25, speed=1.0) >= 60
    fractions = [c.speech_s / c.duration for c in conversations]
    assert all(0.5 < fraction < 1 for fraction in fractions)
    warm = invocation.warm_up_conversations()
    assert len(warm) == 2 and all(c.duration >= 15 for c in warm)
    none = parse_arguments(["--warm-up-clients", "0"])
    assert Invocation(none, clips, Path("unused"), "now").warm_up_conversations() == []


@pytest.mark.parametrize(
    ("held", "failed", "step"),
    [(4, 8, 6), (48, 56, 52), (2, 3, None), (4, None, None), (0, 4, None), (8, 11, 9)],
)
def test_the_refinement_step_lies_between_held_and_failed(
    held: int, failed: int | None, step: int | None
) -> None:
    assert refinement_step(held, failed) == step


def test_e_uses_the_conversations_mean_speech_fraction() -> None:
    figures = summarize(plan(), [captioned(), silent()], wall_s=3.0)
    # 2.0 s of speech in 3.0 s and 1.5 s in 2.5 s: the mean of 0.667 and 0.6
    assert figures.speech_fraction == pytest.approx((2 / 3 + 0.6) / 2)
    runs = [msgspec.structs.replace(figures, clients=2)]
    search = CapacitySearch(
        label="chorus", url="", naive=False, runs=runs, capacity=2, stop_reason="every step held"
    )
    reference = Reference(method="offline", audio_s_per_wall_s=10.0, audio_s=60.0, files=3)
    row = efficiency(search, reference)
    assert row.speech_fraction == pytest.approx(figures.speech_fraction)
    assert row.efficiency == pytest.approx(2 * (2 / 3 + 0.6) / 2 / 10.0)


def test_the_report_names_each_servers_launch(tmp_path: Path) -> None:
    dotenv = tmp_path / ".env"
    dotenv.write_text("# settings\nCHORUS_PARTIAL_SHARE='0.5'\nOTHER=1\n")
    command = ["uv", "run", "chorus", "serve", "--model", "tiny.en", "--cpu-threads", "2"]
    inherited = {"PATH": "/bin", "CHORUS_ADMISSION_UTILIZATION": "0", "OMP_NUM_THREADS": "1"}
    given = {"CHORUS_MAX_SESSIONS_PER_CLIENT": "100000"}
    launch = started_launch(command, given, inherited=inherited, dotenv=dotenv)
    assert launch.environment == {
        "CHORUS_ADMISSION_UTILIZATION": "0",
        "CHORUS_MAX_SESSIONS_PER_CLIENT": "100000",
        "CHORUS_PARTIAL_SHARE": "0.5 (.env)",
        "OMP_NUM_THREADS": "1",
    }
    assert launch.threads == "2 (--cpu-threads)"
    assert threads_of(["serve"], {"CHORUS_CPU_THREADS": "4"}) == "4 (CHORUS_CPU_THREADS)"
    assert threads_of(["serve"], {}).startswith("its default")
    assert running_launch(None).threads == "unknown"
    ours = running_launch(os.getpid())
    assert ours.command and ours.how == f"already running (pid {os.getpid()})"

    figures = judge(summarize(plan(), [captioned()], wall_s=3.0), Criteria(), None)
    search = CapacitySearch(
        label="chorus",
        url="",
        naive=False,
        runs=[figures],
        capacity=1,
        stop_reason="every step held",
        launch=launch,
        caption_source="native ends",
    )
    peer = msgspec.structs.replace(search, label="other", caption_source="", launch=None)
    report = LoadReport(
        kind="load",
        created="now",
        machine={"cpu": "Some CPU (2 CPUs; avx2 fma)"},
        options={"max_caption_delay": "1.5"},
        searches=[search, peer],
    )
    text = load_markdown(report)
    assert "- machine: Some CPU (2 CPUs; avx2 fma)" in text
    assert "`uv run chorus serve --model tiny.en --cpu-threads 2`" in text
    assert "`CHORUS_MAX_SESSIONS_PER_CLIENT=100000`" in text
    assert "threads: 2 (--cpu-threads)" in text
    assert "caption delay from native ends" in text
    assert "caption delay not measured" in text  # the search without a caption source
    assert "| 0.55 | 1.36 | 1.50 | 1.36 / 1.36 |" in text  # caption p50, p95, max, sessions
    data = json.loads(write_json(report, tmp_path / "report.json").read_text())
    run = data["searches"][0]["runs"][0]
    assert run["caption_delay_s"]["p95"] == pytest.approx(1.36)
    assert run["caption_delay_sessions"]["median_p95_s"] == pytest.approx(1.36)
    assert run["together"]["scored"] is True
    assert data["searches"][0]["launch"]["threads"] == "2 (--cpu-threads)"
