"""`python -m bench.load`: capacity of one machine, Chorus against the naive server.

Without `--url` the bench starts each server itself (`uv run chorus serve --model M`, then the
same with `--naive`), one after the other, each inside `open_server()` so it is stopped however
the search ends. With `--url` it drives a server that is already running (and `--naive-url`, a
naive one). The report (JSON, Markdown, PNG) is rewritten after every run, so an interrupted
invocation still leaves what it measured.
"""

from __future__ import annotations

import argparse
import shlex
from collections.abc import Sequence
from pathlib import Path

import attrs
import trio

from bench.audio import Clip, load_files, load_set, speech_dir
from bench.client import StreamOptions
from bench.conversation import Conversation, build_conversations
from bench.report import DEFAULT_RESULTS, machine, now_stamp, write_load
from bench.run import Criteria, RunPlan, search_capacity
from bench.schema import CapacitySearch, Comparison, LoadReport, RunFigures
from bench.server import ServerHandle, open_server, require_loopback, require_process


@attrs.frozen
class LoadSettings:
    """The command line, typed."""

    url: str | None
    server_pid: int | None
    naive_url: str | None
    naive_pid: int | None
    model: str
    server_cmd: str
    server_args: str
    no_naive: bool
    clients: str
    no_stop: bool
    seconds: float
    pause: float
    speed: float
    stagger: float
    chunk_ms: int
    drain_s: float
    clip_set: Path | None
    audio: list[Path] | None
    max_clip_s: float
    distinct: bool
    language: str
    max_p95: float
    wer_margin: float
    out: Path
    trace: bool

    @property
    def steps(self) -> list[int]:
        return [int(step) for step in self.clients.split(",")]


def parse_arguments(argv: Sequence[str] | None = None) -> LoadSettings:
    parser = argparse.ArgumentParser(prog="python -m bench.load", description=__doc__)
    target = parser.add_argument_group("server")
    target.add_argument("--url", help="drive a running server (http://127.0.0.1:PORT)")
    target.add_argument("--server-pid", type=int, help="its pid, to sample CPU and memory")
    target.add_argument("--naive-url", help="a running naive server to compare with")
    target.add_argument("--naive-pid", type=int)
    target.add_argument("--model", default="tiny.en")
    target.add_argument("--server-cmd", default="uv run chorus serve")
    target.add_argument("--server-args", default="", help="more flags for both servers")
    target.add_argument("--no-naive", action="store_true", help="skip the naive baseline")
    load = parser.add_argument_group("load")
    load.add_argument("--clients", default="1,2,4,8", help="client counts, ascending")
    load.add_argument("--no-stop", action="store_true", help="run every step even after a failure")
    load.add_argument("--seconds", type=float, default=30.0, help="audio per conversation")
    load.add_argument("--pause", type=float, default=1.0, help="silence between utterances (s)")
    load.add_argument("--speed", type=float, default=1.0, help="1.0 is real time")
    load.add_argument("--stagger", type=float, default=0.5, help="seconds between client starts")
    load.add_argument("--chunk-ms", type=int, default=100)
    load.add_argument("--drain-s", type=float, default=20.0, help="wait for `stopped` this long")
    load.add_argument(
        "--set",
        dest="clip_set",
        type=Path,
        help="TSV of clips (default: ../shared/speech/en_wer.tsv)",
    )
    load.add_argument("--audio", type=Path, nargs="+", help="audio files instead (no WER)")
    load.add_argument("--max-clip-s", type=float, default=20.0, help="leave longer clips out")
    load.add_argument("--distinct", action="store_true", help="each client says other clips")
    load.add_argument("--language", default="en")
    judge = parser.add_argument_group("criteria")
    judge.add_argument("--max-p95", type=float, default=2.0, help="p95 final latency limit (s)")
    judge.add_argument("--wer-margin", type=float, default=0.01, help="allowed WER increase")
    parser.add_argument("--out", type=Path, default=DEFAULT_RESULTS)
    parser.add_argument("--trace", action="store_true", help="also write every frame (JSONL)")
    return LoadSettings(**vars(parser.parse_args(argv)))


def load_clips(arguments: LoadSettings) -> list[Clip]:
    if arguments.audio:
        return load_files(arguments.audio)
    table = arguments.clip_set or speech_dir() / "en_wer.tsv"
    if not table.exists():
        raise SystemExit(f"no speech set at {table}; give --set or --audio")
    return load_set(table, max_clip_s=arguments.max_clip_s)


def compare(chorus: CapacitySearch, naive: CapacitySearch) -> Comparison:
    def by_clients(search: CapacitySearch) -> dict[int, RunFigures]:
        return {run.clients: run for run in search.runs}

    ours, theirs = by_clients(chorus), by_clients(naive)
    latency, cpu = {}, {}
    for clients in sorted(ours.keys() & theirs.keys()):
        our_p95 = ours[clients].final_latency_s.p95
        their_p95 = theirs[clients].final_latency_s.p95
        if our_p95 and their_p95:
            latency[str(clients)] = their_p95 / our_p95
        our_cpu, their_cpu = ours[clients].server, theirs[clients].server
        if our_cpu and their_cpu and our_cpu.cpu_cores > 0:
            cpu[str(clients)] = their_cpu.cpu_cores / our_cpu.cpu_cores
    ratio = chorus.capacity / naive.capacity if naive.capacity else None
    return Comparison(capacity_ratio=ratio, p95_final_latency_ratio=latency, cpu_ratio=cpu)


@attrs.define
class Invocation:
    """Everything one `bench.load` invocation measures, written out after every run."""

    arguments: LoadSettings
    clips: list[Clip]
    stem: Path
    created: str
    searches: list[CapacitySearch] = attrs.Factory(list)
    current: list[RunFigures] = attrs.Factory(list)
    current_label: str = ""

    def conversations(self, clients: int) -> list[Conversation]:
        return build_conversations(
            self.clips,
            clients,
            target_s=self.arguments.seconds,
            pause_s=self.arguments.pause,
            distinct=self.arguments.distinct,
        )

    def report(self) -> LoadReport:
        searches = list(self.searches)
        if self.current:
            partial = CapacitySearch(
                label=self.current_label,
                url="",
                naive=False,
                runs=list(self.current),
                capacity=0,
                stop_reason="in progress",
            )
            searches.append(partial)
        by_label = {search.label: search for search in searches}
        comparison = None
        if "chorus" in by_label and "naive" in by_label:
            comparison = compare(by_label["chorus"], by_label["naive"])
        options = {
            name: str(value)
            for name, value in attrs.asdict(self.arguments).items()
            if value is not None and name not in {"out"}
        }
        return LoadReport(
            kind="load",
            created=self.created,
            machine=machine(),
            options=options,
            searches=searches,
            comparison=comparison,
        )

    async def record(self, figures: RunFigures) -> None:
        self.current.append(figures)
        write_load(self.report(), self.stem)
        print(f"{figures.label} N={figures.clients}: {figures.verdict}", flush=True)

    async def search(self, label: str, server: ServerHandle, *, naive: bool) -> None:
        arguments = self.arguments
        plan = RunPlan(
            label=label,
            url=server.url,
            stream=StreamOptions(
                speed=arguments.speed,
                chunk_s=arguments.chunk_ms / 1000,
                drain_s=arguments.drain_s,
                language=arguments.language,
            ),
            stagger_s=arguments.stagger,
            server_pid=server.pid if server.pid > 0 else None,
            trace_prefix=self.stem if arguments.trace else None,
        )
        self.current, self.current_label = [], label
        criteria = Criteria(max_p95_final_s=arguments.max_p95, wer_margin=arguments.wer_margin)
        result = await search_capacity(
            plan,
            arguments.steps,
            self.conversations,
            naive=naive,
            criteria=criteria,
            on_run=self.record,
            stop_at_failure=not arguments.no_stop,
        )
        self.current = []
        self.searches.append(result)
        write_load(self.report(), self.stem)


async def run(arguments: LoadSettings) -> Path:
    created, stamp = now_stamp()
    stem = arguments.out / f"load-{stamp}"
    invocation = Invocation(arguments, load_clips(arguments), stem, created)
    command = [
        *shlex.split(arguments.server_cmd),
        "--model",
        arguments.model,
        *shlex.split(arguments.server_args),
    ]
    if arguments.url:
        require_loopback(arguments.url)
        for pid in (arguments.server_pid, arguments.naive_pid):
            if pid is not None:
                require_process(pid)
        handle = ServerHandle(url=arguments.url, pid=arguments.server_pid or 0)
        await invocation.search("chorus", handle, naive=False)
        if arguments.naive_url:
            require_loopback(arguments.naive_url)
            handle = ServerHandle(url=arguments.naive_url, pid=arguments.naive_pid or 0)
            await invocation.search("naive", handle, naive=True)
        return stem
    chorus_log = Path(f"{stem}-chorus.log")
    async with open_server(command, log_path=chorus_log) as server:
        await invocation.search("chorus", server, naive=False)
    if not arguments.no_naive:
        naive_log = Path(f"{stem}-naive.log")
        naive_command = [*command, "--naive"]
        async with open_server(naive_command, log_path=naive_log) as server:
            await invocation.search("naive", server, naive=True)
    return stem


def main(argv: Sequence[str] | None = None) -> None:
    arguments = parse_arguments(argv)
    stem = trio.run(run, arguments)
    print(f"wrote {stem}.json, {stem}.md and its PNG plots")


if __name__ == "__main__":
    main()
