"""`python -m bench.soak`: does the server stay up, and its memory flat, under churn and attack?

Three phases against one server (started here as in `bench.load`, or `--url` with
`--server-pid`), each bounded in time and only ever to a loopback address; a Markdown report
(and JSON) goes to `bench/results/soak-<stamp>.*`:

1. **Churn**: `--cycles` connect/disconnect cycles, `--concurrency` at a time: half clean (a
   little audio, `stop`, wait for `stopped`), half abrupt (a raw TCP connection that upgrades,
   sends audio and vanishes without a close frame), in two halves after a warm-up. Afterwards
   the server must report no live sessions, no cycle may fail, and the second half may not
   grow memory more than 10% over the first half's level (allocators keep what the first
   batches took; a leak keeps growing).
2. **Sustained**: `--sessions` clients stream distinct real speech for `--minutes`, each
   starting a new conversation when one ends; resident memory is sampled every few seconds and
   must stay within 10% of its level at the end of warm-up (the first fifth of the phase).
3. **Attacks at scale**: `--attacks` rounds of the hostile inputs of issue 11 (a WAV declaring
   1 Hz on a stream and as an upload, a 2 MiB frame, a webm with a NaN sample rate, slow
   upload bodies held open), then `/health` must answer and memory must be flat.

The report states each verdict with its numbers. This is a reliability tool, not a CI test (a
smoke run of it is, with tiny numbers: `tests/e2e/test_bench_smoke.py`).
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import json
import os
import shlex
import struct
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from pathlib import Path
from urllib.parse import urlsplit

import attrs
import psutil  # type: ignore[import-untyped]
import trio
from trio_websocket import (
    ConnectionClosed,
    ConnectionRejected,
    HandshakeError,
    WebSocketConnection,
    wrap_client_stream,
)

from bench.audio import Clip, load_set, speech_dir, to_pcm16
from bench.client import StreamOptions, stream_conversation, stream_url
from bench.conversation import build_conversations
from bench.report import DEFAULT_RESULTS, cpu_model, machine, now_stamp
from bench.server import fetch_health, open_server, require_loopback, require_process, wait_idle

FLAT = 0.10  # memory may grow this much over its warmed-up level


@attrs.frozen
class SoakSettings:
    url: str | None
    server_pid: int | None
    model: str
    server_cmd: str
    cycles: int
    concurrency: int
    minutes: float
    sessions: int
    attacks: int
    out: Path
    clip_set: Path | None  # None: the shared set's en_wer.tsv, by path

    def clips(self, max_clip_s: float) -> list[Clip]:
        return load_set(self.clip_set or speech_dir() / "en_wer.tsv", max_clip_s=max_clip_s)


@attrs.define
class Phase:
    name: str
    verdict: str = "not run"
    ok: bool = False
    figures: dict[str, float | int | str] = attrs.Factory(dict)


def parse_arguments(argv: Sequence[str] | None = None) -> SoakSettings:
    parser = argparse.ArgumentParser(prog="python -m bench.soak", description=__doc__)
    parser.add_argument("--url", help="a running server (http://127.0.0.1:PORT)")
    parser.add_argument("--server-pid", type=int, help="its pid, to sample memory")
    parser.add_argument("--model", default="tiny.en")
    parser.add_argument("--server-cmd", default="uv run chorus serve")
    parser.add_argument("--cycles", type=int, default=1000, help="connect/disconnect cycles")
    parser.add_argument("--concurrency", type=int, default=8, help="cycles at once")
    parser.add_argument("--minutes", type=float, default=60.0, help="the sustained phase")
    parser.add_argument("--sessions", type=int, default=8, help="clients in the sustained phase")
    parser.add_argument("--attacks", type=int, default=20, help="rounds of each attack")
    parser.add_argument("--out", type=Path, default=DEFAULT_RESULTS)
    parser.add_argument(
        "--set",
        dest="clip_set",
        type=Path,
        help="TSV of clips (default: ../shared/speech/en_wer.tsv)",
    )
    arguments = parser.parse_args(argv)
    if arguments.url:
        require_loopback(arguments.url)
        if arguments.server_pid is None:
            parser.error("--url needs --server-pid (memory is what this tool measures)")
        require_process(arguments.server_pid)
    return SoakSettings(
        url=arguments.url,
        server_pid=arguments.server_pid,
        model=arguments.model,
        server_cmd=arguments.server_cmd,
        cycles=arguments.cycles,
        concurrency=max(1, arguments.concurrency),
        minutes=arguments.minutes,
        sessions=max(1, arguments.sessions),
        attacks=arguments.attacks,
        out=arguments.out,
        clip_set=arguments.clip_set,
    )


def rss_mib(pid: int) -> float:
    """Resident memory of `pid` and its children (`uv run` starts the server as a child)."""
    process = psutil.Process(pid)
    total = 0
    for member in [process, *process.children(recursive=True)]:
        try:
            total += member.memory_info().rss
        except psutil.NoSuchProcess:
            continue
    return total / 2**20


# -- phase 1: churn ---------------------------------------------------------------------------


async def abrupt_session(url: str, audio: bytes) -> None:
    """Upgrade a raw TCP connection, send one masked binary frame, and vanish (no close)."""
    parts = urlsplit(stream_url(url))
    host, port = parts.hostname or "127.0.0.1", parts.port or 80
    stream = await trio.open_tcp_stream(host, port)
    try:
        key = base64.b64encode(os.urandom(16)).decode()
        request = (
            f"GET {parts.path}?{parts.query} HTTP/1.1\r\nHost: {host}:{port}\r\n"
            "Upgrade: websocket\r\nConnection: Upgrade\r\n"
            f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n"
        )
        await stream.send_all(request.encode())
        head = b""
        with trio.fail_after(10):
            while b"\r\n\r\n" not in head:
                data = await stream.receive_some(4096)
                if not data:
                    return
                head += data
        if not head.startswith(b"HTTP/1.1 101"):
            return
        await stream.send_all(_masked_binary_frame(audio))
    finally:
        await stream.aclose()  # a TCP close, no WebSocket close frame


def _masked_binary_frame(payload: bytes) -> bytes:
    mask = os.urandom(4)
    if len(payload) < 126:
        header = struct.pack("!BB", 0x82, 0x80 | len(payload))
    elif len(payload) < 1 << 16:
        header = struct.pack("!BBH", 0x82, 0x80 | 126, len(payload))
    else:
        header = struct.pack("!BBQ", 0x82, 0x80 | 127, len(payload))
    masked = bytes(byte ^ mask[i % 4] for i, byte in enumerate(payload))
    return header + mask + masked


@contextlib.asynccontextmanager
async def websocket(url: str) -> AsyncIterator[WebSocketConnection]:
    """A client WebSocket whose TCP stream is closed however it ends (trio-websocket's own
    `open_websocket_url` leaves it open when the server closes first)."""
    parts = urlsplit(url)
    stream = await trio.open_tcp_stream(parts.hostname or "127.0.0.1", parts.port or 80)
    async with stream, trio.open_nursery() as nursery:
        socket = await wrap_client_stream(
            nursery, stream, f"{parts.hostname}:{parts.port}", f"{parts.path}?{parts.query}"
        )
        try:
            yield socket
        finally:
            nursery.cancel_scope.cancel()


async def clean_session(url: str, audio: bytes) -> None:
    async with websocket(stream_url(url)) as socket:
        await socket.send_message(audio)
        await socket.send_message('{"type":"stop"}')
        with trio.fail_after(30):
            while True:
                if '"stopped"' in str(await socket.get_message()):
                    return


async def churn(settings: SoakSettings, url: str, pid: int, audio: bytes) -> Phase:
    phase = Phase("churn")
    failures: list[str] = []
    async with trio.open_nursery() as warm:  # warm up: the model's first batches allocate
        for _ in range(settings.concurrency):  # for good, at every batch size
            warm.start_soon(clean_session, url, audio)
    before = rss_mib(pid)
    limiter = trio.CapacityLimiter(settings.concurrency)
    started = trio.current_time()

    async def cycle(index: int) -> None:
        async with limiter:
            try:
                if index % 2:
                    await abrupt_session(url, audio)
                else:
                    await clean_session(url, audio)
            except* (OSError, HandshakeError, ConnectionClosed, trio.TooSlowError) as group:
                error = group.exceptions[0]
                failures.append(f"{type(error).__name__}: {error}"[:200])

    levels = [before]
    half = settings.cycles // 2
    for first, last in ((0, half), (half, settings.cycles)):  # two rounds: the second's growth
        async with trio.open_nursery() as nursery:  # is what a leak would show
            for index in range(first, last):
                nursery.start_soon(cycle, index)
        await wait_idle(url, timeout_s=60.0)
        levels.append(rss_mib(pid))
    health = await fetch_health(url)
    left = health.sessions if health is not None else -1
    after = levels[-1]
    phase.figures = {
        "cycles": settings.cycles,
        "seconds": round(trio.current_time() - started, 1),
        "failed cycles": len(failures),
        "live sessions after": left,
        "RSS before MiB": round(before, 1),
        "RSS after the first half MiB": round(levels[1], 1),
        "RSS after MiB": round(after, 1),
    }
    if failures:
        phase.figures["first failure"] = failures[0]
    phase.ok = not failures and left == 0 and after <= levels[1] * (1 + FLAT)
    phase.verdict = "ok" if phase.ok else "FAILED"
    return phase


# -- phase 2: sustained -----------------------------------------------------------------------


async def sustained(settings: SoakSettings, url: str, pid: int) -> Phase:
    phase = Phase("sustained")
    clips = settings.clips(max_clip_s=20.0)
    conversations = build_conversations(
        clips, settings.sessions, target_s=30.0, pause_s=1.0, distinct=True
    )
    seconds = settings.minutes * 60
    warm_until = trio.current_time() + max(seconds / 5, min(60.0, seconds / 2))
    end = trio.current_time() + seconds
    samples: list[tuple[float, float]] = []
    outcomes: dict[str, int] = {}
    reasons: dict[str, int] = {}

    async def client(index: int) -> None:
        while trio.current_time() < end:
            record = await stream_conversation(
                stream_url(url),
                conversations[index],
                StreamOptions(),
                client=index,
                deadline=end + 30,
            )
            outcomes[record.outcome] = outcomes.get(record.outcome, 0) + 1
            if record.outcome != "completed":
                reasons[record.reason] = reasons.get(record.reason, 0) + 1
                await trio.sleep(1.0)  # a refusal or failure: do not spin

    async def sample() -> None:
        while True:
            samples.append((trio.current_time(), rss_mib(pid)))
            await trio.sleep(5.0)

    async with trio.open_nursery() as nursery:
        nursery.start_soon(sample)
        async with trio.open_nursery() as clients:
            for index in range(settings.sessions):
                clients.start_soon(client, index)
        nursery.cancel_scope.cancel()
    warm = [rss for at, rss in samples if at <= warm_until] or [samples[0][1]]
    later = [rss for at, rss in samples if at > warm_until] or [warm[-1]]
    level = warm[-1]
    peak = max(later)
    phase.figures = {
        "sessions": settings.sessions,
        "minutes": settings.minutes,
        "conversations": sum(outcomes.values()),
        **{f"sessions {outcome}": count for outcome, count in sorted(outcomes.items())},
        "RSS after warm-up MiB": round(level, 1),
        "RSS peak later MiB": round(peak, 1),
        "RSS at end MiB": round(later[-1], 1),
        "samples": len(samples),
    }
    if reasons:
        phase.figures["most common problem"] = max(reasons, key=reasons.__getitem__)[:200]
    phase.ok = peak <= level * (1 + FLAT) and set(outcomes) <= {"completed"}
    phase.verdict = "ok" if phase.ok else "FAILED"
    return phase


# -- phase 3: attacks -------------------------------------------------------------------------


def wav_declaring(rate: int, data: bytes) -> bytes:
    fmt = struct.pack("<HHIIHH", 1, 1, rate, rate * 2 & 0xFFFFFFFF, 2, 16)
    body = b"WAVE" + b"fmt " + struct.pack("<I", len(fmt)) + fmt
    body += b"data" + struct.pack("<I", len(data)) + data
    return b"RIFF" + struct.pack("<I", len(body)) + body


async def _stream_once(url: str, query: str, message: bytes) -> None:
    target = stream_url(url).split("?")[0] + "?" + query
    try:
        async with websocket(target) as socket:
            await socket.send_message(message)
            with trio.move_on_after(10):
                while True:
                    await socket.get_message()
    except* (ConnectionClosed, ConnectionRejected, HandshakeError, OSError):
        pass  # refused or closed by the server: what an attack should get


async def _post(url: str, name: str, data: bytes) -> int:
    """A multipart upload with the standard library, in a worker thread; the status."""
    import http.client

    boundary = "soak" + os.urandom(8).hex()
    body = (
        (
            f'--{boundary}\r\nContent-Disposition: form-data; name="model"\r\n\r\nwhisper-1\r\n'
            f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="{name}"\r\n'
            "Content-Type: application/octet-stream\r\n\r\n"
        ).encode()
        + data
        + f"\r\n--{boundary}--\r\n".encode()
    )
    parts = urlsplit(url)

    def post() -> int:
        connection = http.client.HTTPConnection(parts.hostname or "", parts.port, timeout=60)
        try:
            connection.request(
                "POST",
                "/v1/audio/transcriptions",
                body,
                {"Content-Type": f"multipart/form-data; boundary={boundary}"},
            )
            response = connection.getresponse()
            response.read()
            response.close()
            status: int = response.status
            return status
        except OSError:
            return 0
        finally:
            connection.close()

    return await trio.to_thread.run_sync(post)


async def _slow_body(url: str, hold_s: float) -> None:
    """Start an upload whose body never finishes; hold the connection `hold_s`."""
    parts = urlsplit(url)
    stream = await trio.open_tcp_stream(parts.hostname or "127.0.0.1", parts.port or 80)
    try:
        await stream.send_all(
            b"POST /v1/audio/transcriptions HTTP/1.1\r\nHost: 127.0.0.1\r\n"
            b"Content-Type: multipart/form-data; boundary=x\r\nContent-Length: 1000000\r\n\r\n--x"
        )
        await trio.sleep(hold_s)
    except OSError:
        return
    finally:
        await stream.aclose()


async def attacks(settings: SoakSettings, url: str, pid: int) -> Phase:
    phase = Phase("attacks")
    before = rss_mib(pid)
    one_hz = wav_declaring(1, bytes(400_000))
    statuses: dict[int, int] = {}
    started = trio.current_time()
    limiter = trio.CapacityLimiter(8)

    async def limited(call: Callable[[], Awaitable[object]]) -> None:
        async with limiter:
            result = await call()
            if isinstance(result, int):
                statuses[result] = statuses.get(result, 0) + 1

    async with trio.open_nursery() as nursery:
        for _ in range(settings.attacks):
            nursery.start_soon(limited, lambda: _stream_once(url, "encoding=auto", one_hz))
            nursery.start_soon(limited, lambda: _stream_once(url, "", bytes(2 << 20)))
            nursery.start_soon(
                limited, lambda: _post(url, "bomb.wav", wav_declaring(1, bytes(40_000)))
            )
        for _ in range(min(settings.attacks, 8)):
            nursery.start_soon(_slow_body, url, 5.0)
    health = await fetch_health(url)
    after = rss_mib(pid)
    phase.figures = {
        "rounds": settings.attacks,
        "seconds": round(trio.current_time() - started, 1),
        "upload answers": json.dumps(dict(sorted(statuses.items()))),
        "health after": "ok" if health is not None else "no answer",
        "RSS before MiB": round(before, 1),
        "RSS after MiB": round(after, 1),
    }
    refused = all(status in (400, 413, 415, 429, 503) for status in statuses)
    phase.ok = health is not None and refused and after <= before * (1 + FLAT) + 16
    phase.verdict = "ok" if phase.ok else "FAILED"
    return phase


# -- the run ----------------------------------------------------------------------------------


async def soak(settings: SoakSettings, url: str, pid: int) -> list[Phase]:
    clips = settings.clips(max_clip_s=10.0)
    audio = to_pcm16(clips[0].samples[:16000])  # one second of speech per churn cycle
    phases = [await churn(settings, url, pid, audio)]
    if settings.minutes > 0:
        phases.append(await sustained(settings, url, pid))
    if settings.attacks > 0:
        phases.append(await attacks(settings, url, pid))
    return phases


def write_report(settings: SoakSettings, phases: list[Phase]) -> Path:
    settings.out.mkdir(parents=True, exist_ok=True)
    stem = settings.out / f"soak-{now_stamp()[1]}"
    lines = [
        f"# Soak, {stem.name}",
        "",
        f"Machine: {cpu_model()}; {machine()}",
        f"Model: {settings.model}; server: {settings.url or settings.server_cmd}",
        "",
    ]
    for phase in phases:
        lines += [f"## {phase.name}: {phase.verdict}", "", "| figure | value |", "|---|---|"]
        lines += [f"| {name} | {value} |" for name, value in phase.figures.items()]
        lines.append("")
    Path(f"{stem}.md").write_text("\n".join(lines), encoding="utf-8")
    Path(f"{stem}.json").write_text(
        json.dumps([attrs.asdict(phase) for phase in phases], indent=2), encoding="utf-8"
    )
    return stem


async def run(settings: SoakSettings) -> tuple[Path, list[Phase]]:
    if settings.url is not None and settings.server_pid is not None:
        phases = await soak(settings, settings.url, settings.server_pid)
    else:
        command = [*shlex.split(settings.server_cmd), "--model", settings.model]
        log = settings.out / f"soak-{now_stamp()[1]}-server.log"
        # admission by capacity off: refusing sessions is not what this run is about
        environment = {
            "CHORUS_ADMISSION_UTILIZATION": "0",
            "CHORUS_MAX_UPLOADS_PER_CLIENT": "16",  # so bombs reach the decoder
            "CHORUS_MAX_UPLOADS": "16",
        }
        async with open_server(command, log_path=log, env=environment) as server:
            phases = await soak(settings, server.url, server.pid)
    return write_report(settings, phases), phases


def main(argv: Sequence[str] | None = None) -> None:
    stem, phases = trio.run(run, parse_arguments(argv))
    for phase in phases:
        print(f"{phase.name}: {phase.verdict} {phase.figures}")
    print(f"wrote {stem}.md")
    raise SystemExit(0 if all(phase.ok for phase in phases) else 1)


if __name__ == "__main__":
    main()
