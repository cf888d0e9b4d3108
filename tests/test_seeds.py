"""The seed protocols, message for message, against a real server with tiny.en:
`WS /ws/v1/speech-to-text`, `WS /ws/{client_id}`, `WS /ws?stream=true` and `POST /transcribe`
(`WS /ws` as the 003 seed's README shows it: tests/test_seed_003.py)."""

from __future__ import annotations

import base64
import json
from pathlib import Path
from typing import Any

import httpx
from dialect_helpers import DATA, chunks, exchange, overlap, pcm16_file, reference, serving, speech

from actors.model.port import SpeechModel
from actors.model.sentiment import analyze
from protocol.dialects.seed_call import CallCodec
from protocol.dialects.seed_ws import LiveAudioCodec
from protocol.native import Final, Partial, Ready, SpeechStarted, Status, Stopped, UtteranceEnd

CLIP = "ljspeech_coqui/LJ001-0002.wav"  # "in being comparatively modern."
SECOND = "ljspeech_coqui/LJ001-0004.wav"


def _silence(seconds: float) -> bytes:
    return bytes(int(seconds * 16000) * 2)


def _kinds(messages: list[Any], key: str = "type") -> list[str]:
    return [m[key] for m in messages if isinstance(m, dict)]


async def test_speech_to_text_seed(tiny_model: SpeechModel, tmp_path: Path) -> None:
    audio = pcm16_file(speech(CLIP)) + _silence(1.0) + pcm16_file(speech(SECOND))
    start = {"event": "start", "config": {"language": "en", "sample_rate": 16000}, "words": True}
    outgoing: list[str | bytes] = [json.dumps(start), *chunks(audio, 6400), '{"event": "stop"}']
    async with serving(tiny_model, tmp_path) as address:  # details: what the README omits
        result = await exchange(f"ws://{address}/ws/v1/speech-to-text?details=true", outgoing)
    assert result.close_code == 1000
    kinds = _kinds(result.messages, "event")
    assert kinds[0] == "started" and kinds[-1] == "stopped"
    assert set(kinds) <= {"started", "transcript", "utterance_end", "stopped"}
    started = result.messages[0]
    assert set(started) == {"event", "session_id", "sample_rate", "language", "model"}
    assert (started["sample_rate"], started["language"], started["model"]) == (
        16000,
        "en",
        "tiny.en",
    )
    transcripts = result.of_type("transcript", "event")
    finals = [m for m in transcripts if m["is_final"]]
    assert len(finals) == 2
    for message in transcripts:
        base = {"event", "text", "is_final", "start", "end", "utterance"}
        assert set(message) == (
            base | {"confidence", "language", "words"} if message["is_final"] else base
        )
        assert isinstance(message["text"], str) and isinstance(message["utterance"], int)
        assert 0.0 <= message["start"] < message["end"] <= len(audio) / 32000 + 0.01
    for final in finals:
        assert isinstance(final["confidence"], float) and final["language"] == "en"
        assert all(set(w) == {"word", "start", "end", "confidence"} for w in final["words"])
    ends = result.of_type("utterance_end", "event")
    assert [m["utterance"] for m in ends] == [m["utterance"] for m in finals]
    assert all(set(m) == {"event", "text", "utterance", "at"} for m in ends)
    stopped = result.messages[-1]
    assert set(stopped) == {"event", "message", "session_id", "full_transcription", "duration"}
    assert stopped["session_id"] == started["session_id"]
    assert stopped["full_transcription"] == " ".join(m["text"] for m in finals)
    assert stopped["duration"] == round(len(audio) / 32000, 3)
    expected = reference(CLIP) + " " + reference(SECOND)
    assert overlap(stopped["full_transcription"], expected) >= 0.8


async def test_call_intelligence_seed(tiny_model: SpeechModel, tmp_path: Path) -> None:
    """Fresh-clone clips (espeak-ng), base64 in `audio_chunk`s; sentiment is on by default."""
    audio = pcm16_file(DATA / "weather.wav") + _silence(0.8) + pcm16_file(DATA / "garden.wav")
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
    kinds = _kinds(result.messages)
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


async def test_live_audio_streaming_dialect(tiny_model: SpeechModel, tmp_path: Path) -> None:
    """`/ws?stream=true`: Chorus's earlier streaming `/ws` (PCM in binary frames and base64
    `audio` messages mixed), kept for its clients; the seeds' own shapes, a recording per
    message, are the default (tests/test_seed_003.py)."""
    audio = pcm16_file(DATA / "weather.wav") + _silence(1.0)
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


async def test_chatserver_transcribe_takes_a_name_or_a_code(
    tiny_model: SpeechModel, tmp_path: Path
) -> None:
    clip = (DATA / "garden.wav").read_bytes()
    async with (
        serving(tiny_model, tmp_path) as address,
        httpx.AsyncClient(base_url=f"http://{address}", timeout=60) as http,
    ):
        answers = [
            await http.post(
                "/transcribe?verbose=true",
                files={"file": ("garden.wav", clip, "audio/wav")},
                data={"language": language},
            )
            for language in ("english", "en", "English")
        ]
        no_language = await http.post("/transcribe?verbose=1", files={"file": ("g.wav", clip)})
    for answer in [*answers, no_language]:
        assert answer.status_code == 200
        body = answer.json()
        assert set(body) == {"transcript", "language", "duration"}
        assert body["language"] == "en"
        assert (
            overlap(body["transcript"], "my grandmother planted tomatoes and roses in her garden")
            >= 0.7
        )


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


def test_call_codec_partials_have_a_sentiment_when_asked_for() -> None:
    codec = CallCodec("c", analyze=analyze, interim=True, clock=lambda: 1735689600000)
    [message] = codec.encode(Partial(utterance=0, revision=1, text="great", start=0, end=1))
    decoded = json.loads(message)
    assert decoded["sentiment"]["type"] == "positive" and decoded["is_final"] is False
    assert decoded["timestamp"] == 1735689600000
    assert CallCodec("c").encode(Partial(utterance=0, revision=1, text="x", start=0, end=1)) == []
