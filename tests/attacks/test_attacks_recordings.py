"""`WS /ws` recordings are uploads (issue 21, findings 4-6): each recording waits behind live
work at `background` priority, takes an upload slot and a rate-limit token as a `POST` upload
does, and a large WAV recording is decoded in bounded pieces, not as one packet."""

from __future__ import annotations

import base64
import contextlib
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import trio
from conftest import serve_app
from starlette.applications import Starlette
from support.audio_files import DATA, load, wav_bytes
from support.fakes import FakeModel
from support.ws_client import connect, send_audio
from trio_websocket import ConnectionClosed

from actors.limiter import LimiterConfig, RateLimits
from actors.model.port import SAMPLE_RATE, Request
from service.app import create_app
from service.config import Settings
from service.policy.limits import Limits
from service.policy.security import ApiKeys, SecurityConfig
from service.runtime import runtime

KEYS = ApiKeys.from_env({"CHORUS_API_KEYS": "alice:key-alice,bob:key-bob"})
GARDEN = load(DATA / "garden.wav")  # 3.95 s of speech
LIBRARY = load(DATA / "library.wav")


def recording(utterances: int) -> str:
    """A `/ws` audio message: `utterances` x garden.wav, 1.5 s apart."""
    silence = np.zeros(int(1.5 * SAMPLE_RATE), np.float32)
    samples = np.concatenate([part for _ in range(utterances) for part in (GARDEN, silence)])
    return json.dumps({"type": "audio", "audio": base64.b64encode(wav_bytes(samples)).decode()})


def app_with(tmp_path: Path, model: FakeModel, *, per_minute: int = 0, **limits: Any) -> Starlette:
    return create_app(
        Settings(model="fake", data_dir=tmp_path),
        model=model,
        security=SecurityConfig(api_keys=KEYS, limits=Limits(**limits)),
        limiter=LimiterConfig(limits=RateLimits(per_minute=per_minute)),
    )


async def answer_to(socket: Any, message: str) -> dict[str, Any]:
    """Send one recording; its `transcription` or `error` (after the `status`)."""
    await socket.send_message(message)
    while True:
        answer: dict[str, Any] = json.loads(await socket.get_message())
        if answer["type"] in ("transcription", "error"):
            return answer


def is_live(request: Request) -> bool:
    """Bob's live session asks with his prompt; Alice's recording with none."""
    return request.options.prompt == "bob"


async def test_recordings_wait_behind_live_sessions(tmp_path: Path) -> None:
    """Alice's recording holds the model and has more utterances queued; Bob's live session
    then asks for its final. Bob's work goes next, before the rest of Alice's recording (at
    `final` priority, as before the fix, the recording's queued jobs went first)."""
    model = FakeModel()
    model.gate.clear()
    app = app_with(tmp_path, model)
    async with serve_app(app) as address:
        transcriber = runtime(app).transcriber
        with trio.fail_after(60):
            async with (
                connect(f"ws://{address}/ws?token=key-alice") as alice,
                connect(f"ws://{address}/v1/stream?token=key-bob&interim=false&prompt=bob") as bob,
                trio.open_nursery() as nursery,
            ):
                answers: list[dict[str, Any]] = []

                async def record() -> None:
                    answers.append(await answer_to(alice, recording(8)))

                nursery.start_soon(record)
                await trio.to_thread.run_sync(model.entered.wait)  # the recording holds it
                while not transcriber.statistics().background_queue:  # noqa: ASYNC110
                    await trio.sleep(0.02)  # its other utterances wait
                await send_audio(bob, LIBRARY)
                await bob.send_message(json.dumps({"type": "finalize"}))
                while not transcriber.statistics().queue:  # noqa: ASYNC110
                    await trio.sleep(0.02)  # bob's final waits too
                model.gate.set()
        assert answers[0]["type"] == "transcription", answers
    first, second, *rest = model.batches
    assert not any(map(is_live, first))
    assert all(map(is_live, second)), [list(map(is_live, batch)) for batch in model.batches]
    assert not any(is_live(request) for batch in rest for request in batch)


async def test_each_recording_takes_a_rate_limit_token(tmp_path: Path) -> None:
    """With 3 a minute, one connection gets three recordings transcribed and the fourth
    refused, with when to retry; the connection stays open (before the fix it took one token
    and any number of recordings)."""
    app = app_with(tmp_path, FakeModel(), per_minute=3)
    async with serve_app(app) as address, connect(f"ws://{address}/ws?token=key-alice") as alice:
        message = recording(1)
        for _ in range(3):
            assert (await answer_to(alice, message))["type"] == "transcription"
        refused = await answer_to(alice, message)
        assert refused["type"] == "error"
        assert "too many recordings" in refused["message"]
        assert "retry in" in refused["message"]
        await alice.send_message('{"type": "ping"}')
        assert json.loads(await alice.get_message()) == {"type": "pong"}


async def test_recordings_take_the_upload_slots(tmp_path: Path) -> None:
    """With one upload at a time per client, Alice's second connection's recording is refused
    while her first one's is transcribed; Bob's goes through (his own slot)."""
    model = FakeModel()
    model.gate.clear()
    app = app_with(tmp_path, model, max_uploads_per_client=1)
    async with (
        serve_app(app) as address,
        connect(f"ws://{address}/ws?token=key-alice") as first,
        connect(f"ws://{address}/ws?token=key-alice") as second,
        connect(f"ws://{address}/ws?token=key-bob") as bob,
        trio.open_nursery() as nursery,
    ):
        answers: dict[str, dict[str, Any]] = {}

        async def record(name: str, socket: Any) -> None:
            answers[name] = await answer_to(socket, recording(1))

        nursery.start_soon(record, "first", first)
        await trio.to_thread.run_sync(model.entered.wait)
        with trio.fail_after(10):
            answers["second"] = await answer_to(second, recording(1))
        assert answers["second"]["type"] == "error"
        assert "at most 1 uploads at once per client" in answers["second"]["message"]
        nursery.start_soon(record, "bob", bob)
        await trio.sleep(0.2)
        model.gate.set()
    assert answers["first"]["type"] == "transcription"
    assert answers["bob"]["type"] == "transcription"


BOMB = """
import resource, struct, sys
from actors.audio.stream_decoder import StreamingDecoder
from actors.audio.file_decoder import UndecodableAudio
size = 25 * 2**20  # 25 MiB of 8-bit 8 kHz PCM: 3,277 s of audio in one WAV message
fmt = struct.pack("<HHIIHH", 1, 1, 8000, 8000, 1, 8)
data = (b"RIFF" + struct.pack("<I", 36 + size) + b"WAVEfmt " + struct.pack("<I", 16) + fmt
        + b"data" + struct.pack("<I", size) + bytes(size))
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
try:
    StreamingDecoder().feed(data)
except UndecodableAudio as error:
    print(error.kind)
print((resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) / 1024)
"""


def test_a_large_wav_message_is_decoded_in_bounded_pieces() -> None:
    """A 25 MiB WAV decodes piece by piece and stops at the 60 s cap: its peak resident memory
    stays near three copies of the message (the demuxer's buffer and its packet); decoded as
    one packet before the fix, it took +734 MiB. Measured in a fresh process (ru_maxrss)."""
    root = Path(__file__).resolve().parents[2]
    run = subprocess.run(
        [sys.executable, "-c", BOMB], cwd=root, capture_output=True, text=True, check=True
    )
    kind, peak_mib = run.stdout.split()
    assert kind == "too_long"
    assert float(peak_mib) < 120, run.stdout


async def test_a_connection_without_recordings_holds_its_slot_only_the_idle_timeout(
    tmp_path: Path,
) -> None:
    """Pings alone do not keep a `/ws` connection that has sent no recording: it is closed at
    the idle timeout (2 s here), not the audio-idle one (600 s) it gets between recordings."""
    app = app_with(tmp_path, FakeModel(), idle_timeout_s=2.0)
    received: list[dict[str, Any]] = []
    async with serve_app(app) as address, connect(f"ws://{address}/ws?token=key-alice") as alice:
        begin = trio.current_time()
        with trio.fail_after(10):
            try:
                while True:
                    await alice.send_message('{"type": "ping"}')
                    received.append(json.loads(await alice.get_message()))
                    await trio.sleep(0.5)
            except ConnectionClosed:
                with contextlib.suppress(ConnectionClosed):
                    while True:  # what was sent before the close
                        received.append(json.loads(await alice.get_message()))
        assert trio.current_time() - begin < 4
    assert {"type": "pong"} in received
    assert "No audio for 2 s" in received[-1]["message"], received


async def test_recordings_connections_take_no_live_capacity(tmp_path: Path) -> None:
    """Eight idle `/ws` connections do not count as live streams: while the capacity meter is
    cold it admits eight streams, and a stream is still admitted beside them (before, they
    filled those eight and every stream got 503 `at_capacity`)."""
    app = app_with(tmp_path, FakeModel())
    async with serve_app(app) as address, contextlib.AsyncExitStack() as stack:
        for _ in range(8):
            await stack.enter_async_context(connect(f"ws://{address}/ws?token=key-alice"))
        assert len(runtime(app).live) == 8
        async with connect(f"ws://{address}/v1/stream?token=key-bob") as bob:
            ready = json.loads(await bob.get_message())
        assert ready["type"] == "ready", ready
