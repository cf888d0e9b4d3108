"""Multichannel sessions: a stereo call whose two channels carry different speech, on the native
route (`channels=2&multichannel=true`) and on Deepgram's (`multichannel=true`, the official
`deepgram-sdk` client, every message validated with the SDK's own models), against a server on
loopback with tiny.en. Each channel is its own stream: its own transcript, its own `finalize`,
its own sentiment, and the one stored session keeps every final with its channel."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
import trio
from support.audio_files import DATA, load, pcm16
from support.dialect_helpers import chunks, deepgram_client, exchange, overlap, serving

from actors.model.port import SpeechModel
from protocol.multichannel import Deinterleaver

pytestmark = pytest.mark.filterwarnings("ignore:websockets\\.:DeprecationWarning")
LEFT = "the weather today is sunny with a light breeze from the west"
RIGHT = "my grandmother planted tomatoes and roses in her garden"


def stereo_call() -> bytes:
    """Left: weather, then 2.5 s of silence (a pause of 1.5 s ends it); right: 2 s of
    silence, then garden, not yet ended by a pause when the audio ends (`finalize` ends it)."""
    left = load(DATA / "weather.wav")
    right = load(DATA / "garden.wav")
    left = np.concatenate([left, np.zeros(40000, np.float32)])
    right = np.concatenate([np.zeros(32000, np.float32), right])
    length = max(len(left), len(right))
    both = np.zeros((length, 2), np.float32)
    both[: len(left), 0], both[: len(right), 1] = left, right
    return pcm16(both.reshape(-1))


def test_the_deinterleaver_keeps_partial_frames_for_the_next_message() -> None:
    left, right = np.arange(5, dtype="<i2"), -np.arange(5, dtype="<i2")
    data = np.stack([left, right], axis=1).reshape(-1).tobytes()
    splitter = Deinterleaver("pcm_s16le", 2)
    pieces = [splitter.split(piece) for piece in chunks(data, 3)]  # odd cuts
    joined = [b"".join(piece[channel] for piece in pieces) for channel in (0, 1)]
    assert joined == [left.tobytes(), right.tobytes()]


def test_a_finalize_names_its_channel_or_none_and_never_a_negative_one() -> None:
    from protocol.codec import ProtocolError, decode_client_message
    from protocol.dialects.deepgram import parse_query
    from protocol.dialects.deepgram_messages import client_messages
    from protocol.native import Finalize

    assert decode_client_message('{"type": "finalize", "channel": 1}') == [Finalize(channel=1)]
    assert client_messages.parse('{"type": "Finalize", "channel": 1}').inbound() == Finalize(
        channel=1
    )
    for message in ('{"type": "finalize", "channel": -1}', '{"type": "finalize", "channel": 8}'):
        with pytest.raises(ProtocolError):
            decode_client_message(message)
    with pytest.raises(ProtocolError):
        client_messages.parse('{"type": "Finalize", "channel": -1}')
    config, options = parse_query({"encoding": "linear16", "channels": "2", "multichannel": "true"})
    assert config.multichannel and options.multichannel and config.channels == 2
    config, _ = parse_query({"channels": "2", "multichannel": "true"})  # a container: mixed
    assert not config.multichannel


async def test_native_stereo_call_gives_each_channel_its_own_transcript(
    tiny_model: SpeechModel, tmp_path: Path
) -> None:
    query = (
        "channels=2&multichannel=true&sentiment=true&language=en&endpointing_ms=1500&record=true"
    )
    finalize_right = json.dumps({"type": "finalize", "channel": 1, "id": "right"})
    outgoing: list[str | bytes] = [*chunks(stereo_call(), 6400), finalize_right]
    outgoing.append(json.dumps({"type": "stop"}))
    async with serving(tiny_model, tmp_path) as address:
        result = await exchange(f"ws://{address}/v1/stream?{query}", outgoing)
        ready = result.of_type("ready")[0]
        async with httpx.AsyncClient(base_url=f"http://{address}") as http:
            stored = (await http.get(f"/v1/sessions/{ready['session_id']}")).json()
    assert result.close_code == 1000
    assert [m["type"] for m in result.messages].count("ready") == 1
    assert [m["code"] for m in result.of_type("error")] == ["recording_disabled"]
    finals = result.of_type("final")
    by_channel = {c: [f for f in finals if f["channel"] == c] for c in (0, 1)}
    left = " ".join(f["text"] for f in by_channel[0])
    right = " ".join(f["text"] for f in by_channel[1])
    assert overlap(left, LEFT) >= 0.6 and overlap(right, RIGHT) >= 0.6, (left, right)
    assert overlap(left, RIGHT) <= 0.3 and overlap(right, LEFT) <= 0.3, (left, right)
    # only the right channel was still speaking: only its utterance was cut by the finalize
    assert [f["from_finalize"] for f in by_channel[1]][-1] is True
    assert not any(f["from_finalize"] for f in by_channel[0])
    # answered once, after the right channel's cut final
    [finalized] = result.of_type("finalized")
    assert finalized["id"] == "right"
    assert result.messages.index(finalized) > result.messages.index(by_channel[1][-1])
    assert all(f["sentiment"] is not None for f in finals if f["text"])
    tagged = ("partial", "final", "utterance_end", "speech_started")
    assert all("channel" in m for m in result.messages if m["type"] in tagged)
    [stopped] = result.of_type("stopped")
    assert result.messages[-1] == stopped and stopped["utterances"] == len(finals)
    assert stopped["session_id"] == ready["session_id"]
    kept = {(u["channel"], u["text"]) for u in stored["utterances"]}
    assert kept == {(f["channel"], f["text"]) for f in finals}
    assert stored["route"] == "/v1/stream" and stored["ended_at"] is not None


def results_of(messages: list[Any]) -> list[dict[str, Any]]:
    return [m for m in messages if isinstance(m, dict) and m.get("type") == "Results"]


async def test_a_finalize_for_a_channel_that_is_not_there_is_refused(
    tiny_model: SpeechModel, tmp_path: Path
) -> None:
    outgoing: list[str | bytes] = [
        bytes(6400),
        json.dumps({"type": "finalize", "channel": 5}),
        json.dumps({"type": "stop"}),
    ]
    async with serving(tiny_model, tmp_path) as address:
        url = f"ws://{address}/v1/stream?channels=2&multichannel=true"
        result = await exchange(url, outgoing)
        with trio.fail_after(30):
            refused = await exchange(
                f"ws://{address}/v1/stream?multichannel=true&channels=2&encoding=auto", []
            )
    [error] = result.of_type("error")
    assert error["code"] == "invalid_channel" and not error["fatal"]
    assert result.close_code == 1000
    assert refused.of_type("error")[0]["code"] == "invalid_config"
    assert refused.close_code == 1008


def _sdk_stereo(address: str, audio: bytes) -> list[Any]:
    """The official client, unmodified but for the base URL: a stereo call, a `Finalize` for
    the right channel only, then `CloseStream` (runs in a thread)."""
    import time

    from deepgram.listen.v1.types import ListenV1Finalize

    client = deepgram_client(address)
    options = {"encoding": "linear16", "sample_rate": "16000", "channels": "2"}
    with client.listen.v1.connect(
        model="nova-3",
        multichannel="true",
        interim_results="true",
        endpointing="1500",
        utterance_end_ms="1000",
        vad_events="true",
        punctuate="true",
        **options,
    ) as socket:
        for piece in chunks(audio, 12800):  # 200 ms of 16 kHz stereo PCM16
            socket.send_media(piece)
            time.sleep(0.05)
        socket.send_finalize(ListenV1Finalize(type="Finalize", channel=1))  # type: ignore[call-arg]
        socket.send_close_stream()
        return list(socket)


def _validated(message: Any) -> Any:
    """`message` as the SDK's own model validates it, from only the fields the server sent:
    a required field missing fails here (the SDK itself parses without validating)."""
    return type(message).model_validate(message.model_dump(exclude_unset=True))


async def test_deepgram_sdk_stereo_call_splits_by_channel(
    tiny_model: SpeechModel, tmp_path: Path
) -> None:
    async with serving(tiny_model, tmp_path) as address:
        messages = await trio.to_thread.run_sync(_sdk_stereo, address, stereo_call())
    kinds = [type(message).__name__ for message in messages]
    assert "dict" not in kinds and kinds[-1] == "ListenV1Metadata", kinds
    messages = [_validated(message) for message in messages]
    results = [m for m in messages if type(m).__name__ == "ListenV1Results"]
    assert {tuple(m.channel_index) for m in results} == {(0, 2), (1, 2)}
    finals = {
        c: " ".join(
            m.channel.alternatives[0].transcript
            for m in results
            if m.is_final and m.channel_index[0] == c
        )
        for c in (0, 1)
    }
    assert overlap(finals[0], LEFT) >= 0.6 and overlap(finals[1], RIGHT) >= 0.6, finals
    assert overlap(finals[0], RIGHT) <= 0.3 and overlap(finals[1], LEFT) <= 0.3, finals
    right_finals = [m for m in results if m.is_final and m.channel_index[0] == 1]
    assert right_finals[-1].from_finalize and not right_finals[-1].speech_final
    assert not any(m.from_finalize for m in results if m.channel_index[0] == 0)
    interim = [m for m in results if not m.is_final and m.channel.alternatives[0].transcript]
    assert interim and all(m.channel.alternatives[0].words for m in interim)
    assert all(m.channel.alternatives[0].confidence > 0 for m in interim)
    for m in results:
        for word in m.channel.alternatives[0].words:
            _validated(word)
            assert m.start <= word.start <= word.end <= m.start + m.duration + 1e-3
    started = [m for m in messages if type(m).__name__ == "ListenV1SpeechStarted"]
    assert {tuple(m.channel) for m in started} == {(0,), (1,)}
    ended = [m for m in messages if type(m).__name__ == "ListenV1UtteranceEnd"]
    assert ended and all(list(m.channel) in ([0, 2], [1, 2]) for m in ended)
    assert messages[-1].channels == 2


async def test_each_channel_takes_a_session_slot(tiny_model: SpeechModel, tmp_path: Path) -> None:
    from conftest import serve_app
    from support.ws_client import rejected

    from service.app import create_app
    from service.config import Settings
    from service.policy.limits import Limits
    from service.policy.security import SecurityConfig

    security = SecurityConfig(limits=Limits(max_sessions_per_client=1))
    app = create_app(
        Settings(model="tiny.en", data_dir=tmp_path), model=tiny_model, security=security
    )
    async with serve_app(app) as address:
        stereo = await rejected(f"ws://{address}/v1/stream?channels=2&multichannel=true")
        mono = await exchange(
            f"ws://{address}/v1/stream?channels=2", [json.dumps({"type": "stop"})]
        )
    assert stereo.status_code == 429 and b"too_many_sessions" in stereo.body
    assert mono.close_code == 1000  # the same client, one slot: a mixed-down session fits


async def test_a_deepgram_configure_on_a_stereo_call_is_checked_and_answered_once(
    tiny_model: SpeechModel, tmp_path: Path
) -> None:
    huge = json.dumps({"type": "Configure", "features": {f"f{i}": True for i in range(9000)}})
    outgoing: list[str | bytes] = [
        bytes(6400),
        json.dumps({"type": "Configure", "keyterms": ["x" * 101]}),  # a term too long
        json.dumps({"type": "Configure", "keyterms": ["Chorus"] * 101}),  # too many
        huge,  # over the session's text limit
        json.dumps({"type": "Configure", "features": {"smart_format": True}}),  # keeps terms
        json.dumps({"type": "CloseStream"}),
    ]
    query = "multichannel=true&channels=2&encoding=linear16&sample_rate=16000"
    async with serving(tiny_model, tmp_path) as address:
        result = await exchange(f"ws://{address}/v1/listen?{query}", outgoing)
    answers = [m for m in result.messages if m["type"].startswith(("Configure", "Error"))]
    assert [m["type"] for m in answers] == [
        "ConfigureFailure",
        "ConfigureFailure",
        "Error",
        "ConfigureSuccess",
    ], answers
    assert {m["code"] for m in answers[:2]} == {"CONFIGURE_KEYTERM_LIMIT_EXCEEDED"}
    assert answers[2]["code"] == "frame_too_large" and len(huge) > 64 << 10
    assert answers[3].get("keyterms") is None  # it set none: nothing stale answered for it
    assert result.close_code == 1000
