"""`python -m bench.load`: capacity of one machine, Chorus against a baseline, in one run.

First it measures the reference: offline faster-whisper `WhisperModel.transcribe` (beam 5, the
server's threads) on the same clips, so that capacity efficiency E comes from this invocation.
Without `--url` the bench then starts each server itself (`uv run chorus serve --model M`, then
the baseline: the same with `--naive`, or with `--baseline-ref REF` an earlier commit built in a
temporary worktree), one after the other, each inside `open_server()` so it is stopped however
the search ends. With `--url` it drives a server that is already running (and `--naive-url`, a
naive one). Every client says other clips unless `--same-speech`. With `--peer whisperlive`
it then starts WhisperLive from `.peer-venv` (`python -m bench.peer --setup`) on the same model
directory and threads, and drives it with its own protocol through the same search (or drives
`--peer-url`). The report (JSON, Markdown, PNG) is rewritten after every run, so an interrupted
invocation still leaves what it measured.
"""

from __future__ import annotations

import argparse
import json
import shlex
from collections.abc import Sequence
from functools import partial
from pathlib import Path

import attrs
import msgspec
import trio

from bench.audio import Clip, load_files, load_set, speech_dir
from bench.client import CHORUS_DRIVER, Driver, StreamOptions
from bench.conversation import Conversation, build_conversations
from bench.peer import (
    DEFAULT_VENV,
    PEERS,
    answers_tcp,
    check_environment,
    peer_environment,
    peer_server_command,
    warm_up,
    whisperlive_driver,
)
from bench.reference import baseline_server_command, baseline_worktree, offline_throughput
from bench.report import DEFAULT_RESULTS, machine, now_stamp, write_load
from bench.run import Criteria, RunPlan, search_capacity
from bench.schema import (
    CapacitySearch,
    Comparison,
    Efficiency,
    LoadReport,
    Reference,
    RunFigures,
)
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
    same_speech: bool
    language: str
    no_interim: bool
    max_p95: float
    max_first_text: float
    wer_margin: float
    baseline_ref: str | None
    no_reference: bool
    reference_passes: int
    cpu_threads: int
    peer: str | None
    peer_url: str | None
    peer_pid: int | None
    peer_venv: Path
    peer_args: str
    peer_config: str
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
    target.add_argument(
        "--baseline-ref",
        help="compare with this git commit of Chorus (built in a temporary worktree) "
        "instead of the naive server",
    )
    target.add_argument(
        "--no-reference", action="store_true", help="skip offline faster-whisper (no E)"
    )
    target.add_argument(
        "--reference-passes",
        type=int,
        default=3,
        help="passes of offline faster-whisper over its files; E uses the median pass",
    )
    target.add_argument(
        "--cpu-threads", type=int, default=2, help="threads for the reference (the server's)"
    )
    peer = parser.add_argument_group("peer (another project's server, same run)")
    peer.add_argument(
        "--peer",
        choices=PEERS,
        help="also measure this server with its own protocol: WhisperLive in batch-inference "
        "mode, same model directory and threads (python -m bench.peer --setup first)",
    )
    peer.add_argument("--peer-url", help="drive a running WhisperLive instead (ws://127.0.0.1:P)")
    peer.add_argument("--peer-pid", type=int, help="its pid, to sample CPU and memory")
    peer.add_argument("--peer-venv", type=Path, default=DEFAULT_VENV, help="its environment")
    peer.add_argument(
        "--peer-args",
        default="",
        help="more flags for bench/whisperlive_server.py, e.g. '--no-batch', "
        "'--batch-max-size 8', '--option batch_beam_size=5'",
    )
    peer.add_argument(
        "--peer-config",
        default="{}",
        help="JSON merged into WhisperLive's options message, e.g. "
        "'{\"same_output_threshold\": 5}'",
    )
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
    load.add_argument(
        "--same-speech",
        action="store_true",
        help="every client streams the same conversation (default: each says other clips)",
    )
    load.add_argument("--language", default="en")
    load.add_argument(
        "--no-interim",
        action="store_true",
        help="Chorus clients ask for finals only (interim=false): what the model holds without "
        "partials, the ceiling partials can only lower (pair with a large --max-first-text)",
    )
    judge = parser.add_argument_group("criteria")
    judge.add_argument("--max-p95", type=float, default=2.0, help="p95 final latency limit (s)")
    judge.add_argument(
        "--max-first-text",
        type=float,
        default=1.5,
        help="p95 first-text delay limit (s): text of a 2 s+ utterance after its first second",
    )
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
    """The other server's figures divided by Chorus's, at each client count both ran."""

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
    return Comparison(
        capacity_ratio=ratio, p95_final_latency_ratio=latency, cpu_ratio=cpu, label=naive.label
    )


def efficiency(search: CapacitySearch, reference: Reference | None) -> Efficiency:
    """E for one search: sessions held × speech fraction at that count ÷ offline throughput."""
    held = [run for run in search.runs if run.clients == search.capacity]
    fraction = None
    if held and held[0].audio_s > 0:
        fraction = held[0].speech_s / (held[0].audio_s * held[0].clients)
    value = None
    if reference is not None and fraction is not None and reference.audio_s_per_wall_s > 0:
        value = search.capacity * fraction / reference.audio_s_per_wall_s
    return Efficiency(
        label=search.label, capacity=search.capacity, speech_fraction=fraction, efficiency=value
    )


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
    current_peer: bool = False
    reference: Reference | None = None

    def conversations(self, clients: int) -> list[Conversation]:
        return build_conversations(
            self.clips,
            clients,
            target_s=self.arguments.seconds,
            pause_s=self.arguments.pause,
            distinct=not self.arguments.same_speech,
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
                peer=self.current_peer,
            )
            searches.append(partial)
        ours = [search for search in self.searches if search.label == "chorus"]
        baselines = [s for s in self.searches if s.label != "chorus" and not s.peer]
        peers = [search for search in self.searches if search.peer]
        comparison = compare(ours[0], baselines[0]) if ours and baselines else None
        peer_comparisons = [compare(ours[0], peer) for peer in peers] if ours else []
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
            peer_comparisons=peer_comparisons,
            reference=self.reference,
            efficiency=[efficiency(search, self.reference) for search in self.searches],
        )

    async def record(self, figures: RunFigures) -> None:
        self.current.append(figures)
        write_load(self.report(), self.stem)
        print(f"{figures.label} N={figures.clients}: {figures.verdict}", flush=True)

    async def search(
        self,
        label: str,
        server: ServerHandle,
        *,
        naive: bool,
        driver: Driver = CHORUS_DRIVER,
        peer: str = "",
    ) -> None:
        """One capacity search; `peer` describes another project's server (`--peer`)."""
        arguments = self.arguments
        plan = RunPlan(
            label=label,
            url=server.url,
            stream=StreamOptions(
                speed=arguments.speed,
                chunk_s=arguments.chunk_ms / 1000,
                drain_s=arguments.drain_s,
                language=arguments.language,
                interim=not arguments.no_interim,
            ),
            stagger_s=arguments.stagger,
            server_pid=server.pid if server.pid > 0 else None,
            trace_prefix=self.stem if arguments.trace else None,
            driver=driver,
        )
        self.current, self.current_label, self.current_peer = [], label, bool(peer)
        criteria = Criteria(
            max_p95_final_s=arguments.max_p95,
            max_p95_first_text_s=arguments.max_first_text,
            wer_margin=arguments.wer_margin,
            compare_wer=arguments.same_speech,
        )
        result = await search_capacity(
            plan,
            arguments.steps,
            self.conversations,
            naive=naive,
            criteria=criteria,
            on_run=self.record,
            stop_at_failure=not arguments.no_stop,
        )
        if peer:
            result = msgspec.structs.replace(result, peer=True, server=peer)
        self.current = []
        self.searches.append(result)
        write_load(self.report(), self.stem)

    async def search_peer(self, server: ServerHandle, version: str) -> None:
        arguments = self.arguments
        config = json.loads(arguments.peer_config)
        if not isinstance(config, dict):
            raise SystemExit("--peer-config must be a JSON object")
        mode = "its own flags" if arguments.peer_url else "batch inference"
        if "--no-batch" in shlex.split(arguments.peer_args):
            mode = "one model behind a lock"
        described = (
            f"whisper-live {version}, faster_whisper backend, {mode}, "
            f"model {arguments.model}, int8, {arguments.cpu_threads} threads"
        )
        await self.search(
            arguments.peer or "whisperlive",
            server,
            naive=False,
            driver=whisperlive_driver(arguments.model, config),
            peer=described,
        )


async def run(arguments: LoadSettings) -> Path:
    created, stamp = now_stamp()
    stem = arguments.out / f"load-{stamp}"
    peer_version = ""
    if arguments.peer and not arguments.peer_url:  # before anything runs: it may be missing
        peer_version = await trio.to_thread.run_sync(check_environment, arguments.peer_venv)
    invocation = Invocation(arguments, load_clips(arguments), stem, created)
    if not arguments.no_reference and not arguments.audio:
        measured = await trio.to_thread.run_sync(
            partial(
                offline_throughput,
                arguments.model,
                invocation.clips,
                cpu_threads=arguments.cpu_threads,
                passes=arguments.reference_passes,
            )
        )
        invocation.reference = Reference(
            method=f"faster-whisper WhisperModel.transcribe, beam {measured.beam_size}, "
            f"{measured.cpu_threads} threads, int8",
            audio_s_per_wall_s=round(measured.audio_s_per_wall_s, 3),
            audio_s=round(measured.audio_s, 3),
            files=measured.files,
            passes=[round(rate, 3) for rate in measured.passes],
        )
        print(f"reference: {invocation.reference.audio_s_per_wall_s:.2f} audio s / wall s")
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
        if arguments.peer_url:
            await drive_running_peer(invocation)
        return stem
    chorus_log = Path(f"{stem}-chorus.log")
    async with open_server(command, log_path=chorus_log) as server:
        await invocation.search("chorus", server, naive=False)
    if arguments.baseline_ref:
        with baseline_worktree(arguments.baseline_ref) as tree:
            baseline = [
                *baseline_server_command(tree),
                "--model",
                arguments.model,
                *shlex.split(arguments.server_args),
            ]
            baseline_log = Path(f"{stem}-baseline.log")
            async with open_server(baseline, log_path=baseline_log) as server:
                await invocation.search(f"chorus@{arguments.baseline_ref}", server, naive=False)
    elif not arguments.no_naive:
        naive_log = Path(f"{stem}-naive.log")
        naive_command = [*command, "--naive"]
        async with open_server(naive_command, log_path=naive_log) as server:
            await invocation.search("naive", server, naive=True)
    if arguments.peer_url:
        await drive_running_peer(invocation)
    elif arguments.peer:
        await start_peer(invocation, peer_version)
    return stem


def peer_model_directory(model: str) -> str:
    """The directory Chorus serves `model` from; never a hub name (the peer runs offline)."""
    from actors.model.weights import ModelNotFound, resolve_model

    try:
        return resolve_model(model, allow_download=False).source
    except ModelNotFound as error:
        raise SystemExit(f"--peer needs a local model directory: {error}") from error


async def start_peer(invocation: Invocation, version: str) -> None:
    """Serve WhisperLive from `--peer-venv` with Chorus's model directory and threads."""
    arguments = invocation.arguments
    command = peer_server_command(
        arguments.peer_venv,
        peer_model_directory(arguments.model),
        threads=arguments.cpu_threads,
        max_clients=max(arguments.steps),
        extra=shlex.split(arguments.peer_args),
    )
    log = Path(f"{invocation.stem}-{arguments.peer}.log")
    environment = peer_environment(arguments.cpu_threads)
    async with open_server(command, log_path=log, env=environment, ready=answers_tcp) as server:
        await warm_up(server.url, language=arguments.language)
        await invocation.search_peer(server, version)


async def drive_running_peer(invocation: Invocation) -> None:
    arguments = invocation.arguments
    url = arguments.peer_url or ""
    require_loopback(url)
    if arguments.peer_pid is not None:
        require_process(arguments.peer_pid)
    base = url.replace("ws://", "http://", 1).rstrip("/")
    handle = ServerHandle(url=base, pid=arguments.peer_pid or 0)
    await warm_up(handle.url, language=arguments.language)
    await invocation.search_peer(handle, "(running)")


def main(argv: Sequence[str] | None = None) -> None:
    arguments = parse_arguments(argv)
    stem = trio.run(run, arguments)
    print(f"wrote {stem}.json, {stem}.md and its PNG plots")


if __name__ == "__main__":
    main()
