"""The "Audio WebSocket API" seed (003; also 000, "Live Audio Transcript"), `WS /ws`, message
for message as its README shows, against a real server on tiny.en with real speech: whole
recordings (WAV over the 64 KiB JSON limit, WebM, Ogg, MP3) and MediaRecorder-sized WebM
chunks, each answered with `status` then `transcription`; `error` for what cannot be decoded or
is too big. Also `GET /health`'s active connections."""

from __future__ import annotations

import base64
import io
import json
import sys
import wave
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
import trio
from support.dialect_helpers import (
    DATA,
    chunks,
    exchange,
    load_make_clips,
    overlap,
    pcm16_file,
    serving,
    silence,
)
from support.ws_client import connect

from actors.audio.file_decoder import decode_file
from actors.model.port import SpeechModel
from bench.soak import wav_declaring
from protocol.dialects.seed_ws import LiveAudioCodec
from protocol.native import Final, Ready, SpeechStarted, Status, Stopped, UtteranceEnd

# The README's "WebSocket Message Format", copied as it stands.
README_AUDIO = """{
  "type": "audio",
  "audio": "base64_encoded_audio_data"
}"""
README_STATUS = """{
  "type": "status",
  "message": "Processing audio..."
}"""
README_TRANSCRIPTION = """{
  "type": "transcription",
  "text": "Your transcribed text here",
  "status": "success"
}"""
README_ERROR = """{
  "type": "error",
  "message": "Error description"
}"""

WEATHER = "the weather today is sunny with a light breeze from the west"
GARDEN = "my grandmother planted tomatoes and roses in her garden"
LIBRARY = "please return the library books before friday afternoon"
FOX = "the quick brown fox jumps over the lazy dog while the radio plays quietly"


def audio_message(recording: bytes) -> str:
    """The README's audio message, with the recording in place of its placeholder."""
    message = json.loads(README_AUDIO)
    message["audio"] = base64.b64encode(recording).decode()
    return json.dumps(message, indent=2)  # laid out as the README shows it


def same_shape(message: Any, example: str) -> None:
    """`message` has the README example's keys, in its order, with its value types; the
    tag and any fixed value (`status`, the status `message`) are the example's too."""
    expected = json.loads(example)
    assert isinstance(message, dict), message
    assert list(message) == list(expected), message
    for key, value in expected.items():
        assert type(message[key]) is type(value), (key, message)
    assert message["type"] == expected["type"]
    if expected["type"] == "transcription":
        assert message["status"] == "success"
    if expected["type"] == "status":
        assert message["message"] == expected["message"]


async def converse(address: str, outgoing: list[str]) -> list[Any]:
    """Send each message and read its answers, up to its `transcription` or `error`, as the
    README's client does; then leave (the server waits for more recordings)."""
    received: list[Any] = []
    with trio.fail_after(240):  # a guard against a hang, not a timing assertion
        async with connect(f"ws://{address}/ws") as socket:
            for message in outgoing:
                await socket.send_message(message)
                while True:
                    received.append(json.loads(await socket.get_message()))
                    if received[-1]["type"] in ("transcription", "error"):
                        break
    return received


def answered(messages: list[Any]) -> list[str]:
    """The transcriptions' texts, after checking that each is preceded by its status."""
    texts = []
    for status, transcription in zip(messages[::2], messages[1::2], strict=True):
        same_shape(status, README_STATUS)
        same_shape(transcription, README_TRANSCRIPTION)
        texts.append(transcription["text"])
    return texts


def wav_of(*names: str, pause_s: float = 1.0) -> bytes:
    """A 16 kHz mono WAV recording of the clips, `pause_s` apart."""
    silence = np.zeros(int(pause_s * 16000), np.float32)
    pieces = [part for name in names for part in (decode_file(DATA / name), silence)]
    pcm = (np.clip(np.concatenate(pieces), -1, 1) * 32767).astype("<i2").tobytes()
    buffer = io.BytesIO()
    with wave.open(buffer, "wb") as out:
        out.setnchannels(1)
        out.setsampwidth(2)
        out.setframerate(16000)
        out.writeframes(pcm)
    return buffer.getvalue()


def media_recorder_webm(*names: str, pause_s: float = 1.0) -> bytes:
    """What a browser's MediaRecorder records: Opus in live WebM, 48 kHz mono, 1 s clusters."""
    import soxr

    silence = np.zeros(int(pause_s * 16000), np.float32)
    pieces = [part for name in names for part in (decode_file(DATA / name), silence)]
    voice = soxr.resample(np.concatenate(pieces), 16000, 48000).astype(np.float32)
    return bytes(
        load_make_clips().encode_clip(
            voice[np.newaxis, :],
            48000,
            container="webm",
            codec="libopus",
            options={"b": "32000"},
            container_options={"live": "1", "cluster_time_limit": "1000"},
        )
    )


async def test_a_whole_wav_recording_over_64_kib_is_transcribed(
    tiny_model: SpeechModel, tmp_path: Path
) -> None:
    recording = wav_of("weather.wav", "garden.wav", "library.wav")
    message = audio_message(recording)
    assert len(message) > 64 * 1024  # refused as `frame_too_large` before
    async with serving(tiny_model, tmp_path) as address:
        messages = await converse(address, [message, message])
    [first, second] = answered(messages)
    assert first == second
    assert overlap(first, f"{WEATHER} {GARDEN} {LIBRARY}") >= 0.7, first


async def test_webm_ogg_and_mp3_recordings_on_one_connection(
    tiny_model: SpeechModel, tmp_path: Path
) -> None:
    names = ["speech_48k_mono_opus.webm", "speech_48k_stereo_opus.ogg", "speech_44k_stereo.mp3"]
    outgoing = [audio_message((DATA / name).read_bytes()) for name in names]
    async with serving(tiny_model, tmp_path) as address:
        messages = await converse(address, outgoing)
    texts = answered(messages)
    assert len(texts) == 3
    for text in texts:
        assert overlap(text, FOX) >= 0.5 and "radio plays quietly" in text.lower(), text


async def test_media_recorder_chunks_each_get_a_status_and_a_transcription(
    tiny_model: SpeechModel, tmp_path: Path
) -> None:
    """A first chunk with the WebM header, then continuation chunks, ~3 s each (`timeslice`
    3000 at 32 kb/s), then a second recording on the same connection."""
    recording = media_recorder_webm("weather.wav", "garden.wav", "library.wav")
    size = 12_000
    chunks = [recording[offset : offset + size] for offset in range(0, len(recording), size)]
    assert len(chunks) >= 4
    outgoing = [audio_message(chunk) for chunk in chunks]
    outgoing.append(audio_message((DATA / "garden.wav").read_bytes()))
    async with serving(tiny_model, tmp_path) as address:
        messages = await converse(address, outgoing)
    texts = answered(messages)
    assert len(texts) == len(chunks) + 1
    assert overlap(" ".join(texts[:-1]), f"{WEATHER} {GARDEN} {LIBRARY}") >= 0.6, texts
    assert overlap(texts[-1], GARDEN) >= 0.7


async def test_what_cannot_be_decoded_is_an_error_and_the_connection_goes_on(
    tiny_model: SpeechModel, tmp_path: Path
) -> None:
    good = audio_message((DATA / "weather.wav").read_bytes())
    outgoing = [
        audio_message(b"this is not audio at all"),  # no recording started: not a header
        audio_message(wav_declaring(1, bytes(40_000))),  # a decoding bomb: 1 Hz declared
        '{"type": "audio", "audio": "not base64!"}',
        '{"type": "dance"}',
        "plain text",
        good,
    ]
    async with serving(tiny_model, tmp_path) as address:
        messages = await converse(address, outgoing)
    same_shape(messages[0], README_STATUS)
    same_shape(messages[1], README_ERROR)
    same_shape(messages[2], README_STATUS)
    same_shape(messages[3], README_ERROR)
    assert "1 Hz" in messages[3]["message"]
    for error in messages[4:7]:  # bad messages: no status, nothing was processed
        same_shape(error, README_ERROR)
    [text] = answered(messages[7:])
    assert overlap(text, WEATHER) >= 0.7


def _rss_kib() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise AssertionError("no VmRSS")


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc for memory")
async def test_a_message_over_the_audio_limit_is_an_error_and_memory_stays_flat(
    tiny_model: SpeechModel, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A message a little over `CHORUS_MAX_AUDIO_MESSAGE_BYTES` (within the 64 KiB the server
    allows past it) is refused by the app with `error`, nothing of it is kept, and the
    connection goes on; bigger ones are closed with 1009 at the door
    (tests/attacks/test_attacks.py)."""
    monkeypatch.setenv("CHORUS_MAX_AUDIO_MESSAGE_BYTES", str(4 << 20))
    recording = (DATA / "garden.wav").read_bytes()
    raw = ((4 << 20) + 16_000) * 3 // 4  # base64 of this is 16 kB over the limit
    too_big = audio_message((recording * 40)[:raw])
    assert 4 << 20 < len(too_big) < (4 << 20) + (64 << 10)
    async with (
        serving(tiny_model, tmp_path) as address,
        connect(f"ws://{address}/ws") as socket,
    ):
        before = 0
        for round in range(8):  # the first two warm the allocator up (glibc keeps freed space)
            before = _rss_kib() if round == 2 else before
            await socket.send_message(too_big)
            with trio.fail_after(30):
                error = json.loads(await socket.get_message())
            same_shape(error, README_ERROR)
            assert str(4 << 20) in error["message"]
        grown = _rss_kib() - before
        await socket.send_message(audio_message(recording))
        with trio.fail_after(120):
            status = json.loads(await socket.get_message())
            transcription = json.loads(await socket.get_message())
    del too_big
    assert grown < 8 * 1024, f"grew by {grown} KiB"  # kept, six would be 6 x 4.2 MB at least
    same_shape(status, README_STATUS)
    same_shape(transcription, README_TRANSCRIPTION)
    assert overlap(transcription["text"], GARDEN) >= 0.7


async def test_health_counts_active_connections(tiny_model: SpeechModel, tmp_path: Path) -> None:
    async with (
        serving(tiny_model, tmp_path) as address,
        httpx.AsyncClient(base_url=f"http://{address}") as http,
    ):
        assert (await http.get("/health")).json()["active_connections"] == 0
        async with connect(f"ws://{address}/ws") as one, connect(f"ws://{address}/ws") as two:
            for socket in (one, two):
                await socket.send_message('{"type": "ping"}')
                assert json.loads(await socket.get_message()) == {"type": "pong"}
            body = (await http.get("/health")).json()
            assert body["active_connections"] == 2 and isinstance(body["status"], str)


# -- `/ws?stream=true`: Chorus's earlier streaming `/ws`, kept for its clients (were test_seeds.py)


async def test_live_audio_streaming_dialect(tiny_model: SpeechModel, tmp_path: Path) -> None:
    """`/ws?stream=true`: Chorus's earlier streaming `/ws` (PCM in binary frames and base64
    `audio` messages mixed), kept for its clients; the seeds' own shapes, a recording per
    message, are the default (tests/e2e/test_seed_003.py)."""
    audio = pcm16_file(DATA / "weather.wav") + silence(1.0)
    pieces = chunks(audio, 4000)
    outgoing: list[str | bytes] = [
        piece
        if index % 2
        else json.dumps({"type": "audio", "audio": base64.b64encode(piece).decode()})
        for index, piece in enumerate(pieces)
    ]
    outgoing += ['{"type": "ping"}', '{"type": "stop"}']
    async with serving(tiny_model, tmp_path) as address:
        result = await exchange(f"ws://{address}/ws?stream=true&interim=true", outgoing)
    assert result.close_code == 1000
    statuses = [m["status"] for m in result.of_type("status")]
    assert statuses[:2] == ["connected", "listening"]
    assert "speaking" in statuses and statuses[-1] == "stopped"
    assert statuses.index("speaking") < len(statuses) - 1
    assert result.messages[0]["session_id"]
    transcriptions = result.of_type("transcription")
    finals = [m for m in transcriptions if m["status"] == "final"]
    assert len(finals) == 1
    for message in transcriptions:
        base = {"type", "text", "status", "is_final", "start", "end", "utterance"}
        assert set(message) == (base | {"confidence"} if message["is_final"] else base)
        assert message["is_final"] == (message["status"] == "final")
    assert (
        overlap(finals[0]["text"], "the weather today is sunny with a light breeze from the west")
        >= 0.7
    )
    assert result.messages[-1] == {
        "type": "status",
        "status": "stopped",
        "transcript": finals[0]["text"],
    }
    assert result.of_type("pong") == [{"type": "pong"}]


def test_live_audio_status_follows_speech_not_message_order() -> None:
    """A new utterance may start before the previous one's final is out: stay `speaking`."""
    codec = LiveAudioCodec()
    ready = Ready(session_id="s", model="m", sample_rate=16000, language="en")
    assert [json.loads(m)["status"] for m in codec.encode(ready)] == ["connected", "listening"]
    assert json.loads(codec.encode(SpeechStarted(at=0.5))[0])["status"] == "speaking"
    assert codec.encode(SpeechStarted(at=4.0)) == []  # still speaking: no repeat
    final = Final(utterance=0, text="hi", start=0.5, end=3.0, language="en", confidence=1.0)
    assert json.loads(codec.encode(final)[0])["status"] == "final"
    assert codec.encode(UtteranceEnd(utterance=0, at=3.0)) == []  # speech began again at 4.0
    assert json.loads(codec.encode(UtteranceEnd(utterance=1, at=6.0))[0])["status"] == "listening"
    lag = [json.loads(m) for m in codec.encode(Status(lag_s=2.5, queue=3, degraded=False))]
    assert lag == [{"type": "status", "status": "lagging", "lag_s": 2.5}]
    caught_up = codec.encode(Status(lag_s=0.2, queue=0, degraded=False))
    assert json.loads(caught_up[0]) == {"type": "status", "status": "listening"}
    stopped = Stopped(session_id="s", transcript="hi", duration_s=6.0, utterances=1)
    assert json.loads(codec.encode(stopped)[0])["status"] == "stopped"
