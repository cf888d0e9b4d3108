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
as `… ` lines otherwise) and finals as they come, then sends `stop` and waits for `stopped`.

Wire these into `service/cli.py` with `add_commands(subparsers)` and `run_command(args)`.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import TextIO
from urllib.parse import urlencode, urlsplit, urlunsplit

import numpy as np
import trio

from actors.audio.file_decoder import UndecodableAudio, decode_file_async
from actors.model.port import SpeechModel
from actors.transcriber.files import FileOptions, FileTranscript, transcribe_samples
from protocol.dialects.languages import language_code
from protocol.openai import ResponseFormat
from service.routes.openai_api import render

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


# -- stream ------------------------------------------------------------------------------------


def stream_url(url: str, language: str | None) -> str:
    """The native endpoint for `url` (path `/v1/stream` when none is given), with options."""
    parts = urlsplit(url)
    path = parts.path if parts.path not in ("", "/") else "/v1/stream"
    query = parts.query
    if language:
        query = "&".join(part for part in (query, urlencode({"language": language})) if part)
    return urlunsplit((parts.scheme, parts.netloc, path, query, ""))


async def stream_file(
    url: str,
    path: Path,
    speed: float,
    chunk_ms: int,
    language: str | None,
    token: str | None,
    out: TextIO,
) -> int:
    """Stream `path` to a native endpoint at `speed` times real time; print text live."""
    from trio_websocket import ConnectionClosed, HandshakeError, open_websocket_url

    from service.websocket_client import answer_pings_only_while_open

    answer_pings_only_while_open()  # or a ping during our close ends the stream silently

    try:
        samples = await decode_file_async(path)
    except UndecodableAudio as error:
        print(f"chorus stream: {path}: {error.reason}", file=sys.stderr)
        return 1
    pcm = (np.clip(samples, -1.0, 1.0) * 32767).astype("<i2").tobytes()
    step = 16000 * chunk_ms // 1000 * 2
    headers = [(b"authorization", f"Bearer {token}".encode())] if token else []
    printer = _LivePrinter(out)
    streams: list[trio.abc.AsyncResource] = []
    try:
        async with open_websocket_url(stream_url(url, language), extra_headers=headers) as ws:
            streams.append(ws._stream)  # closed below: see the `finally`

            async def send() -> None:
                for offset in range(0, len(pcm), step):
                    await ws.send_message(pcm[offset : offset + step])
                    await trio.sleep(chunk_ms / 1000 / speed)
                await ws.send_message(json.dumps({"type": "stop"}))

            async with trio.open_nursery() as nursery:
                nursery.start_soon(send)
                try:  # until the server closes, after `stopped` (or a fatal error)
                    while True:
                        printer.show(json.loads(await ws.get_message()))
                except ConnectionClosed:
                    pass
                nursery.cancel_scope.cancel()
    except (HandshakeError, OSError) as error:
        print(f"chorus stream: cannot stream to {url}: {error}", file=sys.stderr)
        return 1
    finally:
        # trio-websocket 0.12 can leave the TCP stream open when the server closes first.
        for stream in streams:
            await stream.aclose()
    return 0 if printer.stopped and not printer.fatal else 1


class _LivePrinter:
    """Partials rewrite one line on a terminal (or print as `… ` lines); finals print whole."""

    def __init__(self, out: TextIO) -> None:
        self.out = out
        self.tty = out.isatty()
        self.partial = False
        self.stopped = False
        self.fatal = False

    def show(self, frame: dict[str, object]) -> bool:
        """Print one server frame; True once the session has stopped."""
        kind = frame.get("type")
        if kind == "partial":
            if self.tty:
                self.out.write(f"\r\x1b[2K… {frame['text']}")
                self.partial = True
            else:
                self.out.write(f"… {frame['text']}\n")
        elif kind == "final" and frame.get("text"):
            self._clear()
            self.out.write(f"[{frame['start']:7.2f} → {frame['end']:7.2f}] {frame['text']}\n")
        elif kind == "error":
            self._clear()
            self.fatal = self.fatal or bool(frame.get("fatal"))
            print(
                f"chorus stream: server error {frame['code']}: {frame['message']}", file=sys.stderr
            )
        elif kind == "stopped":
            self._clear()
            self.stopped = True
        self.out.flush()
        return self.stopped

    def _clear(self) -> None:
        if self.partial:
            self.out.write("\r\x1b[2K")
            self.partial = False
