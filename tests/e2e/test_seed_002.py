"""Seed 002, "Speech-to-Text Backend API" (`WS /ws/v1/speech-to-text`): a client written from
its README alone, message for message, on real speech with tiny.en (conftest's `tiny_model`).

The client messages below are the README's JSON examples verbatim; the answers are checked key
by key and type by type against the README's server messages."""

from __future__ import annotations

import json
import uuid
from pathlib import Path

import httpx
from conftest import fetch_recording
from support.dialect_helpers import (
    DATA,
    chunks,
    exchange,
    message_kinds,
    overlap,
    pcm16_file,
    reference,
    serving,
    silence,
    speech,
)

from actors.model.port import SpeechModel

# The README's client messages, copied as they are written there.
START = """{
  "event": "start"
}"""
STOP = """{
  "event": "stop"
}"""

WEATHER = "the weather today is sunny with a light breeze from the west"
GARDEN = "my grandmother planted tomatoes and roses in her garden"


async def test_a_readme_client_sees_the_readme_messages_in_order(
    tiny_model: SpeechModel, tmp_path: Path
) -> None:
    # README: raw Linear PCM, 16 kHz mono 16-bit, as binary messages
    audio = pcm16_file(DATA / "weather.wav") + silence(1.0) + pcm16_file(DATA / "garden.wav")
    outgoing: list[str | bytes] = [START, *chunks(audio, 3200), STOP]
    async with (
        serving(tiny_model, tmp_path) as address,
        httpx.AsyncClient(base_url=f"http://{address}", timeout=30) as http,
    ):
        result = await exchange(f"ws://{address}/ws/v1/speech-to-text", outgoing)
        messages = result.messages
        assert all(isinstance(m, dict) and "event" in m and "type" not in m for m in messages)
        stopped = messages[-1]
        recording = await fetch_recording(http, f"/v1/sessions/{stopped['session_id']}/audio")
        stored = await http.get(f"/v1/sessions/{stopped['session_id']}")
    assert result.close_code == 1000
    events = [m["event"] for m in messages]
    assert set(events) <= {"transcript", "utterance_end", "stopped"}  # no `started`: not shown
    assert events[-1] == "stopped" and events.count("stopped") == 1

    # {"event": "transcript", "text": "...", "is_final": true/false}
    transcripts = [m for m in messages if m["event"] == "transcript"]
    for message in transcripts:
        assert list(message) == ["event", "text", "is_final"]
        assert isinstance(message["text"], str) and isinstance(message["is_final"], bool)
    finals = [m for m in transcripts if m["is_final"]]
    assert len(finals) == 2
    assert overlap(finals[0]["text"], WEATHER) >= 0.7
    assert overlap(finals[1]["text"], GARDEN) >= 0.7

    # {"event": "utterance_end", "text": ""}, after each utterance's final
    ends = [index for index, event in enumerate(events) if event == "utterance_end"]
    assert len(ends) == 2
    for index in ends:
        assert messages[index] == {"event": "utterance_end", "text": ""}
        assert messages[index - 1]["event"] == "transcript" and messages[index - 1]["is_final"]

    # {"event": "stopped", "message": "STT session ended.", "session_id", "full_transcription"}
    assert list(stopped) == ["event", "message", "session_id", "full_transcription"]
    assert stopped["message"] == "STT session ended."
    assert isinstance(stopped["session_id"], str) and stopped["session_id"]
    assert isinstance(stopped["full_transcription"], str)
    assert stopped["full_transcription"] == " ".join(m["text"] for m in finals)

    # the seed saved each session: its transcript (SQLite) and its audio (WAV)
    assert stored.status_code == 200
    assert stored.json()["utterances"] and recording.status_code == 200
    assert recording.content[:4] == b"RIFF" and recording.content[8:12] == b"WAVE"
    assert len(recording.content) >= len(audio)


async def test_errors_are_event_error_with_a_message(
    tiny_model: SpeechModel, tmp_path: Path
) -> None:
    outgoing: list[str | bytes] = [
        silence(0.2),  # audio before `start`
        START,
        START,  # a second start
        "{not json",
        *chunks(pcm16_file(DATA / "library.wav"), 6400),
        STOP,
    ]
    async with serving(tiny_model, tmp_path) as address:
        result = await exchange(f"ws://{address}/ws/v1/speech-to-text", outgoing)
    errors = [m for m in result.messages if m["event"] == "error"]
    assert len(errors) == 3
    for error in errors:  # {"event": "error", "message": "error description"}
        assert list(error) == ["event", "message"]
        assert isinstance(error["message"], str) and error["message"]
    stopped = result.messages[-1]
    assert stopped["event"] == "stopped" and "library" in stopped["full_transcription"].lower()
    assert result.close_code == 1000


async def test_details_are_sent_only_when_asked_for(
    tiny_model: SpeechModel, tmp_path: Path
) -> None:
    outgoing: list[str | bytes] = [START, *chunks(pcm16_file(DATA / "library.wav"), 6400), STOP]
    async with serving(tiny_model, tmp_path) as address:
        result = await exchange(f"ws://{address}/ws/v1/speech-to-text?details=true", outgoing)
    started, *rest = result.messages
    assert list(started) == ["event", "session_id", "sample_rate", "language", "model"]
    uuid.UUID(started["session_id"])
    finals = [m for m in rest if m["event"] == "transcript" and m["is_final"]]
    assert finals and {"start", "end", "utterance", "confidence"} <= set(finals[0])
    [end] = [m for m in rest if m["event"] == "utterance_end"]
    assert end["text"] == "" and isinstance(end["at"], float)
    stopped = rest[-1]
    assert stopped["message"] == "STT session ended." and isinstance(stopped["duration"], float)
    assert json.dumps(stopped)  # plain JSON all the way down


# -- beyond the README: `?details=true`, word timings, utterance ends (was test_seeds.py) -------


SHORT = "ljspeech_coqui/LJ001-0002.wav"  # "in being comparatively modern."
LONGER = "ljspeech_coqui/LJ001-0004.wav"


async def test_speech_to_text_seed(tiny_model: SpeechModel, tmp_path: Path) -> None:
    audio = pcm16_file(speech(SHORT)) + silence(1.0) + pcm16_file(speech(LONGER))
    start = {"event": "start", "config": {"language": "en", "sample_rate": 16000}, "words": True}
    outgoing: list[str | bytes] = [json.dumps(start), *chunks(audio, 6400), '{"event": "stop"}']
    async with serving(tiny_model, tmp_path) as address:  # details: what the README omits
        result = await exchange(f"ws://{address}/ws/v1/speech-to-text?details=true", outgoing)
    assert result.close_code == 1000
    kinds = message_kinds(result.messages, "event")
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
    expected = reference(SHORT) + " " + reference(LONGER)
    assert overlap(stopped["full_transcription"], expected) >= 0.8
