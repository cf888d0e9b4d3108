"""The command line of `python -m bench.load`, typed: `parse_arguments()` → `LoadSettings`.

Plain data, no I/O; `bench.load` runs what it describes. The criteria (`--max-p95`,
`--max-first-text`, `--max-caption-delay`) and the sustained-load defaults (`--together-s`,
`--stagger`, the warm-up, the refinement step) follow DESIGN §8; `bench/README.md` says what
each option does.
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from pathlib import Path

import attrs

from bench.peer import DEFAULT_VENV, PEERS
from bench.report import DEFAULT_RESULTS
from bench.sustain import TOGETHER_S

DESCRIPTION = (
    "Capacity of one machine: N concurrent live sessions of real speech, Chorus against a "
    "baseline (and a peer), with the offline faster-whisper reference measured in the same "
    "invocation. See bench/README.md."
)


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
    together_s: float
    warm_up_clients: int
    warm_up_s: float
    no_refine: bool
    score: str
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
    max_caption_delay: float
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
    parser = argparse.ArgumentParser(prog="python -m bench.load", description=DESCRIPTION)
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
    load.add_argument(
        "--seconds",
        type=float,
        default=60.0,
        help="audio per conversation, at least: longer where N needs it for --together-s",
    )
    load.add_argument(
        "--together-s",
        type=float,
        default=TOGETHER_S,
        help="every N live together at least this long (s): conversations grow with the "
        "stagger × (N - 1); 0: conversations of --seconds only",
    )
    load.add_argument(
        "--score",
        choices=("together", "all"),
        default="together",
        help="score latencies while all N were live together, or over the whole run",
    )
    load.add_argument(
        "--warm-up-clients",
        type=int,
        default=2,
        help="unscored sessions before the first step, so that a server's admission meter "
        "has measured the model (0: none)",
    )
    load.add_argument("--warm-up-s", type=float, default=15.0, help="audio per warm-up session")
    load.add_argument(
        "--no-refine",
        action="store_true",
        help="do not try a count between the last held and the first failed",
    )
    load.add_argument("--pause", type=float, default=1.0, help="silence between utterances (s)")
    load.add_argument("--speed", type=float, default=1.0, help="1.0 is real time")
    load.add_argument("--stagger", type=float, default=0.25, help="seconds between client starts")
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
    judge.add_argument(
        "--max-caption-delay",
        type=float,
        default=1.5,
        help="p95 caption delay limit (s): audio being sent minus the end of the text shown",
    )
    judge.add_argument("--wer-margin", type=float, default=0.01, help="allowed WER increase")
    parser.add_argument("--out", type=Path, default=DEFAULT_RESULTS)
    parser.add_argument("--trace", action="store_true", help="also write every frame (JSONL)")
    return LoadSettings(**vars(parser.parse_args(argv)))
