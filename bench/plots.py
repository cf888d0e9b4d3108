"""PNG plots of a load report (matplotlib's object API through Agg, no pyplot global state).

Plain functions that write files named from the report's stem and return their paths; nothing
here runs a benchmark. One colour per server, one line style per percentile; the x axis is the
client count N on a log scale, one point per run, in order of N (a refinement step included).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from matplotlib.axes import Axes
from matplotlib.figure import Figure

from bench.schema import LoadReport, RunFigures

STYLES = (("p50", ":"), ("p95", "-"), ("max", "--"))


def plot_load(
    report: LoadReport,
    stem: Path,
    *,
    max_p95_final_s: float = 2.0,
    max_p95_caption_s: float = 1.5,
) -> list[Path]:
    """`<stem>-latency.png` (final latency, caption delay and server CPU against N) and
    `<stem>-wer.png` (WER against N)."""
    latency_path = stem.with_name(stem.name + "-latency.png")
    wer_path = stem.with_name(stem.name + "-wer.png")
    counts = sorted({run.clients for search in report.searches for run in search.runs})
    figure = Figure(figsize=(16, 4))
    final_axes, caption_axes, cpu_axes = figure.subplots(1, 3)
    for index, search in enumerate(report.searches):
        colour = f"C{index}"
        runs = _ordered(search.runs)
        clients = [run.clients for run in runs]
        for name, style in (("p50", ":"), ("p95", "-"), ("p99", "--")):
            values = [_nan(getattr(run.final_latency_s, name)) for run in runs]
            label = f"{search.label} {name}"
            final_axes.plot(clients, values, style, color=colour, marker="o", label=label)
        for name, style in STYLES:
            values = [_nan(getattr(run.caption_delay_s, name)) for run in runs]
            label = f"{search.label} {name}"
            caption_axes.plot(clients, values, style, color=colour, marker="o", label=label)
        worst = [_nan(_worst_session(run)) for run in runs]
        label = f"{search.label} worst session's p95"
        caption_axes.plot(clients, worst, "-.", color=colour, marker="x", label=label)
        cores = [_nan(run.server.cpu_cores if run.server else None) for run in runs]
        cpu_axes.plot(clients, cores, color=colour, marker="o", label=search.label)
    final_axes.axhline(max_p95_final_s, color="grey", linewidth=0.8, label="p95 limit")
    caption_axes.axhline(max_p95_caption_s, color="grey", linewidth=0.8, label="p95 limit")
    _axes(final_axes, "final latency (s)", "Final latency", counts)
    _axes(caption_axes, "caption delay (s)", "Caption delay", counts)
    _axes(cpu_axes, "server CPU (cores)", "Server CPU", counts)
    figure.tight_layout()
    figure.savefig(latency_path, dpi=100)

    figure = Figure(figsize=(6, 4))
    axes = figure.subplots()
    for index, search in enumerate(report.searches):
        runs = _ordered(search.runs)
        wer = [_nan(run.wer) * 100 for run in runs]
        clients = [run.clients for run in runs]
        axes.plot(clients, wer, color=f"C{index}", marker="o", label=search.label)
    _axes(axes, "WER (%)", "Word error rate of the finals", counts)
    figure.tight_layout()
    figure.savefig(wer_path, dpi=100)
    return [latency_path, wer_path]


def _ordered(runs: Sequence[RunFigures]) -> list[RunFigures]:
    return sorted(runs, key=lambda run: run.clients)


def _worst_session(run: RunFigures) -> float | None:
    spread = run.caption_delay_sessions
    return spread.worst_p95_s if spread is not None else None


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
