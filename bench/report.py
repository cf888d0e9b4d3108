"""Writing results: one JSON file per invocation, a Markdown table, PNG plots (matplotlib).

Plain functions that write files and return their paths; nothing here runs a benchmark.
"""

from __future__ import annotations

import os
import platform
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path

import attrs
import msgspec
from matplotlib.axes import Axes
from matplotlib.figure import Figure  # no pyplot: no global state; PNG goes through Agg

from bench.client import SessionRecord
from bench.schema import LoadReport, OfflineReport, Reference, RunFigures

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
    simd = [flag for flag in flags if flag.startswith(("avx", "fma", "sse4"))]
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
    " | 1st partial p50 | first text p95 | partials/s | WER | CPU cores | peak RSS MB | max lag"
    " | text lag p50 | text lag max | mean batch"
    " | verdict"
)


def _load_row(run: RunFigures) -> str:
    sessions, latency = run.sessions, run.final_latency_s
    cells = [
        run.label,
        str(run.clients),
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
        _number(run.partials_per_speech_s),
        _percent(run.wer),
        _number(run.server.cpu_cores if run.server else None),
        _number(run.server.peak_rss_mb if run.server else None, 0),
        _number(run.max_lag_s),
        _number(run.text_lag_s.p50),
        _number(run.text_lag_s.max),
        _number(run.transcriber.mean_batch if run.transcriber else None),
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
    for search in report.searches:
        what = f" [{search.server}]" if search.server else ""
        lines.append(
            f"- **{search.label}**{what}: capacity {search.capacity} clients ({search.stop_reason})"
        )
    if (reference := report.reference) is not None:
        lines.append(
            f"- reference: {reference.method}: {reference.audio_s_per_wall_s:.2f} audio s per "
            f"wall s ({reference.files} files, {reference.audio_s:.0f} s{_passes(reference)})"
        )
    for row in report.efficiency:
        fraction = _number(row.speech_fraction)
        lines.append(
            f"- **E** ({row.label}) = {row.capacity} sessions × {fraction} speech ÷ reference "
            f"= {_number(row.efficiency)}"
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


def plot_load(report: LoadReport, stem: Path) -> list[Path]:
    """`<stem>-latency.png` (final latency percentiles and server CPU against N) and
    `<stem>-wer.png` (WER against N); one colour per server, one line style per percentile."""
    latency_path = stem.with_name(stem.name + "-latency.png")
    wer_path = stem.with_name(stem.name + "-wer.png")
    counts = sorted({run.clients for search in report.searches for run in search.runs})
    figure = Figure(figsize=(11, 4))
    left, right = figure.subplots(1, 2)
    for index, search in enumerate(report.searches):
        colour = f"C{index}"
        clients = [run.clients for run in search.runs]
        for name, style in (("p50", ":"), ("p95", "-"), ("p99", "--")):
            values = [_nan(getattr(run.final_latency_s, name)) for run in search.runs]
            label = f"{search.label} {name}"
            left.plot(clients, values, style, color=colour, marker="o", label=label)
        cores = [_nan(run.server.cpu_cores if run.server else None) for run in search.runs]
        right.plot(clients, cores, color=colour, marker="o", label=search.label)
    left.axhline(2.0, color="grey", linewidth=0.8, label="p95 limit")
    _axes(left, "final latency (s)", "Final latency", counts)
    _axes(right, "server CPU (cores)", "Server CPU", counts)
    figure.tight_layout()
    figure.savefig(latency_path, dpi=100)

    figure = Figure(figsize=(6, 4))
    axes = figure.subplots()
    for index, search in enumerate(report.searches):
        clients = [run.clients for run in search.runs]
        wer = [_nan(run.wer) * 100 for run in search.runs]
        axes.plot(clients, wer, color=f"C{index}", marker="o", label=search.label)
    _axes(axes, "WER (%)", "Word error rate of the finals", counts)
    figure.tight_layout()
    figure.savefig(wer_path, dpi=100)
    return [latency_path, wer_path]


def _nan(value: float | None) -> float:
    return float("nan") if value is None else value


def _axes(axes: Axes, ylabel: str, title: str, counts: Sequence[int]) -> None:
    axes.set_xscale("log", base=2)
    axes.set_xticks(list(counts), [str(count) for count in counts])
    axes.minorticks_off()
    axes.set_ylim(bottom=0)
    axes.set_xlabel("concurrent clients (N)")
    axes.set_ylabel(ylabel)
    axes.set_title(title)
    axes.grid(True, alpha=0.3)
    axes.legend(fontsize="small")


def write_trace(records: Sequence[SessionRecord], begin: float, path: Path) -> Path:
    """Everything the clients saw, one JSON line per session, times in seconds from `begin`:
    the reference spans, each chunk's (audio end, sent at), each frame's (arrived at, frame)."""
    lines = []
    for record in records:
        session = {
            "client": record.client,
            "outcome": record.outcome,
            "reason": record.reason,
            "close_code": record.close_code,
            "spans": [attrs.asdict(span) for span in record.conversation.spans],
            "sends": [
                (end, at - begin) for end, at in zip(record.audio_ends, record.sent_at, strict=True)
            ],
            "frames": [(arrival.at - begin, arrival.frame) for arrival in record.arrivals],
        }
        lines.append(msgspec.json.encode(session))
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"\n".join(lines) + b"\n")
    return path


def write_load(report: LoadReport, stem: Path) -> Sequence[Path]:
    """JSON, Markdown and PNG files for a load report, all named from `stem`."""
    written = [
        write_json(report, stem.with_suffix(".json")),
        write_text(load_markdown(report), stem.with_suffix(".md")),
    ]
    if any(search.runs for search in report.searches):
        written += plot_load(report, stem)
    return written


def write_offline(report: OfflineReport, stem: Path) -> Sequence[Path]:
    return [
        write_json(report, stem.with_suffix(".json")),
        write_text(offline_markdown(report), stem.with_suffix(".md")),
    ]


def _passes(reference: Reference) -> str:
    """ "; the median of 3 passes: a, b, c" when the reference took more than one."""
    if len(reference.passes) < 2:
        return ""
    rates = ", ".join(f"{rate:.2f}" for rate in reference.passes)
    return f"; the median of {len(reference.passes)} passes: {rates}"
