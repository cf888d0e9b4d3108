"""Serve WhisperLive for the bench: run by the peer environment's Python, not Chorus's.

`bench.peer` starts `.peer-venv/bin/python bench/whisperlive_server.py --model-dir DIR ...
--host 127.0.0.1 --port P`. WhisperLive's wheel has no server command of its own (its
`run_server.py` stays in the repository and binds 0.0.0.0), so this file does what that script
does with the faster_whisper backend, bound to the loopback address the bench gives:
`TranscriptionServer().run(...)` with the model directory as `faster_whisper_custom_model_path`
(one shared model, CTranslate2 int8 on the CPU, OMP_NUM_THREADS threads) and, unless
`--no-batch`, its batch-inference mode. Only the standard library and `whisper_live` are
imported, so Chorus's own packages need not be installed where this runs.
"""

from __future__ import annotations

import argparse
import json
import os
from collections.abc import Sequence
from typing import Any


def parse_arguments(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=9090)
    parser.add_argument("--model-dir", required=True, help="a CTranslate2 Whisper directory")
    parser.add_argument("--omp-threads", type=int, default=2, help="OMP_NUM_THREADS (CPU)")
    parser.add_argument("--max-clients", type=int, default=4)
    parser.add_argument("--max-connection-time", type=int, default=3600)
    parser.add_argument("--no-batch", action="store_true", help="the lock-per-call mode instead")
    parser.add_argument("--batch-max-size", type=int)
    parser.add_argument("--batch-window-ms", type=int)
    parser.add_argument(
        "--option",
        action="append",
        default=[],
        metavar="NAME=JSON",
        help="another keyword of TranscriptionServer.run, its value as JSON (repeatable)",
    )
    return parser.parse_args(argv)


def run_options(arguments: argparse.Namespace) -> dict[str, Any]:
    """The keywords for `TranscriptionServer.run` (its defaults for what is not given)."""
    options: dict[str, Any] = {
        "port": arguments.port,
        "backend": "faster_whisper",
        "faster_whisper_custom_model_path": arguments.model_dir,
        "single_model": True,
        "max_clients": arguments.max_clients,
        "max_connection_time": arguments.max_connection_time,
        "batch_enabled": not arguments.no_batch,
    }
    if arguments.batch_max_size is not None:
        options["batch_max_size"] = arguments.batch_max_size
    if arguments.batch_window_ms is not None:
        options["batch_window_ms"] = arguments.batch_window_ms
    for item in arguments.option:
        name, _, value = item.partition("=")
        options[name.strip()] = json.loads(value)
    return options


def main(argv: Sequence[str] | None = None) -> None:
    arguments = parse_arguments(argv)
    # As run_server.py's -omp: CTranslate2 (cpu_threads 0) and onnxruntime read it at load time.
    os.environ["OMP_NUM_THREADS"] = str(arguments.omp_threads)
    from whisper_live.server import TranscriptionServer

    TranscriptionServer().run(arguments.host, **run_options(arguments))


if __name__ == "__main__":
    main()
