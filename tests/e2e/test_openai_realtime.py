"""OpenAI Realtime transcription on `WS /v1/realtime?intent=transcription`: the official
`openai` SDK's Realtime client, unmodified apart from the base URL, against a real server with
tiny.en and real speech; every event validated with the SDK's own models, no field missing
(`support.realtime_client`). Then a raw WebSocket client for what the SDK would not send."""

from __future__ import annotations

import base64
import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import soxr
import trio
from conftest import serve_app
from support.dialect_helpers import DATA, dialect_app, overlap, reference, serving, speech, words
from support.realtime_client import (
    COMPLETED,
    DELTA,
    Received,
    appends,
    completions,
    mulaw,
    pcm16,
    run_realtime,
    validated,
)
from support.ws_client import connect
from trio_websocket import ConnectionClosed, WebSocketConnection

from actors.audio.file_decoder import decode_file
from actors.model.port import SpeechModel

# openai 3.54's sync Realtime client opens websockets 17's connection without its context
# manager, which websockets deprecates; not ours to fix.
pytestmark = pytest.mark.filterwarnings("ignore:connect\\(\\) must be used:DeprecationWarning")
FIRST = "ljspeech_coqui/LJ001-0002.wav"  # "in being comparatively modern."
SECOND = "ljspeech_coqui/LJ001-0004.wav"  # "produced the block books, which were ..."
CHUNK_24K = 4800  # 100 ms of 24 kHz PCM16


def _at_24k(*parts: str | float) -> bytes:
    """The clips (names) and silences (seconds) one after another, as 24 kHz PCM16."""
    pieces = [
        np.zeros(int(part * 16000), np.float32)
        if isinstance(part, float)
        else decode_file(speech(part))
        for part in parts
    ]
    return pcm16(soxr.resample(np.concatenate(pieces), 16000, 24000))


def _manual(**input_audio: Any) -> dict[str, Any]:
    audio = {"turn_detection": None, **input_audio}
    return {
        "type": "session.update",
        "session": {"type": "transcription", "audio": {"input": audio}},
    }


def _deltas(received: Received, item_id: str) -> str:
    return "".join(e["delta"] for e in received.of(DELTA) if e["item_id"] == item_id)


def _starts_with_words(text: str, prefix: str) -> bool:
    said, shown = text.lower().split(), prefix.lower().split()
    bare = [w.strip(".,!?;:\"'") for w in said]
    return bare[: len(shown)] == [w.strip(".,!?;:\"'") for w in shown]


def _index(received: Received, kind: str, item_id: str) -> int:
    return next(
        i
        for i, e in enumerate(received.events)
        if e["type"] == kind and e.get("item_id") == item_id
    )


async def test_server_vad_two_utterances(tiny_model: SpeechModel, tmp_path: Path) -> None:
    audio = _at_24k(FIRST, 1.2, SECOND, 1.2)
    outgoing = appends(audio, CHUNK_24K, 0.07)  # about 1.4 x real time
    async with serving(tiny_model, tmp_path) as address:
        received = await trio.to_thread.run_sync(
            lambda: run_realtime(address, outgoing, completions(2))
        )
    assert received.kinds()[0] == "session.created"
    created = received.events[0]["session"]
    assert created["audio"]["input"]["format"] == {"type": "audio/pcm", "rate": 24000}
    assert created["audio"]["input"]["turn_detection"]["type"] == "server_vad"
    started = received.of("input_audio_buffer.speech_started")
    completed = received.of(COMPLETED)
    assert [e["item_id"] for e in started] == [e["item_id"] for e in completed]
    assert started[0]["audio_start_ms"] < 600 < 2500 < started[1]["audio_start_ms"] < 4000
    previous = None
    for event in completed:
        item = event["item_id"]
        order = [
            _index(received, kind, item)
            for kind in (
                "input_audio_buffer.speech_started",
                "input_audio_buffer.speech_stopped",
                "input_audio_buffer.committed",
                COMPLETED,
            )
        ]
        assert order == sorted(order), received.kinds()
        committed = received.events[order[2]]
        assert committed["previous_item_id"] == previous
        previous = item
        assert event["content_index"] == 0 and event["usage"]["type"] == "duration"
        assert event["usage"]["seconds"] > 1.0
        assert _starts_with_words(event["transcript"], _deltas(received, item))
    # the longer utterance's words appear while it is spoken, before speech_stopped
    second = completed[1]["item_id"]
    stopped_at = _index(received, "input_audio_buffer.speech_stopped", second)
    early = [
        i for i, e in enumerate(received.events) if e["type"] == DELTA and e["item_id"] == second
    ]
    assert early and early[0] < stopped_at, received.kinds()
    assert _deltas(received, second).split()  # the deltas say words
    said = " ".join(e["transcript"] for e in completed)
    assert overlap(said, reference(FIRST) + " " + reference(SECOND)) >= 0.8, said


async def test_manual_commit_turns(tiny_model: SpeechModel, tmp_path: Path) -> None:
    audio = _at_24k(SECOND, 0.3)
    outgoing = [
        _manual(transcription={"model": "gpt-4o-transcribe", "language": "en"}),
        *appends(audio, CHUNK_24K, 0.05),  # 2 x real time
        {"type": "input_audio_buffer.commit", "event_id": "commit-1"},
    ]
    async with serving(tiny_model, tmp_path) as address:
        received = await trio.to_thread.run_sync(
            lambda: run_realtime(address, outgoing, completions(1))
        )
    kinds = received.kinds()
    assert kinds[:2] == ["session.created", "session.updated"]
    shown = received.events[1]["session"]["audio"]["input"]
    assert shown["turn_detection"] is None
    assert shown["transcription"]["model"] == "gpt-4o-transcribe"
    assert "input_audio_buffer.speech_started" not in kinds  # VAD is off
    (completed,) = received.of(COMPLETED)
    item = completed["item_id"]
    committed = _index(received, "input_audio_buffer.committed", item)
    first_delta = _index(received, DELTA, item)
    assert first_delta < committed < _index(received, COMPLETED, item), kinds
    assert received.events[committed]["previous_item_id"] is None
    deltas = _deltas(received, item)
    assert deltas.split() and _starts_with_words(completed["transcript"], deltas)
    assert completed["usage"]["seconds"] == pytest.approx(len(audio) / 48000, abs=0.01)
    assert overlap(completed["transcript"], reference(SECOND)) >= 0.8, completed


async def test_pcmu_at_8khz(tiny_model: SpeechModel, tmp_path: Path) -> None:
    voice = decode_file(DATA / "library.wav")
    narrow = soxr.resample(np.concatenate([voice, np.zeros(16000, np.float32)]), 16000, 8000)
    outgoing = [
        _manual(format={"type": "audio/pcmu"}),
        *appends(mulaw(narrow.astype(np.float32)), 1600, 0.02),
        {"type": "input_audio_buffer.commit"},
    ]
    async with serving(tiny_model, tmp_path) as address:
        received = await trio.to_thread.run_sync(
            lambda: run_realtime(address, outgoing, completions(1))
        )
    assert received.events[1]["session"]["audio"]["input"]["format"] == {"type": "audio/pcmu"}
    (completed,) = received.of(COMPLETED)
    said = "please return the library books before friday afternoon"
    assert overlap(completed["transcript"], said) >= 0.7, completed


async def test_commit_empty_and_clear(tiny_model: SpeechModel, tmp_path: Path) -> None:
    """A commit of under 100 ms is OpenAI's `input_audio_buffer_commit_empty`; `clear` drops
    the uncommitted audio: the next commit's item has only what came after it."""
    short = _at_24k(0.05)
    outgoing = [
        _manual(),
        *appends(short, CHUNK_24K, 0.0),
        {"type": "input_audio_buffer.commit", "event_id": "too-soon"},
        *appends(_at_24k(SECOND), CHUNK_24K * 4, 0.05),
        {"type": "input_audio_buffer.clear"},
        *appends(_at_24k(FIRST, 0.3), CHUNK_24K, 0.02),
        {"type": "input_audio_buffer.commit"},
    ]
    async with serving(tiny_model, tmp_path) as address:
        received = await trio.to_thread.run_sync(
            lambda: run_realtime(address, outgoing, completions(1))
        )
    (error,) = received.of("error")
    assert error["error"]["type"] == "invalid_request_error"
    assert error["error"]["code"] == "input_audio_buffer_commit_empty"
    assert error["error"]["event_id"] == "too-soon"
    assert len(received.of("input_audio_buffer.cleared")) == 1
    (completed,) = received.of(COMPLETED)
    assert overlap(completed["transcript"], reference(FIRST)) >= 0.6, "\n".join(
        map(str, received.events)
    )
    assert not words(completed["transcript"]) & {"block", "books", "predecessors"}
    cleared = received.kinds().index("input_audio_buffer.cleared")
    assert all(i > cleared for i, e in enumerate(received.events) if e["type"] == COMPLETED)


async def test_model_query_and_other_intents_are_refused(
    tiny_model: SpeechModel, tmp_path: Path
) -> None:
    from openai import OpenAI
    from websockets.exceptions import InvalidStatus

    def connect(address: str, **options: Any) -> InvalidStatus:
        client = OpenAI(api_key="local-test", base_url=f"http://{address}/v1")
        with pytest.raises(InvalidStatus) as refused, client.realtime.connect(**options):
            pass
        return refused.value

    async with serving(tiny_model, tmp_path) as address:
        with_model = await trio.to_thread.run_sync(
            lambda: connect(
                address, model="gpt-4o-transcribe", extra_query={"intent": "transcription"}
            )
        )
        conversation = await trio.to_thread.run_sync(
            lambda: connect(address, extra_query={"intent": "conversation"})
        )
    for refused, param in ((with_model, "model"), (conversation, "intent")):
        assert refused.response.status_code == 400
        body = json.loads(refused.response.body or b"{}")
        assert body["error"]["type"] == "invalid_request_error"
        assert body["error"]["param"] == param


async def test_malformed_events_get_openai_errors(tiny_model: SpeechModel, tmp_path: Path) -> None:
    """A raw client: each bad event is answered with an `error` in OpenAI's shape and the
    session goes on (the last, good update is answered)."""
    bad: list[str | bytes] = [
        "not json",
        json.dumps({"type": "response.create"}),
        json.dumps({"type": "session.update", "session": {"type": "realtime"}}),
        json.dumps(
            {
                "type": "session.update",
                "event_id": "bad-rate",
                "session": {
                    "type": "transcription",
                    "audio": {"input": {"format": {"type": "audio/pcm", "rate": 16000}}},
                },
            }
        ),
        json.dumps({"type": "input_audio_buffer.append", "audio": "%%%"}),
        json.dumps({"type": "input_audio_buffer.append", "audio": "AAAA", "extra": 1}),
        b"\x00\x01",
        json.dumps(_manual(transcription={"language": "english!"})),
        json.dumps(_manual(transcription={"prompt": "Chorus, Whisper"})),
    ]
    async with serving(tiny_model, tmp_path) as address:
        with trio.fail_after(30):  # a guard against a hang, not a timing assertion
            async with connect(f"ws://{address}/v1/realtime?intent=transcription") as socket:
                for message in bad:
                    await socket.send_message(message)
                messages = [await socket.get_message() for _ in range(len(bad) + 1)]
    events = [validated(message) for message in messages]
    kinds = [e["type"] for e in events]
    assert kinds == ["session.created", *["error"] * 8, "session.updated"], kinds
    errors = [e["error"] for e in events if e["type"] == "error"]
    assert {e["type"] for e in errors} == {"invalid_request_error"}
    assert errors[0]["code"] == "invalid_json"
    assert errors[2]["param"] == "session.type"
    assert errors[3]["param"] == "session.audio.input.format.rate"
    assert errors[3]["event_id"] == "bad-rate"
    assert errors[4]["code"] == "invalid_base64"
    assert events[-1]["session"]["audio"]["input"]["transcription"]["prompt"] == "Chorus, Whisper"


async def test_api_keys_and_a_whole_clip_in_one_append(
    tiny_model: SpeechModel, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The SDK's `Authorization: Bearer` is checked as on every route; a text message may be
    as large as an audio frame (a 5 s clip in one `append`)."""
    from websockets.exceptions import InvalidStatus

    monkeypatch.setenv("CHORUS_API_KEYS", "realtime-key")  # read when the app is built
    whole = base64.b64encode(_at_24k(SECOND, 0.3)).decode()
    outgoing: list[dict[str, Any] | float] = [
        _manual(),
        {"type": "input_audio_buffer.append", "audio": whole},
        {"type": "input_audio_buffer.commit"},
    ]
    async with serving(tiny_model, tmp_path) as address:
        with pytest.raises(InvalidStatus) as refused:
            await trio.to_thread.run_sync(
                lambda: run_realtime(address, outgoing, completions(1), api_key="wrong")
            )
        assert refused.value.response.status_code == 401
        received = await trio.to_thread.run_sync(
            lambda: run_realtime(address, outgoing, completions(1), api_key="realtime-key")
        )
    (completed,) = received.of(COMPLETED)
    assert overlap(completed["transcript"], reference(SECOND)) >= 0.8, completed


async def test_a_drain_completes_the_item_then_closes_1012(
    tiny_model: SpeechModel, tmp_path: Path
) -> None:
    """Shutdown: the open utterance's item completes, then the close is 1012 (the SDK
    reconnects by itself on it, to a replica that is not draining)."""
    from service.app import drain_sessions
    from service.runtime import runtime

    app = dialect_app(tiny_model, tmp_path)
    audio = _at_24k(SECOND)[: CHUNK_24K * 30]  # 3 s: mid-sentence
    events: list[dict[str, Any]] = []
    close_code: list[int] = []

    async def read(socket: WebSocketConnection) -> None:
        try:
            while True:
                events.append(validated(await socket.get_message()))
        except ConnectionClosed as closed:
            assert closed.reason is not None
            close_code.append(closed.reason.code)

    async with serve_app(app) as address:
        with trio.fail_after(60):  # a guard against a hang, not a timing assertion
            async with (
                connect(f"ws://{address}/v1/realtime?intent=transcription") as socket,
                trio.open_nursery() as nursery,
            ):
                nursery.start_soon(read, socket)
                for piece in appends(audio, CHUNK_24K * 10, 0.0):
                    if isinstance(piece, dict):
                        await socket.send_message(json.dumps(piece))
                live = runtime(app).live
                while not any(s.statistics().received_s >= 2.9 for s in live.values()):  # noqa: ASYNC110
                    await trio.sleep(0.01)
                await drain_sessions(app, 10.0)
    assert close_code == [1012]
    kinds = [e["type"] for e in events]
    assert kinds.count(COMPLETED) == 1, kinds
    assert kinds.index("input_audio_buffer.speech_started") < kinds.index(COMPLETED)
    assert words(events[kinds.index(COMPLETED)]["transcript"]) & {"block", "books"}
