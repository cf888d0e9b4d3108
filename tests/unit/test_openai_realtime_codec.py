"""The OpenAI Realtime codec alone (sans-IO): session settings onto the native config, native
frames onto items and their events, mid-stream updates. Every event it encodes is checked
against the `openai` SDK's model for its type, no field missing."""

from __future__ import annotations

import base64
import json
from typing import Any

import pytest
from support.realtime_client import validated

from protocol.codec import ProtocolError
from protocol.dialects.openai_realtime import RealtimeCodec
from protocol.dialects.openai_realtime_session import Refused
from protocol.native import (
    Config,
    Configure,
    Configured,
    Error,
    Final,
    Finalize,
    Finalized,
    Partial,
    Ping,
    Pong,
    Ready,
    ServerFrame,
    SpeechStarted,
    SpeechStopped,
)

READY = Ready(session_id="ab" * 16, model="tiny.en", sample_rate=24000, language="auto")


def _update(**input_audio: Any) -> str:
    session = {"type": "transcription", "audio": {"input": input_audio}}
    return json.dumps({"type": "session.update", "session": session})


def _append(seconds: float, bytes_per_second: int = 48000) -> str:
    audio = base64.b64encode(bytes(int(seconds * bytes_per_second))).decode()
    return json.dumps({"type": "input_audio_buffer.append", "audio": audio})


def _events(codec: RealtimeCodec, *frames: ServerFrame) -> list[dict[str, Any]]:
    return [validated(message) for frame in frames for message in codec.encode(frame)]


def _final(utterance: int, text: str, start: float, end: float) -> Final:
    return Final(
        utterance=utterance, text=text, start=start, end=end, language="en", confidence=0.9
    )


def test_session_settings_map_onto_the_native_config() -> None:
    codec = RealtimeCodec("tiny.en", prefix="t")
    assert (codec.config.encoding, codec.config.sample_rate) == ("pcm_s16le", 24000)
    assert codec.config.endpointing_ms == 500
    (config,) = codec.decode(
        _update(
            format={"type": "audio/pcmu"},
            turn_detection=None,
            transcription={"language": "en", "prompt": "Names:", "keywords": ["Chorus", "Ada"]},
        )
    )
    assert isinstance(config, Config)
    assert (config.encoding, config.sample_rate, config.language) == ("mulaw", 8000, "en")
    assert (config.endpointing_ms, config.max_utterance_s) == (10_000, 30.0)
    assert (config.prompt, config.keyterms) == ("Names:", ["Chorus", "Ada"])
    (config,) = codec.decode(_update(turn_detection={"type": "semantic_vad", "eagerness": "high"}))
    assert isinstance(config, Config) and config.endpointing_ms == 300
    assert config.encoding == "mulaw"  # what the update left out stays
    (config,) = codec.decode(
        _update(turn_detection={"type": "server_vad", "silence_duration_ms": 800})
    )
    assert isinstance(config, Config) and config.endpointing_ms == 800
    [created, updated] = _events(codec, READY, READY)
    assert created["type"] == "session.created"
    assert created["session"]["audio"]["input"]["format"] == {"type": "audio/pcm", "rate": 24000}
    assert updated["session"]["audio"]["input"]["format"] == {"type": "audio/pcmu"}


def test_mid_stream_updates_are_answered_but_format_and_turns_are_fixed() -> None:
    codec = RealtimeCodec("tiny.en", prefix="t")
    _events(codec, READY)
    assert codec.decode(_append(0.2)) == [bytes(9600)]
    (ping,) = codec.decode(_update(transcription={"language": "en"}))  # shown, not applied
    assert isinstance(ping, Ping) and isinstance(ping.id, str)
    (updated,) = _events(codec, Pong(id=ping.id))
    assert updated["type"] == "session.updated"
    assert updated["session"]["audio"]["input"]["transcription"]["language"] == "en"
    with pytest.raises(ProtocolError) as refused:
        codec.decode(_update(format={"type": "audio/pcma"}))
    assert "session.audio.input.format" in refused.value.message


def test_mid_stream_vocabulary_is_a_configure_answered_once_configured() -> None:
    codec = RealtimeCodec("tiny.en", prefix="t")
    _events(codec, READY)
    codec.decode(_append(0.2))
    (configure,) = codec.decode(_update(transcription={"prompt": "Flux", "keywords": ["Ada"]}))
    assert configure == Configure(keyterms=["Ada"], prompt="Flux")
    assert _events(codec, Pong(id="unrelated")) == []  # not answered before its `configured`
    (updated,) = _events(codec, Configured(keyterms=["Ada"], prompt="Flux"))
    assert updated["type"] == "session.updated"
    transcription = updated["session"]["audio"]["input"]["transcription"]
    assert (transcription["prompt"], transcription["keywords"]) == ("Flux", ["Ada"])
    # the session refuses the next one: an OpenAI error at the update, the session as it was
    update = json.loads(_update(transcription={"keywords": [" "]}))
    (configure,) = codec.decode(json.dumps({**update, "event_id": "evt_kw"}))
    assert configure == Configure(keyterms=[" "], prompt="")
    (error,) = _events(codec, Error(code="invalid_vocabulary", message="a key term must ..."))
    assert error["error"]["param"] == "session.audio.input.transcription.keywords"
    assert (error["error"]["event_id"], error["error"]["code"]) == ("evt_kw", "invalid_vocabulary")
    (ping,) = codec.decode(_update(transcription={"prompt": "Flux", "keywords": ["Ada"]}))
    assert isinstance(ping, Ping)  # what the session has already: nothing to configure
    (updated,) = _events(codec, Pong(id=ping.id))
    assert updated["session"]["audio"]["input"]["transcription"]["keywords"] == ["Ada"]


def test_server_vad_items_from_utterances() -> None:
    """speech_started, then deltas from committed words only, then speech_stopped, committed
    and completed; an utterance the model found empty still ends its item."""
    codec = RealtimeCodec("tiny.en", prefix="t")
    _events(codec, READY)
    codec.decode(_append(4.0))
    events = _events(
        codec,
        SpeechStarted(at=0.3),
        Partial(utterance=0, revision=1, text="hello wor", start=0.0, end=0.9),
        Partial(utterance=0, revision=2, text="hello world how", start=0.0, end=1.5, committed=11),
        Partial(utterance=0, revision=3, text="hello world how are", start=0, end=2, committed=15),
        _final(0, " hello world how are you", 0.0, 2.2),
        SpeechStarted(at=2.5),  # noise: no final follows
        SpeechStarted(at=3.0),
        _final(2, " Goodbye.", 2.9, 3.6),
    )
    kinds = [e["type"].rsplit(".", 1)[-1] for e in events]
    assert kinds == [
        *["speech_started", "delta", "delta", "speech_stopped", "committed", "delta"],
        *["completed", "speech_started", "speech_started", "speech_stopped", "committed"],
        *["completed", "speech_stopped", "committed", "delta", "completed"],
    ]
    deltas = [e["delta"] for e in events[:7] if "delta" in e]
    assert deltas == ["hello world", " how", " are you"]
    assert events[6]["transcript"] == "hello world how are you"
    assert events[6]["usage"] == {"type": "duration", "seconds": 2.2}
    assert events[11]["transcript"] == ""  # the noise
    assert [e["previous_item_id"] for e in events if "previous_item_id" in e] == [
        None,
        events[0]["item_id"],
        events[7]["item_id"],
    ]


def test_manual_commit_and_clear() -> None:
    codec = RealtimeCodec("tiny.en", prefix="t")
    codec.decode(_update(turn_detection=None))
    _events(codec, READY, READY)
    with pytest.raises(ProtocolError) as empty:
        codec.decode(json.dumps({"type": "input_audio_buffer.commit"}))
    assert empty.value.code == "input_audio_buffer_commit_empty"
    codec.decode(_append(1.0))
    clear = codec.decode(json.dumps({"type": "input_audio_buffer.clear"}))
    assert clear == [Finalize(id="clear"), Ping(id="clear")]
    codec.decode(_append(2.0))
    finalize, ping = codec.decode(json.dumps({"type": "input_audio_buffer.commit"}))
    assert isinstance(finalize, Finalize) and isinstance(ping, Ping)
    events = _events(
        codec,
        SpeechStarted(at=0.2),
        Pong(id="clear"),
        SpeechStarted(at=0.95),  # reads as before the clear, but starts after it
        Pong(id=ping.id),
        _final(0, "dropped", 0.0, 1.0),
        Finalized(id="clear"),
        _final(1, "kept words", 1.0, 3.0),
        Finalized(id=finalize.id),
    )
    kinds = [e["type"].rsplit(".", 1)[-1] for e in events]
    assert kinds == ["cleared", "committed", "delta", "completed"]
    assert events[-1]["transcript"] == "kept words"
    assert events[-1]["usage"]["seconds"] == 2.0


def test_a_server_vad_commit_of_no_speech_is_an_empty_item() -> None:
    codec = RealtimeCodec("tiny.en", prefix="t")
    _events(codec, READY)
    codec.decode(_append(0.5))
    (finalize,) = codec.decode(json.dumps({"type": "input_audio_buffer.commit"}))
    assert isinstance(finalize, Finalize) and isinstance(finalize.id, str)
    events = _events(codec, Finalized(id=finalize.id))
    assert [e["type"].rsplit(".", 1)[-1] for e in events] == ["committed", "completed"]
    assert (events[1]["transcript"], events[1]["usage"]["seconds"]) == ("", 0.5)
    codec.decode(_append(2.0))  # a commit that cut speech: its utterance's item, nothing more
    (finalize,) = codec.decode(json.dumps({"type": "input_audio_buffer.commit"}))
    assert isinstance(finalize, Finalize) and isinstance(finalize.id, str)
    events = _events(
        codec, SpeechStarted(at=0.7), _final(0, "Yes.", 0.5, 2.5), Finalized(id=finalize.id)
    )
    assert [e["type"].rsplit(".", 1)[-1] for e in events] == [
        *["speech_started", "speech_stopped", "committed", "delta", "completed"]
    ]


def test_refused_settings_name_their_param_and_leave_the_session_as_it_was() -> None:
    codec = RealtimeCodec("tiny.en", prefix="t")
    _events(codec, READY)
    with pytest.raises(Refused) as long_prompt:
        codec.decode(_update(transcription={"prompt": "x" * 1001}))
    assert long_prompt.value.param == "session.audio.input.transcription.prompt"
    (config,) = codec.decode(_update(transcription={"language": "fr"}))
    assert isinstance(config, Config) and config.language == "fr"
    # the session's model cannot: the pipeline answers an error, not a ready
    (error,) = _events(codec, Error(code="unsupported_language", message="English-only"))
    assert error["error"]["param"] == "session.audio.input.transcription.language"
    (config,) = codec.decode(_update(turn_detection=None))
    assert isinstance(config, Config) and config.language == "auto"  # not the refused "fr"
    (updated,) = _events(codec, READY)
    assert updated["session"]["audio"]["input"]["transcription"]["language"] is None


def test_server_vad_speech_stopped_and_committed_come_at_the_cut() -> None:
    """With the native `speech_stopped` (the segmenter's cut), the item is stopped and
    committed then; its final only completes it, and stops nothing twice."""
    codec = RealtimeCodec("tiny.en", prefix="t")
    _events(codec, READY)
    codec.decode(_append(4.0))
    events = _events(
        codec,
        SpeechStarted(at=0.3),
        Partial(utterance=0, revision=1, text="hello world", start=0.0, end=0.9, committed=11),
        SpeechStopped(utterance=0, at=2.2),
        _final(0, " hello world how are you", 0.0, 2.2),
        SpeechStarted(at=2.5),  # noise: cut, and no final follows
        SpeechStopped(utterance=1, at=2.8),
        SpeechStarted(at=3.0),
        SpeechStopped(utterance=2, at=3.6),
        _final(2, " Goodbye.", 2.9, 3.6),
    )
    kinds = [e["type"].rsplit(".", 1)[-1] for e in events]
    assert kinds == [
        *["speech_started", "delta", "speech_stopped", "committed", "delta", "completed"],
        *["speech_started", "speech_stopped", "committed", "speech_started", "speech_stopped"],
        *["committed", "completed", "delta", "completed"],
    ]
    assert events[2]["audio_end_ms"] == 2200
    assert events[5]["transcript"] == "hello world how are you"
    assert events[12]["transcript"] == "" and events[12]["item_id"] == events[6]["item_id"]


def test_idle_timeout_commits_the_silence_as_an_empty_item() -> None:
    codec = RealtimeCodec("tiny.en", prefix="t")
    codec.decode(_update(turn_detection={"type": "server_vad", "idle_timeout_ms": 5000}))
    _events(codec, READY, READY)
    assert len(codec.decode(_append(4.0))) == 1
    _, ping = codec.decode(_append(1.5))  # 5.5 s of silence: due
    assert isinstance(ping, Ping) and isinstance(ping.id, str)
    assert len(codec.decode(_append(1.0))) == 1  # once, until it is answered
    triggered, committed, completed = _events(codec, Pong(id=ping.id))
    assert triggered["type"] == "input_audio_buffer.timeout_triggered"
    assert (triggered["audio_start_ms"], triggered["audio_end_ms"]) == (0, 5000)
    assert committed["item_id"] == completed["item_id"] == triggered["item_id"]
    assert completed["transcript"] == ""
    # speech that starts before the next timeout's answer comes back cancels it
    codec.decode(_append(3.0))
    _, ping = codec.decode(_append(1.0))  # 10.5 s: 5.5 s since the last timeout
    assert isinstance(ping, Ping) and isinstance(ping.id, str)
    assert len(_events(codec, SpeechStarted(at=10.2))) == 1
    assert _events(codec, Pong(id=ping.id)) == []
    _events(codec, SpeechStopped(utterance=0, at=11.0), _final(0, "Hi.", 10.0, 11.0))
    assert len(codec.decode(_append(5.0))) == 1  # 4.5 s since the speech ended
    assert len(codec.decode(_append(0.6))) == 2
    with pytest.raises(Refused) as short:
        codec.decode(_update(turn_detection={"type": "server_vad", "idle_timeout_ms": 10}))
    assert short.value.param == "session.audio.input.turn_detection.idle_timeout_ms"
