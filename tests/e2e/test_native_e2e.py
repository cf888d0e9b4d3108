"""`/v1/stream` end to end: hypercorn on 127.0.0.1:0, trio-websocket, the real tiny.en model."""

from __future__ import annotations

import itertools
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import attrs
import httpx
import jiwer
import numpy as np
import trio
from conftest import serve_app
from starlette.applications import Starlette
from starlette.routing import Mount
from support.audio_files import DATA, load
from support.ws_client import connect, receive_all, send_audio, send_json

from actors.model.port import SpeechModel
from service.app import create_app
from service.config import Settings
from service.runtime import runtime

SETTINGS = Settings(model="tiny.en", partial_interval_s=0.5)


def words(text: str) -> set[str]:
    return {word.strip(".,!?").lower() for word in text.split()}


def normalize(text: str) -> str:
    return " ".join(word.strip(".,!?-").lower() for word in text.replace("-", " ").split())


async def test_words_arrive_as_partials_then_finals(tiny_model: SpeechModel) -> None:
    app = create_app(SETTINGS, model=tiny_model)
    audio = np.concatenate(
        [
            load(DATA / "weather.wav"),
            np.zeros(16000, np.float32),
            load(DATA / "library.wav"),
            np.zeros(16000, np.float32),
        ]
    )
    async with serve_app(app) as address, connect(f"ws://{address}/v1/stream?language=en") as ws:
        await send_audio(ws, audio, pace=4.0)
        await send_json(ws, {"type": "stop"})
        frames = await receive_all(ws)
    kinds = [frame["type"] for frame in frames]
    assert kinds[0] == "ready" and kinds[-1] == "stopped"
    finals = [frame for frame in frames if frame["type"] == "final"]
    said = words(" ".join(final["text"] for final in finals))
    assert {"weather", "sunny", "breeze", "library", "books", "friday"} <= said
    first_partial = kinds.index("partial")
    assert first_partial < kinds.index("final")
    assert frames[-1]["transcript"] == " ".join(final["text"] for final in finals)
    assert all(0 <= f["start"] < f["end"] <= len(audio) / 16000 + 0.01 for f in finals)
    assert ws.closed is not None and ws.closed.code == 1000


async def test_finalize_mid_stream_then_more_audio_loses_nothing(
    tiny_model: SpeechModel,
) -> None:
    app = create_app(SETTINGS, model=tiny_model)
    garden = load(DATA / "garden.wav")
    cut = int(len(garden) * 0.55)
    async with serve_app(app) as address, connect(f"ws://{address}/v1/stream") as ws:
        await send_audio(ws, garden[:cut])
        await send_json(ws, {"type": "finalize"})
        await send_audio(ws, np.concatenate([garden[cut:], np.zeros(16000, np.float32)]))
        await send_json(ws, {"type": "stop"})
        frames = await receive_all(ws)
    finals = [frame for frame in frames if frame["type"] == "final"]
    assert finals[0]["from_finalize"] is True and len(finals) >= 2
    said = words(" ".join(final["text"] for final in finals))
    assert {"grandmother", "tomatoes", "garden"} <= said


async def test_silence_and_low_noise_produce_no_words(tiny_model: SpeechModel) -> None:
    app = create_app(attrs.evolve(SETTINGS, pace=0), model=tiny_model)  # a minute, at once
    rng = np.random.default_rng(3)
    inputs = {
        "silence": np.zeros(60 * 16000, np.float32),
        "noise": (rng.standard_normal(60 * 16000) * 0.005).astype(np.float32),
    }
    async with serve_app(app) as address:
        for audio in inputs.values():
            async with connect(f"ws://{address}/v1/stream") as ws:
                await send_audio(ws, audio, chunk_s=0.5)
                await send_json(ws, {"type": "stop"})
                frames = await receive_all(ws)
            spoken = [f for f in frames if f["type"] in ("partial", "final") and f["text"]]
            assert spoken == []
            assert frames[-1]["type"] == "stopped" and frames[-1]["transcript"] == ""
            assert abs(frames[-1]["duration_s"] - 60.0) < 0.01


async def test_eight_sessions_share_batches_and_keep_their_own_words(
    tiny_model: SpeechModel,
) -> None:
    app = create_app(SETTINGS, model=tiny_model)
    clips = {
        "weather": {"weather", "sunny", "breeze"},
        "library": {"library", "books", "friday"},
        "garden": {"grandmother", "tomatoes", "garden"},
    }
    names = [list(clips)[index % 3] for index in range(8)]
    heard: dict[int, set[str]] = {}

    async def session(index: int, name: str) -> None:
        audio = np.concatenate([load(DATA / f"{name}.wav"), np.zeros(16000, np.float32)])
        async with connect(f"ws://{address}/v1/stream") as ws:
            await send_audio(ws, audio, pace=1.0)
            await send_json(ws, {"type": "stop"})
            frames = await receive_all(ws)
        heard[index] = words(frames[-1]["transcript"])

    async with serve_app(app) as address:
        async with trio.open_nursery() as nursery:
            for index, name in enumerate(names):
                nursery.start_soon(session, index, name)
        stats = runtime(app).transcriber.statistics()
    for index, name in enumerate(names):
        assert clips[name] <= heard[index], (name, heard[index])
        for other, other_words in clips.items():
            if other != name:
                assert not (other_words - clips[name]) & heard[index]
    assert max(stats.batch_sizes) > 1, stats.batch_sizes


async def test_mounted_under_a_parent_app(tiny_model: SpeechModel) -> None:
    chorus = create_app(SETTINGS, model=tiny_model)

    @asynccontextmanager
    async def lifespan(parent: Starlette) -> AsyncIterator[None]:
        async with chorus.router.lifespan_context(chorus):
            yield

    parent = Starlette(routes=[Mount("/stt", app=chorus)], lifespan=lifespan)
    async with serve_app(parent) as address:
        async with httpx.AsyncClient() as http:
            health = (await http.get(f"http://{address}/stt/health")).json()
        assert health["status"] == "ok" and health["model"] == "tiny.en"
        async with connect(f"ws://{address}/stt/v1/stream") as ws:
            await send_audio(
                ws, np.concatenate([load(DATA / "weather.wav"), np.zeros(16000, np.float32)])
            )
            await send_json(ws, {"type": "stop"})
            frames = await receive_all(ws)
    assert "weather" in words(frames[-1]["transcript"])


async def test_webm_opus_chunks_transcribe_like_pcm(tiny_model: SpeechModel) -> None:
    """A MediaRecorder-style webm/opus stream in 250 ms chunks, `encoding=auto`."""
    app = create_app(SETTINGS, model=tiny_model)
    webm = (DATA / "speech_48k_mono_opus.webm").read_bytes()
    seconds = 3.5
    chunk = max(1, int(len(webm) * 0.25 / seconds))
    transcripts = {}
    async with serve_app(app) as address:
        async with connect(f"ws://{address}/v1/stream?encoding=auto") as ws:
            for offset in range(0, len(webm), chunk):
                await ws.send_message(webm[offset : offset + chunk])
            await send_json(ws, {"type": "stop"})
            transcripts["webm"] = (await receive_all(ws))[-1]["transcript"]
        async with connect(f"ws://{address}/v1/stream") as ws:
            await send_audio(ws, load(DATA / "speech_48k_mono_opus.webm"))
            await send_json(ws, {"type": "stop"})
            transcripts["pcm"] = (await receive_all(ws))[-1]["transcript"]
    # Opus is lossy, so the model may hear a word a little differently ("not while" against
    # "non-while" on an AVX2-only CPU): the two may differ by one word in five, no more. A
    # broken demuxer (lost or repeated packets, wrong timing) reads far worse than that.
    assert len(transcripts["pcm"].split()) >= 4
    assert jiwer.wer(normalize(transcripts["pcm"]), normalize(transcripts["webm"])) <= 0.2


async def test_undecodable_auto_stream_is_refused_with_a_reason(tiny_model: SpeechModel) -> None:
    app = create_app(SETTINGS, model=tiny_model)
    async with serve_app(app) as address, connect(f"ws://{address}/v1/stream?encoding=auto") as ws:
        await ws.send_message(b"this is plainly not an audio container" * 10)
        frames = await receive_all(ws)
    errors = [f for f in frames if f["type"] == "error"]
    assert errors[0]["code"] == "undecodable_audio" and errors[0]["fatal"] is True
    assert frames[-1]["type"] == "stopped"
    assert ws.closed is not None and ws.closed.code == 1003


async def test_session_that_stops_reading_does_not_wedge_the_connection(
    tiny_model: SpeechModel,
) -> None:
    """The app stops reading (a fatal error) while the client keeps sending: hypercorn's
    bounded app queue fills, and the route must drain it or the connection never closes."""
    app = create_app(SETTINGS, model=tiny_model)
    with trio.fail_after(30):
        async with serve_app(app) as address:
            async with connect(f"ws://{address}/v1/stream?encoding=auto") as ws:
                await ws.send_message(b"not audio at all" * 20)
                for _ in range(60):
                    await ws.send_message(b"\0" * 3200)
                frames = await receive_all(ws)
            assert frames[-1]["type"] == "stopped"
            async with httpx.AsyncClient() as http:  # and the server still serves
                assert (await http.get(f"http://{address}/health")).status_code == 200


async def test_word_timestamps_are_session_times_inside_their_final(
    tiny_model: SpeechModel,
) -> None:
    app = create_app(SETTINGS, model=tiny_model)
    pause = np.zeros(24000, np.float32)
    audio = np.concatenate([pause, load(DATA / "weather.wav"), pause, load(DATA / "garden.wav")])
    async with serve_app(app) as address, connect(f"ws://{address}/v1/stream?words=true") as ws:
        await send_audio(ws, np.concatenate([audio, pause]))
        await send_json(ws, {"type": "stop"})
        frames = await receive_all(ws)
    finals = [frame for frame in frames if frame["type"] == "final"]
    assert len(finals) == 2
    for final in finals:
        timed = final["words"]
        assert [w["word"] for w in timed] == final["text"].split()
        assert all(final["start"] - 0.05 <= w["start"] <= w["end"] <= final["end"] for w in timed)
        assert all(a["start"] <= b["start"] for a, b in itertools.pairwise(timed))
    # seconds of the session's audio, not of the utterance: the second starts after the first
    assert finals[1]["words"][0]["start"] > finals[0]["words"][-1]["end"] + 1.0
    weather = next(w for w in finals[0]["words"] if w["word"].lower().strip(".,") == "weather")
    assert 1.5 <= weather["start"] <= 2.6  # said about 0.2 s into the clip, after 1.5 s of pause
