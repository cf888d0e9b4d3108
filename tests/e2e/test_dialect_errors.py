"""One test per kind of bad input, for every dialect and upload route: a clear error in the
dialect's own shape, and the session (or server) goes on where it can."""

from __future__ import annotations

import base64
import json
from pathlib import Path
from typing import Any

import httpx
import pytest
from conftest import serve_app
from support.dialect_helpers import DATA, chunks, dialect_app, exchange, pcm16_file
from support.ws_client import rejected

from actors.model.port import SpeechModel

AUDIO = pcm16_file(DATA / "library.wav")


def _errors(messages: list[Any], key: str = "type") -> list[dict[str, Any]]:
    return [m for m in messages if isinstance(m, dict) and m.get(key) == "error"]


@pytest.fixture
async def address(tiny_model: SpeechModel, tmp_path: Path) -> Any:
    async with serve_app(dialect_app(tiny_model, tmp_path)) as served:
        yield served


# -- Deepgram ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "query",
    ["encoding=speex", "encoding=linear16&sample_rate=96000", "language=fr", "channels=0"],
)
async def test_deepgram_bad_options_are_refused_before_the_upgrade(
    address: str, query: str
) -> None:
    refusal = await rejected(f"ws://{address}/v1/listen?{query}")
    assert refusal.status_code == 400
    body = json.loads(refusal.body or b"{}")
    assert set(body) == {"err_code", "err_msg", "request_id"}
    assert body["err_code"] == "Bad Request" and body["err_msg"]
    headers = {name.decode().lower(): value.decode() for name, value in refusal.headers}
    assert headers["dg-error"] == body["err_msg"][:200]


async def test_deepgram_bad_messages_get_error_frames_and_the_stream_goes_on(
    address: str,
) -> None:
    outgoing: list[str | bytes] = [
        "not json",
        '{"type": "Reconfigure", "features": {}}',
        '{"no": "type"}',
        *chunks(AUDIO, 6400),
        '{"type": "CloseStream"}',
    ]
    result = await exchange(f"ws://{address}/v1/listen?encoding=linear16", outgoing)
    errors = result.of_type("Error")
    assert [e["code"] for e in errors] == ["invalid_json", "unknown_type", "unknown_type"]
    assert all(set(e) == {"type", "variant", "description", "code"} for e in errors)
    assert {e["variant"] for e in errors} == {"SchemaError"}
    finals = [m for m in result.of_type("Results") if m["is_final"]]
    assert "library" in " ".join(m["channel"]["alternatives"][0]["transcript"] for m in finals)
    assert result.messages[-1]["type"] == "Metadata" and result.close_code == 1000


async def test_deepgram_text_instead_of_webm_is_a_fatal_error(address: str) -> None:
    outgoing: list[str | bytes] = [b"this is not a webm stream at all, just text" * 10]
    result = await exchange(f"ws://{address}/v1/listen", outgoing)
    [error] = result.of_type("Error")
    assert error["code"] == "undecodable_audio"
    assert result.close_code == 1003


# -- speech-to-text seed -----------------------------------------------------------------------


async def test_stt_audio_before_start_and_wrong_events(address: str) -> None:
    outgoing: list[str | bytes] = [
        AUDIO[:3200],  # before start
        '{"event": "begin"}',  # no such event
        '{"type": "start"}',  # no `event` at all
        '{"event": "start", "language": "fr"}',  # the model is English-only
        '{"event": "start", "sample_rate": "fast"}',
        '{"event": "start", "encoding": "mp3"}',
        "{not json",
        '{"event": "start"}',
        '{"event": "start"}',  # twice
        *chunks(AUDIO, 6400),
        '{"event": "stop"}',
    ]
    # `details=true`: the codes (the README's errors carry only `message`, see test_seed_002)
    result = await exchange(f"ws://{address}/ws/v1/speech-to-text?details=true", outgoing)
    errors = _errors(result.messages, "event")
    assert [e["code"] for e in errors] == [
        "audio_before_start",
        "unknown_type",
        "unknown_type",
        "invalid_config",
        "invalid_message",
        "invalid_config",
        "invalid_json",
        "already_started",
    ]
    assert all(set(e) == {"event", "code", "message", "fatal"} for e in errors)
    assert not any(e["fatal"] for e in errors)
    assert [m["event"] for m in result.messages].count("started") == 1
    stopped = result.messages[-1]
    assert stopped["event"] == "stopped" and "library" in stopped["full_transcription"].lower()
    assert result.close_code == 1000


# -- call-intelligence seed --------------------------------------------------------------------


async def test_call_bad_base64_unknown_type_and_missing_fields(address: str) -> None:
    def chunk(audio: bytes) -> str:
        return json.dumps({"type": "audio_chunk", "audio_data": base64.b64encode(audio).decode()})

    outgoing = [
        '{"type": "audio_chunk", "audio_data": "%%% not base64 %%%", "timestamp": 1}',
        '{"type": "audio_chunk", "audio_data": ""}',
        '{"type": "audio_chunk", "timestamp": 2}',
        '{"type": "transcribe_please"}',
        "[1, 2, 3]",
        chunk(AUDIO),  # one text message over the 64 KiB limit
        *(chunk(piece) for piece in chunks(AUDIO, 16000)),
        '{"type": "stop"}',
    ]
    # `details=true`: the README's server ignores invalid messages; asked, Chorus names them
    result = await exchange(f"ws://{address}/ws/caller-9?details=true", outgoing)
    errors = _errors(result.messages)
    assert [e["code"] for e in errors] == [
        "invalid_base64",
        "empty_frame",
        "invalid_message",
        "unknown_type",
        "invalid_message",
        "frame_too_large",
    ]
    assert all(set(e) == {"type", "code", "message", "fatal"} for e in errors)
    assert result.messages[-1]["type"] == "stopped"
    assert "library" in result.messages[-1]["transcript"].lower()


async def test_call_bad_query_option_is_an_error_then_close(address: str) -> None:
    result = await exchange(f"ws://{address}/ws/caller-9?sample_rate=5&details=true", [])
    [error] = _errors(result.messages)
    assert error["code"] == "invalid_config" and error["fatal"] is True
    assert result.close_code == 1008
    quiet = await exchange(f"ws://{address}/ws/caller-9?sample_rate=5", [])
    assert quiet.messages == [] and quiet.close_code == 1008  # the close says why


# -- live-audio seed, streaming (`?stream=true`; recordings: tests/e2e/test_seed_003.py) -----------


async def test_live_audio_bad_messages(address: str) -> None:
    outgoing: list[str | bytes] = [
        '{"type": "audio", "audio": "***"}',
        '{"type": "audio"}',
        '{"type": "dance"}',
        b"",
        "plain text",
        *chunks(AUDIO, 6400),
        '{"type": "stop"}',
    ]
    result = await exchange(f"ws://{address}/ws?stream=true", outgoing)
    errors = _errors(result.messages)
    assert [e["code"] for e in errors] == [
        "invalid_base64",
        "invalid_message",
        "unknown_type",
        "empty_frame",
        "invalid_json",
    ]
    assert result.messages[-1]["status"] == "stopped"
    assert "library" in result.messages[-1]["transcript"].lower()


async def test_live_audio_english_only_model_refuses_french(address: str) -> None:
    result = await exchange(f"ws://{address}/ws?stream=true&language=fr", [])
    [error] = _errors(result.messages)
    assert (error["code"], error["fatal"]) == ("unsupported_language", True)
    assert result.close_code == 1008


# -- uploads -----------------------------------------------------------------------------------


def _openai_error(response: httpx.Response) -> dict[str, Any]:
    body = response.json()
    assert set(body) == {"error"} and set(body["error"]) == {"message", "type", "param", "code"}
    error: dict[str, Any] = body["error"]
    return error


async def _post(address: str, path: str, content: bytes, **fields: str) -> httpx.Response:
    async with httpx.AsyncClient(base_url=f"http://{address}", timeout=60) as http:
        return await http.post(path, files={"file": ("upload.wav", content)}, data=fields)


async def test_uploads_of_text_empty_and_broken_files(address: str) -> None:
    text = b"Dear diary, today I uploaded a text file instead of audio.\n" * 20
    truncated = (DATA / "weather.wav").read_bytes()[:2000]
    cases = [(text, 400, 415, "not_audio"), (b"", 400, 400, "empty")]
    for content, openai_status, seed_status, code in cases:
        answer = await _post(address, "/v1/audio/transcriptions", content, model="whisper-1")
        assert answer.status_code == openai_status
        error = _openai_error(answer)
        assert (error["code"], error["param"], error["type"]) == (
            code,
            "file",
            "invalid_request_error",
        )
        seed = await _post(address, "/transcribe", content)
        assert seed.status_code == seed_status
        assert seed.json()["error"]["code"] == code
    broken = await _post(address, "/transcribe", truncated)
    assert broken.status_code == 400 and broken.json()["error"]["code"] == "truncated"


async def test_openai_field_errors(address: str) -> None:
    clip = (DATA / "weather.wav").read_bytes()
    cases = [
        ({}, "model"),
        ({"model": "gpt-5-transcribe"}, "model"),
        ({"model": "whisper-1", "response_format": "diarized_json"}, "response_format"),
        ({"model": "whisper-1", "temperature": "hot"}, "temperature"),
        ({"model": "whisper-1", "language": "klingon"}, "language"),
        (
            {"model": "whisper-1", "timestamp_granularities[]": "syllable"},
            "timestamp_granularities[]",
        ),
        ({"model": "whisper-1", "stream": "yes please"}, "stream"),
    ]
    for fields, param in cases:
        answer = await _post(address, "/v1/audio/transcriptions", clip, **fields)
        assert answer.status_code == 400, fields
        assert _openai_error(answer)["param"] == param
    async with httpx.AsyncClient(base_url=f"http://{address}") as http:
        no_file = await http.post("/v1/audio/transcriptions", data={"model": "whisper-1"})
        missing = await http.get("/v1/models/whisper-9")
    assert no_file.status_code == 400 and _openai_error(no_file)["param"] == "file"
    assert missing.status_code == 404 and _openai_error(missing)["code"] == "model_not_found"


async def test_seed_transcribe_unknown_language(address: str) -> None:
    clip = (DATA / "weather.wav").read_bytes()
    for language, code in [("klingon", "invalid_language"), ("french", "unsupported_language")]:
        answer = await _post(address, "/transcribe", clip, language=language)
        assert answer.status_code == 400
        message = answer.json()["error"]["message"]
        assert answer.json() == {"detail": message, "error": {"code": code, "message": message}}


async def test_uploads_over_the_size_limit(
    tiny_model: SpeechModel, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CHORUS_MAX_UPLOAD_BYTES", "4096")  # read once, when the app is built
    clip = (DATA / "weather.wav").read_bytes()
    assert len(clip) > 4096
    async with serve_app(dialect_app(tiny_model, tmp_path)) as address:
        answer = await _post(address, "/v1/audio/transcriptions", clip, model="whisper-1")
        assert answer.status_code == 413
        assert _openai_error(answer)["code"] == "file_too_large"
        seed = await _post(address, "/transcribe", clip)
        assert seed.status_code == 413 and seed.json()["error"]["code"] == "file_too_large"
        small = await _post(address, "/transcribe", clip[:3000])  # under the limit: decoded
        assert small.status_code == 400 and small.json()["error"]["code"] == "truncated"
