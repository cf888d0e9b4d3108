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
from support.dialect_helpers import (
    DATA,
    chunks,
    exchange,
    message_kinds,
    overlap,
    pcm16_file,
    serving,
    silence,
)

from actors.model.port import SpeechModel
from actors.model.sentiment import analyze
from protocol.dialects.seed_call import CallCodec
from protocol.native import Final, Partial, SpeechStarted, Stopped, UtteranceEnd

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


def _call_audio() -> bytes:
    weather, garden = pcm16_file(DATA / "weather.wav"), pcm16_file(DATA / "garden.wav")
    return weather + silence(1.0) + garden + silence(1.0)


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


# -- beyond the README: `?details=true`, sentiment off, partials' sentiment (were test_seeds.py) --


async def test_call_intelligence_seed(tiny_model: SpeechModel, tmp_path: Path) -> None:
    """Fresh-clone clips (espeak-ng), base64 in `audio_chunk`s; sentiment is on by default."""
    audio = pcm16_file(DATA / "weather.wav") + silence(0.8) + pcm16_file(DATA / "garden.wav")
    outgoing: list[str | bytes] = [json.dumps({"type": "ping", "timestamp": 1})]
    for index, piece in enumerate(chunks(audio, 3200)):
        payload = {
            "type": "audio_chunk",
            "audio_data": base64.b64encode(piece).decode(),
            "timestamp": 1700000000.0 + index * 0.1,
        }
        outgoing.append(json.dumps(payload))
    outgoing.append('{"type": "stop"}')
    async with serving(tiny_model, tmp_path) as address:  # details: what the README omits
        result = await exchange(f"ws://{address}/ws/agent-42?details=true", outgoing)
    assert result.close_code == 1000
    kinds = message_kinds(result.messages)
    assert kinds[0] == "connected" and kinds[-1] == "stopped" and "pong" in kinds
    connected = result.messages[0]
    assert set(connected) == {"type", "client_id", "session_id", "sample_rate", "timestamp"}
    assert connected["client_id"] == "agent-42"
    [pong] = result.of_type("pong")
    assert set(pong) == {"type", "timestamp"} and isinstance(pong["timestamp"], int)
    transcriptions = result.of_type("transcription")
    finals = [m for m in transcriptions if m["is_final"]]
    assert len(finals) == 2
    for message in transcriptions:
        base = {
            "type",
            "client_id",
            "text",
            "is_final",
            "start",
            "end",
            "utterance",
            "timestamp",
            "sentiment",
        }
        assert set(message) == base | {"confidence", "language"}  # finals only: no interim
        assert message["client_id"] == "agent-42" and message["is_final"]
    for final in finals:
        sentiment = final["sentiment"]
        assert set(sentiment) == {"type", "confidence", "polarity", "subjectivity"}
        assert sentiment["type"] in {"positive", "negative", "neutral"}
        assert -1.0 <= sentiment["polarity"] <= 1.0 and 0.0 <= sentiment["subjectivity"] <= 1.0
        assert 0.5 <= sentiment["confidence"] <= 1.0
        expected = analyze(final["text"])  # the sentiment of exactly the text that was sent
        assert sentiment["polarity"] == expected.polarity
    said = " ".join(m["text"] for m in finals)
    assert overlap(said, "the weather today is sunny with a light breeze from the west") >= 0.7
    assert overlap(said, "my grandmother planted tomatoes and roses in her garden") >= 0.7
    assert finals[0]["sentiment"]["type"] == "positive"  # "sunny", "light": TextBlob says so
    stopped = result.messages[-1]
    assert set(stopped) == {"type", "client_id", "session_id", "transcript", "duration"}


async def test_call_intelligence_sentiment_can_be_turned_off(
    tiny_model: SpeechModel, tmp_path: Path
) -> None:
    outgoing: list[str | bytes] = [
        *chunks(pcm16_file(DATA / "library.wav"), 8000),
        '{"type": "end_call"}',
    ]
    async with serving(tiny_model, tmp_path) as address:
        result = await exchange(f"ws://{address}/ws/desk-1?sentiment=false", outgoing)
    finals = result.of_type("transcription")
    assert finals and all(m["sentiment"] is None for m in finals)
    assert result.close_code == 1000


def test_call_codec_partials_have_a_sentiment_when_asked_for() -> None:
    codec = CallCodec("c", analyze=analyze, interim=True, clock=lambda: 1735689600000)
    [message] = codec.encode(Partial(utterance=0, revision=1, text="great", start=0, end=1))
    decoded = json.loads(message)
    assert decoded["sentiment"]["type"] == "positive" and decoded["is_final"] is False
    assert decoded["timestamp"] == 1735689600000
    assert CallCodec("c").encode(Partial(utterance=0, revision=1, text="x", start=0, end=1)) == []
