"""Deepgram Flux on `WS /v2/listen`: the official `deepgram-sdk` (v2 socket, unmodified but
for the base URL) against a real server with tiny.en, every message checked against the SDK's
own models. The client streams in real time, as a voice agent does: turn ends are decided
from drafts of the audio as it arrives."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import jiwer
import pytest
import trio
from support.dialect_helpers import (
    chunks,
    deepgram_client,
    exchange,
    pcm16_file,
    reference,
    serving,
    silence,
    speech,
)
from support.sdk_models import checked
from support.ws_client import rejected
from whisper_normalizer.english import EnglishTextNormalizer

from actors.model.port import SpeechModel

# deepgram-sdk 7.17 imports a name that websockets 14+ deprecated; not ours to fix.
pytestmark = pytest.mark.filterwarnings("ignore:websockets\\.:DeprecationWarning")
FIRST = "ljspeech_coqui/LJ001-0002.wav"  # "in being comparatively modern."
SECOND = "librivox_pocketsphinx/sense_and_sensibility_01_austen_64kb-0930.wav"
CHUNK = 3200  # 100 ms of 16 kHz PCM16

Script = Callable[[Any], None]


def flux(address: str, script: Script, **options: str) -> list[Any]:
    """Connect with the SDK, run `script` on the socket while a thread reads every message
    until the server closes; the messages, each checked against the SDK's model."""
    received: list[Any] = []
    with deepgram_client(address).listen.v2.connect(
        model="flux-general-en", encoding="linear16", sample_rate="16000", **options
    ) as socket:
        reader = threading.Thread(target=lambda: received.extend(socket))
        reader.start()
        script(socket)
        reader.join(timeout=60)
        assert not reader.is_alive()
    return [checked(message) for message in received]


def stream(socket: Any, audio: bytes) -> None:
    for piece in chunks(audio, CHUNK):
        socket.send_media(piece)
        time.sleep(0.1)  # real time


def wer(name: str, text: str) -> float:
    normalize = EnglishTextNormalizer()
    return float(jiwer.wer(normalize(reference(name)), normalize(text)))


def turn_events(messages: list[Any]) -> list[tuple[int, str]]:
    return [(m.turn_index, m.event) for m in messages if m.type == "TurnInfo"]


async def test_two_sentences_are_two_turns(tiny_model: SpeechModel, tmp_path: Path) -> None:
    audio = (
        silence(0.3)
        + pcm16_file(speech(FIRST))
        + silence(1.5)
        + pcm16_file(speech(SECOND))
        + silence(1.5)
    )

    def script(socket: Any) -> None:
        stream(socket, audio)
        socket.send_close_stream()

    async with serving(tiny_model, tmp_path) as address:
        messages = await trio.to_thread.run_sync(
            lambda: flux(address, script, eager_eot_threshold="0.5")
        )
    assert [m.sequence_id for m in messages] == list(range(len(messages)))
    assert messages[0].type == "Connected"
    assert {m.request_id for m in messages} == {messages[0].request_id}
    events = turn_events(messages)
    ends = [m for m in messages if m.type == "TurnInfo" and m.event == "EndOfTurn"]
    assert [m.turn_index for m in ends] == [0, 1], events
    for index, name in enumerate((FIRST, SECOND)):
        turn = [event for turn, event in events if turn == index]
        assert turn[0] == "StartOfTurn" and turn[-1] == "EndOfTurn", events
        assert "Update" in turn, events
        assert wer(name, ends[index].transcript) <= 0.35, ends[index].transcript
        assert ends[index].trigger == "model"
        assert ends[index].end_of_turn_confidence >= 0.7
        assert ends[index].words and all(w.start is not None for w in ends[index].words)
    assert "EagerEndOfTurn" in (event for _, event in events), events
    assert ends[0].audio_window_end < ends[1].audio_window_start


async def test_configure_then_force_end_turn(tiny_model: SpeechModel, tmp_path: Path) -> None:
    def script(socket: Any) -> None:
        socket.send_configure(
            {"type": "Configure", "thresholds": {"eot_threshold": 0.8}, "keyterms": ["Dashwood"]}
        )
        socket.send_configure({"type": "Configure", "thresholds": {"eot_threshold": 0.2}})
        stream(socket, pcm16_file(speech(FIRST)))
        socket.send_force_end_turn()
        stream(socket, silence(0.3))
        socket.send_close_stream()

    async with serving(tiny_model, tmp_path) as address:
        messages = await trio.to_thread.run_sync(lambda: flux(address, script))
    assert [m.sequence_id for m in messages] == list(range(len(messages)))
    answers = [m for m in messages if m.type.startswith("Configure")]
    assert [m.type for m in answers] == ["ConfigureSuccess", "ConfigureFailure"]
    assert answers[0].keyterms == ["Dashwood"]
    assert answers[0].thresholds.eot_threshold == 0.8
    assert answers[0].thresholds.eot_timeout_ms == 5000
    assert "eot_threshold" in answers[1].description
    ends = [m for m in messages if m.type == "TurnInfo" and m.event == "EndOfTurn"]
    assert len(ends) == 1 and ends[0].trigger == "manual"
    assert wer(FIRST, ends[0].transcript) <= 0.35, ends[0].transcript


async def test_a_bad_threshold_is_refused_before_the_upgrade(
    tiny_model: SpeechModel, tmp_path: Path
) -> None:
    def connect(address: str) -> str:
        try:
            with deepgram_client(address).listen.v2.connect(
                model="flux-general-en", eot_threshold="0.2"
            ):
                pass
        except Exception as error:  # the SDK raises what websockets raised: HTTP 400
            return f"{type(error).__name__}: {error}"
        return "connected"

    async with serving(tiny_model, tmp_path) as address:
        outcome = await trio.to_thread.run_sync(connect, address)
        long_term = await rejected(f"ws://{address}/v2/listen?keyterm={'x' * 101}")
        errors = await exchange(
            f"ws://{address}/v2/listen?encoding=linear16",
            ["not json", '{"type": "Shout"}', '{"type": "CloseStream"}'],
        )
    assert "400" in outcome, outcome
    assert long_term.status_code == 400
    assert b"1 to 100 characters" in (long_term.body or b"")
    kinds = [(m["type"], m["sequence_id"], m.get("code")) for m in errors.messages]
    assert kinds == [
        ("Connected", 0, None),
        ("Warning", 1, "INVALID_JSON"),  # the SDK's non-fatal type: the stream goes on
        ("Warning", 2, "UNKNOWN_TYPE"),
    ]
    assert errors.close_code == 1000
