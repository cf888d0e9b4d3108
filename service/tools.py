"""`chorus transcribe` and `chorus stream`: the command-line tools beside `chorus serve`.

`chorus transcribe FILE… [--format txt|srt|vtt|json] [--language] [--model] [--output-dir]`
runs in-process: it loads the model, opens the transcriber actor (`open_transcriber`, owned by
the command's one `trio.run`), then decodes each file in a worker thread and transcribes it
with `actors.transcriber.files.transcribe_samples`, one file after another; a text progress bar
goes to stderr for files of 30 s or more. Output goes to stdout (a `==> FILE <==` line before each
when there are several) or, with `--output-dir`, to `DIR/<name>.<format>`. `json` is OpenAI's
`verbose_json` with words. A file that cannot be decoded is reported on stderr and the others
go on; the exit status is 1 then.

`chorus stream FILE --url ws://HOST:PORT[/v1/stream] [--speed 1.0]` is the reference client of
the native protocol: it decodes the file to 16 kHz PCM, sends it in `--chunk-ms` frames at
`--speed` times real time (trio-websocket), prints partials (rewritten in place on a terminal,
as `… ` lines otherwise) and finals as they come, then sends `stop` and waits for `stopped`;
a connection lost on the way is resumed (`service/stream_client.py`).

Wire these into `service/cli.py` with `add_commands(subparsers)` and `run_command(args)`.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import TextIO

import trio

from actors.audio.file_decoder import UndecodableAudio, decode_file_async
from actors.model.port import SpeechModel
from actors.transcriber.files import FileOptions, FileTranscript, transcribe_samples
from protocol.dialects.languages import language_code
from protocol.openai import ResponseFormat
from service.routes.openai_api import render
from service.stream_client import stream_file, stream_url

__all__ = ["add_commands", "run_command", "stream_file", "stream_url", "transcribe_files"]

FORMATS: dict[str, ResponseFormat] = {
    "txt": "text",
    "srt": "srt",
    "vtt": "vtt",
    "json": "verbose_json",
}
PROGRESS_FROM_S = 30.0


def add_commands(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    transcribe = subparsers.add_parser("transcribe", help="transcribe audio files in-process")
    transcribe.add_argument("files", nargs="+", type=Path, metavar="FILE")
    transcribe.add_argument("--format", choices=sorted(FORMATS), default="txt")
    transcribe.add_argument("--language", help="language code or name (default: detect)")
    transcribe.add_argument("--model", help="bundled name (tiny.en, base, small) or a path")
    transcribe.add_argument("--output-dir", dest="output_dir", type=Path)
    transcribe.add_argument("--cpu-threads", dest="cpu_threads", type=int)
    stream = subparsers.add_parser("stream", help="stream a file to a server, print live text")
    stream.add_argument("file", type=Path, metavar="FILE")
    stream.add_argument("--url", required=True, help="ws://host:port or ws://host:port/v1/stream")
    stream.add_argument("--speed", type=float, default=1.0, help="times real time (default 1)")
    stream.add_argument("--chunk-ms", dest="chunk_ms", type=int, default=100)
    stream.add_argument("--language", help="language code sent as the `language` option")
    stream.add_argument("--token", help="API key, sent as `Authorization: Bearer`")


def run_command(args: argparse.Namespace) -> int:
    if args.command == "transcribe":
        return transcribe_command(args)
    if args.command == "stream":
        if args.speed <= 0 or args.chunk_ms <= 0:
            print("chorus stream: --speed and --chunk-ms must be positive", file=sys.stderr)
            return 2
        return trio.run(
            stream_file,
            args.url,
            args.file,
            args.speed,
            args.chunk_ms,
            args.language,
            args.token,
            sys.stdout,
        )
    return 2


# -- transcribe --------------------------------------------------------------------------------


def transcribe_command(args: argparse.Namespace) -> int:
    from actors.model.weights import ModelNotFound
    from service.app import load_whisper
    from service.config import Settings

    language = None
    if args.language and args.language.lower() != "auto":
        language = language_code(args.language)
        if language is None:
            print(f"chorus transcribe: unknown language {args.language!r}", file=sys.stderr)
            return 2
    settings = Settings.from_env(model=args.model, cpu_threads=args.cpu_threads)
    try:
        model = load_whisper(settings)
    except ModelNotFound as error:
        print(f"chorus: {error}", file=sys.stderr)
        return 1
    if language is not None and language not in model.languages:
        print(
            f"chorus transcribe: model {model.name} does not know {args.language!r}",
            file=sys.stderr,
        )
        return 2
    return trio.run(
        transcribe_files,
        model,
        args.files,
        args.format,
        language,
        args.output_dir,
        sys.stdout,
        sys.stderr,
        settings.max_batch_size,
    )


async def transcribe_files(
    model: SpeechModel,
    files: list[Path],
    fmt: str,
    language: str | None,
    output_dir: Path | None,
    out: TextIO,
    err: TextIO,
    batch_size: int = 8,
) -> int:
    """Transcribe `files` in turn on one transcriber; returns the exit status."""
    from actors.transcriber.actor import TranscriberConfig, open_transcriber

    status = 0
    config = TranscriberConfig(max_batch_size=batch_size, background_batch_size=batch_size)
    options = FileOptions(language=language, words=fmt != "txt")
    async with open_transcriber(model, config) as transcriber:
        for path in files:
            try:
                samples = await decode_file_async(path)
            except UndecodableAudio as error:
                print(f"chorus transcribe: {path}: {error.reason}", file=err)
                status = 1
                continue
            bar = _ProgressBar(path.name, err) if len(samples) >= PROGRESS_FROM_S * 16000 else None
            transcript = await transcribe_samples(
                transcriber, samples, options, progress=bar.update if bar else None
            )
            if bar:
                bar.done()
            _write(transcript, fmt, path, output_dir, out, several=len(files) > 1)
    return status


def _write(
    transcript: FileTranscript,
    fmt: str,
    path: Path,
    output_dir: Path | None,
    out: TextIO,
    *,
    several: bool,
) -> None:
    body = render(transcript, FORMATS[fmt], task="transcribe", words=True).decode()
    if fmt == "json":
        body = json.dumps(json.loads(body), indent=2, ensure_ascii=False) + "\n"
    if output_dir is not None:
        output_dir.mkdir(parents=True, exist_ok=True)
        (output_dir / f"{path.stem}.{fmt}").write_text(body)
        return
    if several:
        out.write(f"==> {path} <==\n")
    out.write(body)
    out.flush()


class _ProgressBar:
    WIDTH = 30

    def __init__(self, name: str, err: TextIO) -> None:
        self.name, self.err = name, err

    def update(self, done_s: float, total_s: float) -> None:
        share = min(1.0, done_s / total_s) if total_s else 1.0
        filled = round(share * self.WIDTH)
        bar = "#" * filled + "." * (self.WIDTH - filled)
        self.err.write(f"\r{self.name} [{bar}] {share:4.0%} {done_s:6.1f}/{total_s:.1f} s")
        self.err.flush()

    def done(self) -> None:
        self.err.write("\n")
        self.err.flush()
