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
`--peer-url`). Each search streams a short unscored warm-up first, and every count's
conversations are long enough for all N to be live together `--together-s` (`bench.sustain`).
The report (JSON, Markdown, PNG) names each server's command line, settings and threads
(`bench.launch`) and is rewritten after every run, so an interrupted invocation still leaves
what it measured.
"""

from __future__ import annotations

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
from bench.launch import running_launch, started_launch
from bench.load_options import LoadSettings, parse_arguments
from bench.peer import (
    answers_tcp,
    check_environment,
    peer_environment,
    peer_server_command,
    warm_up,
    whisperlive_driver,
)
from bench.ratios import compare, efficiency
from bench.reference import baseline_server_command, baseline_worktree, offline_throughput
from bench.report import cpu_model, machine, now_stamp, write_load
from bench.run import Criteria, RunPlan, search_capacity
from bench.schema import CapacitySearch, LoadReport, Reference, RunFigures, ServerLaunch
from bench.server import (
    ServerHandle,
    fetch_health,
    open_server,
    require_loopback,
    require_process,
)
from bench.sustain import conversation_seconds


def load_clips(arguments: LoadSettings) -> list[Clip]:
    if arguments.audio:
        return load_files(arguments.audio)
    table = arguments.clip_set or speech_dir() / "en_wer.tsv"
    if not table.exists():
        raise SystemExit(f"no speech set at {table}; give --set or --audio")
    return load_set(table, max_clip_s=arguments.max_clip_s)


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
    current_source: str = ""
    current_launch: ServerLaunch | None = None
    reference: Reference | None = None

    def conversations(self, clients: int) -> list[Conversation]:
        """N conversations, long enough for all N to be live together `--together-s`."""
        arguments = self.arguments
        target = conversation_seconds(
            clients,
            seconds=arguments.seconds,
            stagger_s=arguments.stagger,
            together_s=arguments.together_s,
            speed=arguments.speed,
        )
        return build_conversations(
            self.clips,
            clients,
            target_s=target,
            pause_s=arguments.pause,
            distinct=not arguments.same_speech,
        )

    def warm_up_conversations(self) -> list[Conversation]:
        arguments = self.arguments
        if arguments.warm_up_clients <= 0 or arguments.warm_up_s <= 0:
            return []
        return build_conversations(
            self.clips,
            arguments.warm_up_clients,
            target_s=arguments.warm_up_s,
            pause_s=arguments.pause,
            distinct=True,
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
                caption_source=self.current_source,
                launch=self.current_launch,
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
            machine={**machine(), "cpu": cpu_model()},
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
        together = figures.together.seconds if figures.together is not None else 0.0
        step = " (refinement)" if figures.refinement else ""
        print(
            f"{figures.label} N={figures.clients}{step}, all live together {together:.0f} s: "
            f"{figures.verdict}",
            flush=True,
        )

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
            score_together=arguments.score == "together",
        )
        self.current, self.current_label, self.current_peer = [], label, bool(peer)
        self.current_source = driver.caption_source
        criteria = Criteria(
            max_p95_final_s=arguments.max_p95,
            max_p95_first_text_s=arguments.max_first_text,
            max_p95_caption_s=arguments.max_caption_delay,
            wer_margin=arguments.wer_margin,
            compare_wer=arguments.same_speech,
        )
        launch = await describe_launch(server, driver, chorus=not peer)
        self.current_launch = launch
        result = await search_capacity(
            plan,
            arguments.steps,
            self.conversations,
            naive=naive,
            criteria=criteria,
            on_run=self.record,
            stop_at_failure=not arguments.no_stop,
            warm_up=self.warm_up_conversations(),
            refine=not arguments.no_refine,
        )
        result = msgspec.structs.replace(result, launch=launch)
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


async def describe_launch(server: ServerHandle, driver: Driver, *, chorus: bool) -> ServerLaunch:
    """The server's command line, settings and threads; its model workers from `/health`."""
    if server.command:
        # Chorus reads `.env` in its working directory, which is the bench's
        dotenv = Path(".env") if chorus else None
        launch = started_launch(server.command, server.given, dotenv=dotenv)
    else:
        launch = running_launch(server.pid or None)
    health = await fetch_health(server.url) if driver.has_health else None
    if health is not None and health.transcriber is not None and health.transcriber.workers:
        launch = msgspec.structs.replace(launch, workers=health.transcriber.workers)
    return launch


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
        max_clients=max(*arguments.steps, arguments.warm_up_clients),
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
