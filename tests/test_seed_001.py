"""Seed 001, "Real-Time Call Intelligence" (`WS /ws/{client_id}`, `GET /health`, `GET /`): a
client written from its README alone, on real speech with tiny.en (conftest's `tiny_model`).

The client messages are the README's JSON examples verbatim (the audio and timestamp filled
in); the answers are checked key by key and type by type against the README's messages."""

from __future__ import annotations

import base64
import json
import time
from pathlib import Path
from typing import Any

import httpx
import msgspec
from dialect_helpers import DATA, chunks, exchange, overlap, pcm16_file, serving

from actors.model.port import SpeechModel
from actors.model.sentiment import analyze
from protocol.dialects.seed_call import CallCodec
from protocol.native import Final, SpeechStarted, Stopped, UtteranceEnd

# The README's client messages, copied as they are written there.
AUDIO_CHUNK = """{
  "type": "audio_chunk",
  "audio_data": "base64_encoded_audio_data",
  "timestamp": 1234567890000
}"""
PING = """{
  "type": "ping"
}"""
STOP = '{"type": "stop"}'  # not in the README (its client just closes): ends the test's call

WEATHER = "the weather today is sunny with a light breeze from the west"
GARDEN = "my grandmother planted tomatoes and roses in her garden"


def _audio_chunks(audio: bytes, size: int = 3200) -> list[str]:
    """The README's `audio_chunk` example with each piece of PCM as its `audio_data`."""
    template = json.loads(AUDIO_CHUNK)
    return [
        json.dumps(template | {"audio_data": base64.b64encode(piece).decode()})
        for piece in chunks(audio, size)
    ]


def _silence(seconds: float) -> bytes:
    return bytes(int(seconds * 16000) * 2)


def _call_audio() -> bytes:
    weather, garden = pcm16_file(DATA / "weather.wav"), pcm16_file(DATA / "garden.wav")
    return weather + _silence(1.0) + garden + _silence(1.0)


def _check_sentiment(sentiment: Any) -> None:
    assert list(sentiment) == ["type", "confidence", "polarity", "subjectivity"]
    assert sentiment["type"] in {"positive", "negative", "neutral"}
    assert all(isinstance(sentiment[key], float) for key in list(sentiment)[1:])
    assert -1.0 <= sentiment["polarity"] <= 1.0 and 0.0 <= sentiment["subjectivity"] <= 1.0


async def test_a_readme_client_gets_one_transcription_per_piece_and_no_partials(
    tiny_model: SpeechModel, tmp_path: Path
) -> None:
    outgoing = [PING, *_audio_chunks(_call_audio()), STOP]
    before = time.time_ns() // 1_000_000
    async with serving(tiny_model, tmp_path) as address:
        # paced as a live call, so that partials would be made if they were on
        result = await exchange(f"ws://{address}/ws/agent-42", outgoing, pace_s=0.05)
    after = time.time_ns() // 1_000_000
    assert result.close_code == 1000
    kinds = [m["type"] for m in result.messages]
    assert set(kinds) == {"pong", "transcription"}  # no `connected`, `stopped`, partials

    assert result.of_type("pong") == [{"type": "pong"}]

    transcriptions = result.of_type("transcription")
    assert len(transcriptions) == 2  # one per piece of speech: no partials by default
    for message in transcriptions:
        assert list(message) == ["type", "text", "sentiment", "timestamp"]
        assert isinstance(message["text"], str) and message["text"]
        _check_sentiment(message["sentiment"])
        assert message["sentiment"] == _plain(analyze(message["text"]))
        assert type(message["timestamp"]) is int  # integer milliseconds
        assert before <= message["timestamp"] <= after
    weather, garden = (m["text"] for m in transcriptions)
    assert overlap(weather, WEATHER) >= 0.7 and overlap(garden, GARDEN) >= 0.7
    assert transcriptions[0]["sentiment"]["type"] == "positive"  # "sunny", "light"


def _plain(value: Any) -> Any:
    return msgspec.to_builtins(value)


async def test_partials_and_details_only_when_the_query_asks(
    tiny_model: SpeechModel, tmp_path: Path
) -> None:
    outgoing = [*_audio_chunks(_call_audio()), STOP]
    async with serving(tiny_model, tmp_path) as address:
        url = f"ws://{address}/ws/desk-7?interim=true&details=true"
        result = await exchange(url, outgoing, pace_s=0.05)  # partials need time to be made
    assert result.messages[0]["type"] == "connected"
    assert type(result.messages[0]["timestamp"]) is int
    assert result.messages[-1]["type"] == "stopped" and result.close_code == 1000
    transcriptions = result.of_type("transcription")
    partials = [m for m in transcriptions if not m["is_final"]]
    finals = [m for m in transcriptions if m["is_final"]]
    assert partials and len(finals) == 2
    for message in transcriptions:
        _check_sentiment(message["sentiment"])  # partials too: never null
        assert message["client_id"] == "desk-7" and type(message["timestamp"]) is int


async def test_health_counts_active_connections_and_root_negotiates(
    tiny_model: SpeechModel, tmp_path: Path
) -> None:
    async with (
        serving(tiny_model, tmp_path) as address,
        httpx.AsyncClient(base_url=f"http://{address}", timeout=30) as http,
    ):
        health = (await http.get("/health")).json()
        as_json = await http.get("/", headers={"Accept": "application/json"})
        page = await http.get("/", headers={"Accept": "text/html,application/json;q=0.9"})
    assert health["active_connections"] == 0 and health["status"] == "ok"
    assert "sessions" in health  # what was there stays
    assert as_json.headers["content-type"] == "application/json"
    assert as_json.json()["status"] == "running"
    assert page.headers["content-type"].startswith("text/html")


def test_a_piece_shorter_than_two_seconds_waits_for_the_next() -> None:
    """The README's 2 s buffer: short pieces are joined, with the sentiment of the whole."""
    codec = CallCodec("c", analyze=analyze, clock=lambda: 1234567890000)

    def final(utterance: int, text: str, start: float, end: float) -> Final:
        return Final(utterance=utterance, text=text, start=start, end=end, language="en",
                     confidence=0.9)  # fmt: skip

    assert codec.encode(final(0, "Hello.", 0.2, 0.9)) == []
    assert codec.encode(UtteranceEnd(utterance=0, at=1.4)) == []  # 1.2 s since it began
    [joined] = [json.loads(m) for m in codec.encode(final(1, "What a lovely day.", 1.6, 3.0))]
    assert joined["text"] == "Hello. What a lovely day."
    assert joined["sentiment"] == _plain(analyze("Hello. What a lovely day."))
    assert joined["timestamp"] == 1234567890000

    assert codec.encode(final(2, "Yes.", 5.0, 5.4)) == []
    [released] = codec.encode(SpeechStarted(at=8.0))  # 3 s since "Yes." began
    assert json.loads(released)["text"] == "Yes."
    assert codec.encode(final(3, "Bye.", 9.0, 9.3)) == []
    stopped = Stopped(session_id="s", transcript="", duration_s=10.0, utterances=4)
    assert [json.loads(m)["text"] for m in codec.encode(stopped)] == ["Bye."]  # held: sent
