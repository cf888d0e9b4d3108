"""One load run (N clients at once) and the capacity search (raise N until it no longer holds).

`run_load()` owns one nursery: the usage sampler (when the server's pid is known) and, inside
it, one task per client, each started `stagger_s` after the previous one. Every client has the
same deadline, so a run never outlasts its time limit; what a client saw up to then is kept.
`summarize()` scores latencies inside the window when all sessions were live together
(`bench.sustain`) unless the plan says otherwise. The search first streams a few unscored
warm-up sessions, then runs one load after another against the same server and stops at the
first that fails its criteria (DESIGN §8): a refused or failed session, p95 final latency, p95
first-text delay or p95 caption delay over its limit, or WER worse than the first run's by more
than `wer_margin` (with `--same-speech` only). When the last count that held and the first that
failed are more than one apart it tries one count between them (`bench.sustain`).
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path

import attrs
import msgspec
import trio

from bench.client import CHORUS_DRIVER, Driver, SessionRecord, StreamOptions
from bench.conversation import Conversation
from bench.figures import (
    batch_difference,
    count_sessions,
    distribution,
    reference_text,
    session_figures,
    session_spread,
    word_error_rate,
)
from bench.schema import (
    BatchStats,
    CapacitySearch,
    RunFigures,
    ServerUsage,
    Together,
    WarmUp,
)
from bench.server import UsageSampler, fetch_health, wait_idle
from bench.sustain import live_window, planned_together_s, refinement_step
from bench.trace import write_trace

SEND_LAG_WARNING_S = 0.5
# The server side's aim for fairness between sessions: a note in the verdict, not a criterion.
WORST_SESSION_RATIO = 2.0


@attrs.frozen
class Criteria:
    max_p95_final_s: float = 2.0
    max_p95_first_text_s: float = 1.5  # text keeps flowing while long utterances go on
    max_p95_caption_s: float = 1.5  # the captions a person watches stay this close behind
    wer_margin: float = 0.01  # one point of WER
    # WER is compared across N only when every N says the same words (`--same-speech`):
    # with distinct speech each N hears other clips, some harder than others
    compare_wer: bool = True


@attrs.frozen
class RunPlan:
    label: str
    url: str  # http://127.0.0.1:PORT
    stream: StreamOptions
    stagger_s: float = 0.5
    server_pid: int | None = None
    trace_prefix: Path | None = None  # write `<prefix>-<label>-n<N>.jsonl` per run
    slack_s: float = 10.0  # on top of stagger, audio time and drain, before clients are abandoned
    driver: Driver = CHORUS_DRIVER  # the protocol the server speaks (`bench.peer` for WhisperLive)
    settle_s: float = 1.0  # pause after a run of a server without `/health`
    # score latencies only while every session was live (`--score together`); False: all of it
    score_together: bool = True

    def time_limit_s(self, conversations: Sequence[Conversation]) -> float:
        longest = max(conversation.duration for conversation in conversations)
        return (
            self.stagger_s * (len(conversations) - 1)
            + longest / self.stream.speed
            + self.stream.connect_timeout_s
            + self.stream.drain_s
            + self.slack_s
        )


def session_url(driver: Driver, base: str, stream: StreamOptions) -> str:
    """The WebSocket URL each client opens; `interim=False` asks Chorus for finals only."""
    url = driver.ws_url(base, stream.language)
    if not stream.interim and driver.name == "chorus":
        url += "&interim=false"
    return url


async def run_load(plan: RunPlan, conversations: Sequence[Conversation]) -> RunFigures:
    """Stream one conversation per client, all at once, and reduce what they saw to figures."""
    health = plan.driver.has_health
    if health:
        await wait_idle(plan.url)
    before = await fetch_health(plan.url) if health else None
    ws_url = session_url(plan.driver, plan.url, plan.stream)
    records: list[SessionRecord] = []
    sampler = UsageSampler(plan.server_pid) if plan.server_pid is not None else None
    begin, cpu_begin = trio.current_time(), time.process_time()
    deadline = begin + plan.time_limit_s(conversations)

    async def client(index: int, conversation: Conversation) -> None:
        await trio.sleep_until(begin + index * plan.stagger_s)
        record = await plan.driver.stream(
            ws_url, conversation, plan.stream, client=index, deadline=deadline
        )
        records.append(record)

    async with trio.open_nursery() as nursery:
        if sampler is not None:
            await nursery.start(sampler.run)
        async with trio.open_nursery() as clients:
            for index, conversation in enumerate(conversations):
                clients.start_soon(client, index, conversation)
        usage = sampler.usage() if sampler is not None else None
        nursery.cancel_scope.cancel()
    wall_s = trio.current_time() - begin
    bench_cpu = (time.process_time() - cpu_begin) / wall_s
    if health:
        await wait_idle(plan.url)
    else:
        await trio.sleep(plan.settle_s)  # no `/health` to ask whether its sessions are gone
    after = await fetch_health(plan.url) if health else None
    records.sort(key=lambda record: record.client)
    if plan.trace_prefix is not None:
        name = f"{plan.trace_prefix.name}-{plan.label}-n{len(records)}.jsonl"
        write_trace(records, begin, plan.trace_prefix.with_name(name))
    return summarize(
        plan,
        records,
        wall_s=wall_s,
        usage=usage,
        batches=batch_difference(before, after),
        bench_cpu_cores=bench_cpu,
    )


def summarize(
    plan: RunPlan,
    records: Sequence[SessionRecord],
    *,
    wall_s: float,
    usage: ServerUsage | None = None,
    batches: BatchStats | None = None,
    bench_cpu_cores: float = 0.0,
) -> RunFigures:
    window = live_window(records)
    scored = plan.score_together and window is not None and window.seconds > 0
    per_session = [session_figures(record, window if scored else None) for record in records]
    pairs = []
    for record, figures in zip(records, per_session, strict=True):
        reference = reference_text(record)
        if record.outcome == "completed" and reference is not None:
            pairs.append((reference, figures.hypothesis))
    error_rate = word_error_rate(pairs, language=plan.stream.language)
    speech_s = sum(figures.speech_s for figures in per_session)
    partials = sum(figures.partials for figures in per_session)
    lags = [figures.max_lag_s for figures in per_session if figures.max_lag_s is not None]
    text_lags = [lag for figures in per_session for lag in figures.text_lags]
    conversations = [record.conversation for record in records]
    fractions = [c.speech_s / c.duration for c in conversations if c.duration > 0]
    first_chunk = min((record.sent_at[0] for record in records if record.sent_at), default=0.0)
    planned = planned_together_s(
        [c.duration for c in conversations], stagger_s=plan.stagger_s, speed=plan.stream.speed
    )
    return RunFigures(
        label=plan.label,
        clients=len(records),
        speed=plan.stream.speed,
        wall_s=wall_s,
        audio_s=max((record.conversation.duration for record in records), default=0.0),
        speech_s=speech_s,
        sessions=count_sessions(records),
        failures=[
            f"client {record.client} {record.outcome}: {record.reason}"
            for record in records
            if record.outcome != "completed"
        ],
        notes=[
            f"client {record.client}: {record.reason}"
            for record in records
            if record.outcome == "completed" and record.reason
        ],
        finals=sum(figures.finals for figures in per_session),
        final_latency_s=distribution([v for f in per_session for v in f.final_latencies]),
        end_of_speech_latency_s=distribution(
            [v for f in per_session for v in f.end_of_speech_latencies]
        ),
        first_partial_s=distribution([v for f in per_session for v in f.first_partial_latencies]),
        first_text_s=distribution([v for f in per_session for v in f.first_text_latencies]),
        partials_per_speech_s=partials / speech_s if speech_s > 0 else None,
        unmatched_finals=sum(figures.unmatched_finals for figures in per_session),
        wer=error_rate.wer,
        reference_words=error_rate.reference_words,
        max_lag_s=max(lags) if lags else None,
        text_lag_s=distribution(text_lags),
        max_send_lag_s=max((record.send_lag_s for record in records), default=0.0),
        bench_cpu_cores=bench_cpu_cores,
        server=usage,
        transcriber=batches,
        caption_delay_s=distribution([v for f in per_session for v in f.caption_delays]),
        caption_delay_sessions=session_spread([f.caption_delays for f in per_session]),
        speech_fraction=sum(fractions) / len(fractions) if fractions else None,
        together=Together(
            planned_s=planned,
            seconds=window.seconds if window is not None else 0.0,
            start_s=window.start - first_chunk if window is not None else None,
            end_s=window.end - first_chunk if window is not None else None,
            scored=scored,
        ),
    )


def judge(figures: RunFigures, criteria: Criteria, baseline_wer: float | None) -> RunFigures:
    """The same figures with `held` and `verdict` filled in."""
    reasons = []
    if figures.sessions.refused:
        reasons.append(f"{figures.sessions.refused} refused")
    if figures.sessions.failed:
        reasons.append(f"{figures.sessions.failed} failed")
    p95 = figures.final_latency_s.p95
    if p95 is None:
        reasons.append("no finals")
    elif p95 > criteria.max_p95_final_s:
        reasons.append(f"p95 final latency {p95:.2f} s > {criteria.max_p95_final_s:g} s")
    first_text = figures.first_text_s.p95
    if first_text is not None and first_text > criteria.max_p95_first_text_s:
        reasons.append(f"p95 first text {first_text:.2f} s > {criteria.max_p95_first_text_s:g} s")
    caption = figures.caption_delay_s.p95
    if caption is not None and caption > criteria.max_p95_caption_s:
        reasons.append(f"p95 caption delay {caption:.2f} s > {criteria.max_p95_caption_s:g} s")
    if (
        criteria.compare_wer
        and baseline_wer is not None
        and figures.wer is not None
        and figures.wer > baseline_wer + criteria.wer_margin
    ):
        reasons.append(f"WER {figures.wer:.3f} > {baseline_wer:.3f} + {criteria.wer_margin:g}")
    notes = []
    if figures.max_send_lag_s > SEND_LAG_WARNING_S:
        notes.append(f"bench sent audio up to {figures.max_send_lag_s:.2f} s late")
    if figures.notes:
        notes.append(f"{len(figures.notes)} completed with a note, first: {figures.notes[0]}")
    spread = figures.caption_delay_sessions
    if spread is not None and spread.worst_p95_s is not None and spread.median_p95_s:
        ratio = spread.worst_p95_s / spread.median_p95_s
        if ratio > WORST_SESSION_RATIO:
            notes.append(
                f"worst session's caption p95 {spread.worst_p95_s:.2f} s, "
                f"{ratio:.1f}x the median session's"
            )
    together = figures.together
    if together is not None and figures.clients > 1 and together.seconds <= 0:
        notes.append("the sessions were never all live together: scored over the whole run")
    verdict = "; ".join(reasons) if reasons else "held"
    if notes:
        verdict += " (" + "; ".join(notes) + ")"
    return msgspec.structs.replace(figures, held=not reasons, verdict=verdict)


async def search_capacity(
    plan: RunPlan,
    steps: Sequence[int],
    make_conversations: Callable[[int], Sequence[Conversation]],
    *,
    naive: bool,
    criteria: Criteria = Criteria(),
    on_run: Callable[[RunFigures], Awaitable[None]] | None = None,
    stop_at_failure: bool = True,
    warm_up: Sequence[Conversation] = (),
    refine: bool = True,
) -> CapacitySearch:
    """Stream `warm_up` (unscored), then run each client count in `steps` (ascending) until one
    does not hold, then (with `refine`) one count between the last that held and the first that
    failed. The capacity is the largest count held below the smallest that failed."""
    warmed = await warm_up_server(plan, warm_up) if warm_up else None
    runs: list[RunFigures] = []
    baseline_wer: float | None = None

    async def step(clients: int, *, refinement: bool = False) -> RunFigures:
        nonlocal baseline_wer
        figures = await run_load(plan, make_conversations(clients))
        figures = judge(figures, criteria, baseline_wer)
        figures = msgspec.structs.replace(figures, refinement=refinement)
        if baseline_wer is None:
            baseline_wer = figures.wer
        runs.append(figures)
        if on_run is not None:
            await on_run(figures)
        return figures

    for clients in steps:
        figures = await step(clients)
        if not figures.held and stop_at_failure:
            break
    refined = None
    if refine:
        capacity, failed = _outcome(runs)
        refined = refinement_step(capacity, failed.clients if failed else None)
        if refined is not None:
            await step(refined, refinement=True)
    capacity, failed = _outcome(runs)
    return CapacitySearch(
        label=plan.label,
        url=plan.url,
        naive=naive,
        runs=sorted(runs, key=lambda run: run.clients),
        capacity=capacity,
        stop_reason=f"{failed.clients} clients: {failed.verdict}" if failed else "every step held",
        warm_up=warmed,
        refined=refined,
        caption_source=plan.driver.caption_source,
    )


def _outcome(runs: Sequence[RunFigures]) -> tuple[int, RunFigures | None]:
    """The capacity (the largest count held below the smallest that failed) and that failure."""
    failures = [run for run in runs if not run.held]
    failed = min(failures, key=lambda run: run.clients) if failures else None
    limit = failed.clients if failed is not None else None
    held = [run.clients for run in runs if run.held and (limit is None or run.clients < limit)]
    return max(held, default=0), failed


async def warm_up_server(plan: RunPlan, conversations: Sequence[Conversation]) -> WarmUp:
    """Stream `conversations` at once, unscored and untraced: the server's admission meter has
    then measured the model before the first count is judged."""
    quiet = attrs.evolve(plan, trace_prefix=None)
    figures = await run_load(quiet, conversations)
    return WarmUp(
        clients=len(conversations),
        audio_s=max((conversation.duration for conversation in conversations), default=0.0),
        sessions=figures.sessions,
        wall_s=figures.wall_s,
    )
