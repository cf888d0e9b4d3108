"""Writing results: one JSON file per invocation, a Markdown table, PNG plots (`bench.plots`).

Plain functions that write files and return their paths; nothing here runs a benchmark.
"""

from __future__ import annotations

import os
import platform
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path

import msgspec

from bench.plots import plot_load
from bench.schema import CapacitySearch, LoadReport, OfflineReport, Reference, RunFigures

DEFAULT_RESULTS = Path(__file__).resolve().parent / "results"


def machine() -> dict[str, str]:
    return {
        "platform": platform.platform(),
        "python": platform.python_version(),
        "cpus": str(os.cpu_count()),
        "processor": platform.processor() or platform.machine(),
    }


def cpu_model() -> str:
    """The CPU's model name and SIMD flags from /proc/cpuinfo (speed claims name the machine)."""
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return "unknown CPU"
    model = next(
        (
            line.split(":", 1)[1].strip()
            for line in text.splitlines()
            if line.startswith("model name")
        ),
        "unknown CPU",
    )
    flags = next(
        (line.split(":", 1)[1].split() for line in text.splitlines() if line.startswith("flags")),
        [],
    )
    simd = [flag for flag in flags if flag.startswith(("avx", "fma", "f16c", "sse4", "amx"))]
    return f"{model} ({os.cpu_count()} CPUs; {' '.join(simd)})"


def now_stamp() -> tuple[str, str]:
    """(ISO time, file-name stamp) for a new report."""
    moment = datetime.now(UTC)
    return moment.isoformat(timespec="seconds"), moment.strftime("%Y%m%d-%H%M%S")


def write_json(report: LoadReport | OfflineReport, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(msgspec.json.format(msgspec.json.encode(report), indent=2) + b"\n")
    return path


def _number(value: float | None, digits: int = 2) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def _percent(value: float | None) -> str:
    return "-" if value is None else f"{100 * value:.1f}%"


LOAD_COLUMNS = (
    "server | N | started | done | refused | failed | final p50 | p95 | p99 | end-of-speech p95"
    " | 1st partial p50 | first text p95 | caption p50 | caption p95 | caption max"
    " | session caption p95 worst / median | partials/s | WER | CPU cores | peak RSS MB"
    " | max lag | text lag p50 | text lag max | mean batch | drafts' model time | together s"
    " | verdict"
)


def _load_row(run: RunFigures) -> str:
    sessions, latency = run.sessions, run.final_latency_s
    spread, caption = run.caption_delay_sessions, run.caption_delay_s
    worst = _number(spread.worst_p95_s if spread else None)
    median = _number(spread.median_p95_s if spread else None)
    cells = [
        run.label,
        f"{run.clients} (refinement)" if run.refinement else str(run.clients),
        str(sessions.started),
        str(sessions.completed),
        str(sessions.refused),
        str(sessions.failed),
        _number(latency.p50),
        _number(latency.p95),
        _number(latency.p99),
        _number(run.end_of_speech_latency_s.p95),
        _number(run.first_partial_s.p50),
        _number(run.first_text_s.p95),
        _number(caption.p50),
        _number(caption.p95),
        _number(caption.max),
        f"{worst} / {median}",
        _number(run.partials_per_speech_s),
        _percent(run.wer),
        _number(run.server.cpu_cores if run.server else None),
        _number(run.server.peak_rss_mb if run.server else None, 0),
        _number(run.max_lag_s),
        _number(run.text_lag_s.p50),
        _number(run.text_lag_s.max),
        _number(run.transcriber.mean_batch if run.transcriber else None),
        _percent(run.transcriber.drafts_share if run.transcriber else None),
        _together(run),
        run.verdict,
    ]
    return "| " + " | ".join(cells) + " |"


def load_markdown(report: LoadReport) -> str:
    lines = [
        f"# Load benchmark, {report.created}",
        "",
        "Latencies in seconds (wall clock). "
        + ", ".join(f"{k}: {v}" for k, v in report.options.items()),
        "",
        "| " + LOAD_COLUMNS + " |",
        "|" + "---|" * len(LOAD_COLUMNS.split("|")),
    ]
    lines += [_load_row(run) for search in report.searches for run in search.runs]
    lines.append("")
    if cpu := report.machine.get("cpu"):
        lines.append(f"- machine: {cpu}")
    for search in report.searches:
        what = f" [{search.server}]" if search.server else ""
        lines.append(
            f"- **{search.label}**{what}: capacity {search.capacity} clients ({search.stop_reason})"
        )
        lines += [f"  - {line}" for line in _search_lines(search)]
    lines.append(
        "- held: no session refused or failed, and p95 final latency, first-text delay and "
        "caption delay within the limits in the options (`max_p95`, `max_first_text`, "
        "`max_caption_delay`); latencies are scored while all N sessions were live together "
        "(`together s`: from the last session's first chunk to the first session's last, "
        '"(all)" where the whole run was scored), WER, partials/s and CPU over the whole run'
    )
    if (reference := report.reference) is not None:
        lines.append(
            f"- reference: {reference.method}: {reference.audio_s_per_wall_s:.2f} audio s per "
            f"wall s ({reference.files} files, {reference.audio_s:.0f} s{_passes(reference)})"
        )
    for row in report.efficiency:
        fraction = _number(row.speech_fraction)
        lines.append(
            f"- **E** ({row.label}) = {row.capacity} sessions × {fraction} mean speech fraction "
            f"÷ reference = {_number(row.efficiency)}"
        )
    comparisons = [report.comparison] if report.comparison is not None else []
    for comparison in [*comparisons, *report.peer_comparisons]:
        fallback = report.searches[1].label if len(report.searches) > 1 else "baseline"
        other = comparison.label or fallback
        ratio = _number(comparison.capacity_ratio)
        lines.append(f"- capacity, chorus / {other}: {ratio}")
        for clients, value in comparison.p95_final_latency_ratio.items():
            lines.append(f"- p95 final latency at N={clients}, {other} / chorus: {value:.2f}")
        for clients, value in comparison.cpu_ratio.items():
            lines.append(f"- server CPU at N={clients}, {other} / chorus: {value:.2f}")
    if any(search.peer for search in report.searches):
        lines.append(
            "- a peer's final latency is its commit latency: the arrival of the first message "
            "holding a segment as completed, minus the send of the chunk holding its end; its "
            "partials are the segment in progress; WER counts completed segments only"
        )
    return "\n".join(lines) + "\n"


def _together(run: RunFigures) -> str:
    if run.together is None:
        return "-"
    seconds = f"{max(run.together.seconds, 0.0):.0f}"
    return seconds if run.together.scored else f"{seconds} (all)"


def _search_lines(search: CapacitySearch) -> list[str]:
    """What a search's server was given, its warm-up, its refinement, its caption source."""
    lines = []
    if (launch := search.launch) is not None:
        command = " ".join(launch.command) or "unknown"
        environment = ", ".join(f"`{k}={v}`" for k, v in launch.environment.items()) or "none"
        workers = f"; {launch.workers} model workers" if launch.workers else ""
        lines.append(
            f"server ({launch.how}): `{command}`; environment: {environment}; "
            f"threads: {launch.threads}{workers}"
        )
    if (warm := search.warm_up) is not None:
        sessions = warm.sessions
        lines.append(
            f"warm-up (not scored): {warm.clients} sessions of {warm.audio_s:.0f} s, "
            f"{sessions.completed} completed, {sessions.refused} refused, "
            f"{sessions.failed} failed"
        )
    if search.refined is not None:
        refined = [run for run in search.runs if run.refinement]
        verdict = refined[0].verdict if refined else "not run"
        lines.append(f"refinement: N={search.refined}: {verdict}")
    if search.caption_source:
        lines.append(f"caption delay from {search.caption_source}")
    else:
        lines.append("caption delay not measured: its protocol gives no audio end for its text")
    return lines


def offline_markdown(report: OfflineReport) -> str:
    lines = [
        f"# Offline throughput, {report.created}",
        "",
        ", ".join(f"{k}: {v}" for k, v in report.options.items()),
        "",
        "| method | files | audio s | wall s | audio s per wall s | WER | note |",
        "|---|---|---|---|---|---|---|",
    ]
    for method in report.methods:
        cells = [
            method.method,
            str(method.files),
            _number(method.audio_s, 1),
            _number(method.wall_s, 1),
            _number(method.audio_s_per_wall_s, 1) if method.available else "not available",
            _percent(method.wer),
            method.note,
        ]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def write_text(text: str, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    return path


def write_pair(stem: Path, markdown: str, payload: object) -> None:
    """`stem`.md with `markdown` and `stem`.json with `payload` (msgspec-encoded)."""
    write_text(markdown, stem.with_suffix(".md"))
    stem.with_suffix(".json").write_bytes(msgspec.json.encode(payload))
    print(f"wrote {stem}.md and .json")


def write_load(report: LoadReport, stem: Path) -> Sequence[Path]:
    """JSON, Markdown and PNG files for a load report, all named from `stem`."""
    written = [
        write_json(report, stem.with_suffix(".json")),
        write_text(load_markdown(report), stem.with_suffix(".md")),
    ]
    if any(search.runs for search in report.searches):
        written += plot_load(
            report,
            stem,
            max_p95_final_s=_limit(report, "max_p95", 2.0),
            max_p95_caption_s=_limit(report, "max_caption_delay", 1.5),
        )
    return written


def write_offline(report: OfflineReport, stem: Path) -> Sequence[Path]:
    return [
        write_json(report, stem.with_suffix(".json")),
        write_text(offline_markdown(report), stem.with_suffix(".md")),
    ]


def _limit(report: LoadReport, option: str, default: float) -> float:
    try:
        return float(report.options.get(option, default))
    except ValueError:
        return default


def _passes(reference: Reference) -> str:
    """ "; the median of 3 passes: a, b, c" when the reference took more than one."""
    if len(reference.passes) < 2:
        return ""
    rates = ", ".join(f"{rate:.2f}" for rate in reference.passes)
    return f"; the median of {len(reference.passes)} passes: {rates}"
