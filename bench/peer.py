"""WhisperLive (`whisper-live` on PyPI, collabora/WhisperLive) as a peer in the same bench run.

`python -m bench.load --peer whisperlive` measures it after Chorus (and its baseline) with the
same clips, client counts and criteria; this module has what that takes:

- **Its own environment.** `python -m bench.peer --setup` makes `.peer-venv` beside the project
  (`python -m venv` + pip) and installs there only what WhisperLive's faster_whisper server
  imports: `whisper-live` itself without its declared dependencies (they pin faster-whisper
  1.2.0, which Chorus's lock has newer, and pull torchaudio, openai-whisper, OpenVINO, PyAudio,
  which needs PortAudio's headers to build, and the CUDA 12 cuBLAS and cuDNN wheels: several GB
  that its CPU server never loads), then faster-whisper and tokenizers at its pins, and torch
  (`TORCH_REQUIREMENT`; the server imports it to ask for CUDA). Chorus's own `uv sync --locked`
  installs none of it.
- **Its server.** `peer_server_command()` runs `bench/whisperlive_server.py` with that
  environment's Python: `TranscriptionServer.run` with the faster_whisper backend, the same
  CTranslate2 model directory Chorus resolves (`actors.model.weights`), int8 on the CPU (what it
  picks without CUDA), `OMP_NUM_THREADS` as Chorus's threads, batch inference on, `max_clients`
  the largest N, `HF_HUB_OFFLINE=1` so nothing is fetched. It loads the model when its first
  client connects, so `warm_up()` connects once before the first run.
- **Its protocol.** `WhisperLiveStreamer` is one client of WhisperLive's WebSocket protocol: a
  JSON options message (uid, language, task, model, use_vad and the rest of its own client's
  defaults), then float32 16 kHz audio, then `END_OF_AUDIO`. The server answers `SERVER_READY`,
  then messages holding the last `send_last_n_segments` segments (start and end as strings,
  text, `completed`), the last of them in progress; `{"status": "WAIT"}` when it turns a client
  away. Every message is recorded as the native frames it amounts to (`bench.peer_protocol`,
  sans-IO), so `bench.figures` and `bench.timeline` apply unchanged, caption delay included
  (segment times are audio seconds of the stream): a segment's first message as `completed`
  is a `Final` (its arrival minus the send of the chunk holding its end is the commit latency,
  the same definition as Chorus's final latency), the segment in progress a `Partial`.
  WhisperLive drops what is not committed when `END_OF_AUDIO` comes, so after the last chunk
  the client waits (at most `drain_s`) until the last segment is committed and reaches the end
  of the speech sent, then ends the stream.
"""

from __future__ import annotations

import argparse
import math
import socket
import subprocess
import sys
import uuid
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import attrs
import msgspec
import trio
from trio_websocket import ConnectionClosed, ConnectionRejected, WebSocketConnection

from bench.audio import SAMPLE_RATE
from bench.client import (
    CLOSE_GRACE_S,
    Arrival,
    Driver,
    Outcome,
    SessionLog,
    SessionRecord,
    StreamOptions,
    converse_until,
    send_chunks,
)
from bench.conversation import Conversation
from bench.peer_protocol import (
    CAPTION_SOURCE,
    END_OF_AUDIO,
    SERVER_READY,
    Transcript,
    message_decoder,
    options_message,
    pcm16_to_float32,
)

PEERS = ("whisperlive",)
WHISPERLIVE_VERSION = "0.10.0"
# What its faster_whisper server imports, at its own pins where it has them.
PEER_REQUIREMENTS = (
    "faster-whisper==1.2.0",
    "tokenizers==0.20.3",
    "numpy>=1.26.4,<2.5",
    "websockets>=13",
    "fastapi",
    "uvicorn",
    "python-multipart",
)
TORCH_REQUIREMENT = "torch==2.13.0"
ROOT = Path(__file__).resolve().parents[1]
DEFAULT_VENV = ROOT / ".peer-venv"
LAUNCHER = Path(__file__).resolve().with_name("whisperlive_server.py")
UNDRAINED = "text still in progress when drain_s ran out (dropped at END_OF_AUDIO)"


# --- the environment ---------------------------------------------------------------------------


def peer_python(venv: Path) -> Path:
    return venv / "bin" / "python"


def setup_environment(
    venv: Path = DEFAULT_VENV, *, torch: str = TORCH_REQUIREMENT, python: str = sys.executable
) -> Path:
    """Make `venv` and install WhisperLive's server in it (blocking; pip prints its progress)."""
    if not peer_python(venv).exists():
        subprocess.run([python, "-m", "venv", str(venv)], check=True)
    pip = [str(peer_python(venv)), "-m", "pip", "install", "--disable-pip-version-check"]
    subprocess.run([*pip, torch], check=True)
    subprocess.run([*pip, *PEER_REQUIREMENTS], check=True)
    subprocess.run([*pip, "--no-deps", f"whisper-live=={WHISPERLIVE_VERSION}"], check=True)
    check_environment(venv)
    return venv


def check_environment(venv: Path) -> str:
    """The installed WhisperLive version; SystemExit saying how to set it up when it is not."""
    python = peer_python(venv)
    hint = f"no WhisperLive in {venv}: run `uv run python -m bench.peer --setup`"
    if not python.exists():
        raise SystemExit(hint)
    probe = "import whisper_live.server; from whisper_live import __version__; print(__version__)"
    done = subprocess.run([str(python), "-c", probe], capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise SystemExit(f"{hint}\n{done.stderr[-1500:]}")
    return done.stdout.strip()


# --- the server --------------------------------------------------------------------------------


def peer_server_command(
    venv: Path,
    model_dir: str,
    *,
    threads: int,
    max_clients: int,
    extra: Sequence[str] = (),
) -> list[str]:
    """The command for `bench.server.open_server` (which adds `--host` and `--port`)."""
    return [
        str(peer_python(venv)),
        str(LAUNCHER),
        "--model-dir",
        model_dir,
        "--omp-threads",
        str(threads),
        "--max-clients",
        str(max_clients),
        *extra,
    ]


def peer_environment(threads: int) -> dict[str, str]:
    return {"OMP_NUM_THREADS": str(threads), "HF_HUB_OFFLINE": "1", "PYTHONUNBUFFERED": "1"}


def _connects(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=1.0):
            return True
    except OSError:
        return False


async def answers_tcp(url: str) -> bool:
    """Whether something accepts connections at `url`'s host and port (WhisperLive's WebSocket
    server has no `/health`)."""
    parts = urlsplit(url)
    host, port = parts.hostname or "127.0.0.1", parts.port or 80
    return await trio.to_thread.run_sync(_connects, host, port)


def whisperlive_url(base: str, language: str = "en") -> str:
    """`ws://host:port/` from `http://host:port` (WhisperLive serves any path)."""
    parts = urlsplit(base)
    scheme = {"http": "ws", "https": "wss"}.get(parts.scheme, parts.scheme)
    return f"{scheme}://{parts.netloc}/"


@attrs.define
class _PeerSession:
    log: SessionLog
    transcript: Transcript
    changed: trio.Event = attrs.Factory(trio.Event)
    end_sent: bool = False
    drained: bool = True

    def poke(self) -> None:
        self.changed.set()
        self.changed = trio.Event()


@attrs.frozen
class WhisperLiveStreamer:
    """A `bench.client.Streamer` that speaks WhisperLive's protocol."""

    model: str = "tiny.en"  # sent as `model`; the server serves its own directory instead
    config: Mapping[str, Any] = attrs.field(factory=dict)  # over `CLIENT_DEFAULTS`

    async def __call__(
        self,
        url: str,
        conversation: Conversation,
        options: StreamOptions,
        *,
        client: int = 0,
        deadline: float = math.inf,
    ) -> SessionRecord:
        session = _PeerSession(log=SessionLog(), transcript=Transcript(language=options.language))

        async def talk(
            socket: WebSocketConnection,
            conversation: Conversation,
            options: StreamOptions,
            log: SessionLog,
        ) -> None:
            await self._talk(socket, conversation, options, session)

        rejected = await converse_until(url, conversation, options, session.log, talk, deadline)
        outcome, reason = judge_session(session, rejected)
        return session.log.record(client, conversation, outcome, reason)

    async def _talk(
        self,
        socket: WebSocketConnection,
        conversation: Conversation,
        options: StreamOptions,
        session: _PeerSession,
    ) -> None:
        log, transcript = session.log, session.transcript
        first = options_message(uuid.uuid4().hex, options.language, self.model, self.config)
        async with trio.open_nursery() as nursery:
            nursery.start_soon(_receive_messages, socket, session)
            try:
                await socket.send_message(first)
            except ConnectionClosed:
                nursery.cancel_scope.cancel()
                return
            with trio.move_on_after(options.connect_timeout_s):
                while not (transcript.ready or log.closed.is_set() or transcript.wait):
                    await session.changed.wait()
            if not transcript.ready:
                if not log.closed.is_set() and not transcript.wait:
                    log.problem = f"no {SERVER_READY} within {options.connect_timeout_s:g} s"
                nursery.cancel_scope.cancel()
                return
            if await send_chunks(socket, conversation, options, log, pcm16_to_float32):
                sent = log.audio_ends[-1] if log.audio_ends else 0.0
                speech_end = max(
                    (span.end for span in conversation.spans if span.end <= sent), default=0.0
                )
                with trio.move_on_after(options.drain_s):
                    while not (transcript.settled(speech_end) or log.closed.is_set()):
                        await session.changed.wait()
                session.drained = transcript.settled(speech_end)
                try:
                    await socket.send_message(END_OF_AUDIO)
                    session.end_sent = True
                except ConnectionClosed:
                    pass
                with trio.move_on_after(CLOSE_GRACE_S):  # the server closes (1000) at once
                    await log.closed.wait()
            nursery.cancel_scope.cancel()
        with trio.move_on_after(CLOSE_GRACE_S):
            await socket.aclose()


async def _receive_messages(socket: WebSocketConnection, session: _PeerSession) -> None:
    log = session.log
    while True:
        try:
            message = await socket.get_message()
        except ConnectionClosed as closed:
            log.close = closed.reason
            log.closed.set()
            log.finished.set()
            session.poke()
            return
        at = trio.current_time()
        try:
            decoded = message_decoder.decode(message)
        except msgspec.DecodeError as error:
            log.undecodable = log.undecodable or f"undecodable message {message!r:.120}: {error}"
            continue
        for frame in session.transcript.frames(decoded):
            log.arrivals.append(Arrival(at=at, frame=frame))
        session.poke()


def judge_session(
    session: _PeerSession, rejected: ConnectionRejected | None
) -> tuple[Outcome, str]:
    """Completed: ready, all audio sent, `END_OF_AUDIO` answered by a normal close."""
    log, transcript = session.log, session.transcript
    if rejected is not None:
        if rejected.status_code == 503:
            return "refused", "HTTP 503"
        return "failed", f"handshake rejected with HTTP {rejected.status_code}"
    if transcript.wait:
        return "refused", "WAIT before SERVER_READY"
    if log.undecodable:
        return "failed", log.undecodable
    if transcript.error:
        return "failed", f"ERROR: {transcript.error}"
    if transcript.disconnected:
        return "failed", "DISCONNECT (max_connection_time)"
    if log.problem:
        return "failed", log.problem
    close_code = log.close.code if log.close else None
    if session.end_sent and close_code == 1000:
        if not session.drained:
            return "completed", UNDRAINED
        return "completed", ""
    if log.close is not None:
        return "failed", f"closed {log.close.code} {log.close.reason or ''}".strip()
    if session.end_sent:
        return "failed", f"no close within {CLOSE_GRACE_S:g} s of END_OF_AUDIO"
    return "failed", "ended before END_OF_AUDIO"


def whisperlive_driver(model: str, config: Mapping[str, Any] | None = None) -> Driver:
    streamer = WhisperLiveStreamer(model=model, config=dict(config or {}))
    return Driver(
        name="whisperlive",
        ws_url=whisperlive_url,
        stream=streamer,
        has_health=False,
        caption_source=CAPTION_SOURCE,
    )


async def warm_up(url: str, *, language: str = "en", timeout_s: float = 120.0) -> None:
    """One short session, so that the model is loaded (and the batch worker started) before
    the first timed run; WhisperLive loads it when its first client connects."""
    silence = Conversation(pcm=bytes(SAMPLE_RATE * 2), spans=())
    options = StreamOptions(speed=4.0, drain_s=0.0, connect_timeout_s=timeout_s, language=language)
    record = await WhisperLiveStreamer()(
        whisperlive_url(url), silence, options, deadline=trio.current_time() + timeout_s
    )
    if record.outcome != "completed":
        raise RuntimeError(f"WhisperLive warm-up session {record.outcome}: {record.reason}")


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.peer", description=__doc__)
    parser.add_argument("--setup", action="store_true", help="make the environment")
    parser.add_argument("--venv", type=Path, default=DEFAULT_VENV)
    parser.add_argument("--torch", default=TORCH_REQUIREMENT, help="the torch requirement")
    arguments = parser.parse_args(argv)
    if arguments.setup:
        setup_environment(arguments.venv, torch=arguments.torch)
    print(f"whisper-live {check_environment(arguments.venv)} in {arguments.venv}")


if __name__ == "__main__":
    main()
