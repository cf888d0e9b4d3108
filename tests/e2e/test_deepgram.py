"""Deepgram live streaming on `WS /v1/listen`: the codec alone, then the official
`deepgram-sdk` client and a raw WebSocket client against a real server with tiny.en."""

from __future__ import annotations

import hashlib
import json
import time
from pathlib import Path
from typing import Any

import jiwer
import msgspec
import numpy as np
import pytest
import soxr
import trio
from support.dialect_helpers import (
    DATA,
    chunks,
    deepgram_client,
    exchange,
    load_make_clips,
    overlap,
    pcm16_file,
    reference,
    serving,
    speech,
)
from whisper_normalizer.english import EnglishTextNormalizer

from actors.audio.decoder import AudioDecoder
from actors.model.port import SpeechModel
from protocol.codec import ProtocolError
from protocol.dialects.deepgram import DeepgramCodec, QueryError, parse_query
from protocol.native import (
    Error,
    Final,
    Finalize,
    KeepAlive,
    Partial,
    Ready,
    SpeechStarted,
    Stop,
    Stopped,
    UtteranceEnd,
    Word,
)
from service.session.config import settle
from service.session.ports import StreamOptions
from service.session.segmenting import make_decoder

# deepgram-sdk 7.17 imports a name that websockets 14+ deprecated; not ours to fix.
pytestmark = pytest.mark.filterwarnings("ignore:websockets\\.:DeprecationWarning")
JFK = "faster_whisper/jfk.flac"
RESULTS_KEYS = {
    "type",
    "channel_index",
    "duration",
    "start",
    "is_final",
    "speech_final",
    "from_finalize",
    "channel",
    "metadata",
}
WORD_KEYS = {"word", "start", "end", "confidence", "punctuated_word"}


# -- the codec alone ---------------------------------------------------------------------------


def test_query_options_map_onto_the_session_config() -> None:
    config, options = parse_query(
        {
            "model": "nova-3",
            "encoding": "linear16",
            "sample_rate": "44100",
            "channels": "2",
            "interim_results": "true",
            "endpointing": "800",
            "punctuate": "true",
        }
    )
    assert (config.encoding, config.sample_rate, config.interim) == ("pcm_s16le", 44100, True)
    assert (config.endpointing_ms, config.words, config.language) == (800, True, "en")
    assert (options.channels, options.punctuate, options.vad_events) == (2, True, False)
    assert config.channels == 2  # the session's decoder averages them to mono

    config, options = parse_query({})  # no encoding: the container is detected, as Deepgram
    assert (config.encoding, config.interim, options.utterance_end) == ("auto", False, False)
    config, options = parse_query({"encoding": "mulaw"})
    assert (config.encoding, config.sample_rate, config.channels) == ("mulaw", 8000, 1)
    config, _ = parse_query({"endpointing": "false", "utterance_end_ms": "1500"})
    assert config.endpointing_ms == 1500
    config, _ = parse_query({"endpointing": "10", "language": "multi"})
    assert (config.endpointing_ms, config.language) == (300, "auto")


@pytest.mark.parametrize(
    ("params", "param"),
    [
        ({"encoding": "speex"}, "encoding"),
        ({"encoding": "linear16", "sample_rate": "fast"}, "sample_rate"),
        ({"encoding": "linear16", "sample_rate": "96000"}, "sample_rate"),
        ({"channels": "9"}, "channels"),
        ({"interim_results": "maybe"}, "interim_results"),
        ({"language": "English!"}, "language"),
    ],
)
def test_query_errors_name_the_parameter(params: dict[str, str], param: str) -> None:
    with pytest.raises(QueryError) as caught:
        parse_query(params)
    assert caught.value.param == param


def _codec(**query: str) -> DeepgramCodec:
    _, options = parse_query(query)
    codec = DeepgramCodec(options, created="2025-01-01T00:00:00.000Z", model="tiny.en")
    assert (
        codec.encode(Ready(session_id="ab" * 16, model="tiny.en", sample_rate=16000, language="en"))
        == []
    )
    return codec


def _one(codec: DeepgramCodec, frame: Any) -> dict[str, Any]:
    [message] = codec.encode(frame)
    assert isinstance(message, str)
    decoded: dict[str, Any] = json.loads(message)
    return decoded


def test_results_carry_deepgrams_fields_and_merged_punctuation() -> None:
    codec = _codec(punctuate="true", interim_results="true")
    draft_words = [
        Word(word="Hello", start=0.5, end=0.8, confidence=0.9),
        Word(word=",", start=0.8, end=0.8, confidence=0.4),
        Word(word="wor", start=0.85, end=1.05, confidence=0.6),
    ]
    draft = Partial(
        utterance=0,
        revision=1,
        text="Hello, wor",
        start=0.5,
        end=1.1,
        confidence=0.7,
        words=draft_words,
    )
    partial = _one(codec, draft)
    assert set(partial) == RESULTS_KEYS
    assert (partial["is_final"], partial["speech_final"], partial["from_finalize"]) == (
        False,
        False,
        False,
    )
    # the draft's own timed words, punctuation merged as a final's; the draft's confidence
    [alternative] = partial["channel"]["alternatives"]
    assert (alternative["transcript"], alternative["confidence"]) == ("Hello, wor", 0.7)
    assert [(w["word"], w["punctuated_word"]) for w in alternative["words"]] == [
        ("hello", "Hello,"),
        ("wor", "wor"),
    ]
    spans = [(w["start"], w["end"], w["confidence"]) for w in alternative["words"]]
    assert spans == [(0.5, 0.8, 0.9), (0.85, 1.05, 0.6)]
    words = [
        Word(word="Hello", start=0.5, end=0.9, confidence=0.9),
        Word(word=",", start=0.9, end=0.9, confidence=0.5),
        Word(word="world.", start=1.0, end=1.4, confidence=0.8),
    ]
    final = _one(
        codec,
        Final(
            utterance=0,
            text="Hello, world.",
            start=0.5,
            end=1.6,
            language="en",
            confidence=0.85,
            words=words,
        ),
    )
    assert set(final) == RESULTS_KEYS
    assert final["channel_index"] == [0, 1]
    assert (final["start"], final["duration"]) == (0.5, 1.1)
    assert (final["is_final"], final["speech_final"], final["from_finalize"]) == (True, True, False)
    alternative = final["channel"]["alternatives"][0]
    assert (alternative["transcript"], alternative["confidence"]) == ("Hello, world.", 0.85)
    assert [w["punctuated_word"] for w in alternative["words"]] == ["Hello,", "world."]
    assert [w["word"] for w in alternative["words"]] == ["hello", "world"]
    assert all(set(w) == WORD_KEYS for w in alternative["words"])
    metadata = final["metadata"]
    assert metadata["request_id"] == "abababab-abab-abab-abab-abababababab"
    assert metadata["model_info"] == {"name": "tiny.en", "version": "chorus", "arch": "whisper"}
    assert isinstance(metadata["model_uuid"], str)


def test_unpunctuated_transcripts_are_lower_case_without_marks() -> None:
    codec = _codec()
    final = _one(
        codec,
        Final(utterance=0, text="Yes, I'm here!", start=0, end=1, language="en", confidence=0.9),
    )
    assert final["channel"]["alternatives"][0]["transcript"] == "yes i'm here"


def test_speech_final_only_when_a_pause_ended_the_utterance() -> None:
    codec = _codec(utterance_end_ms="1000", vad_events="true")
    assert _one(codec, SpeechStarted(at=0.3)) == {
        "type": "SpeechStarted",
        "channel": [0],
        "timestamp": 0.3,
    }
    continued = _one(codec, SpeechStarted(at=15.3))  # the segmenter cut at the maximum length
    assert continued["type"] == "SpeechStarted"
    cut = _one(
        codec, Final(utterance=0, text="a", start=0.3, end=15.3, language="en", confidence=1.0)
    )
    assert (cut["is_final"], cut["speech_final"]) == (True, False)
    assert codec.encode(UtteranceEnd(utterance=0, at=15.3)) == []  # speech went on
    paused = _one(
        codec,
        Final(
            utterance=1,
            text="b",
            start=15.3,
            end=17.0,
            language="en",
            confidence=1.0,
            words=[Word(word="b", start=15.4, end=16.8, confidence=1.0)],
        ),
    )
    assert paused["speech_final"] is True
    assert _one(codec, UtteranceEnd(utterance=1, at=17.0)) == {
        "type": "UtteranceEnd",
        "channel": [0, 1],
        "last_word_end": 16.8,
    }
    flushed = _one(
        codec,
        Final(
            utterance=2,
            text="c",
            start=18,
            end=19,
            language="en",
            confidence=1.0,
            from_finalize=True,
        ),
    )
    assert (flushed["speech_final"], flushed["from_finalize"]) == (False, True)


def test_events_the_client_did_not_ask_for_are_not_sent() -> None:
    codec = _codec()
    assert codec.encode(SpeechStarted(at=1.0)) == []
    assert codec.encode(UtteranceEnd(utterance=0, at=2.0)) == []


def test_client_messages_and_metadata() -> None:
    codec = _codec(encoding="linear16")
    assert codec.decode('{"type": "KeepAlive"}') == [KeepAlive()]
    assert codec.decode('{"type": "Finalize"}') == [Finalize()]
    assert codec.decode('{"type": "CloseStream"}') == [Stop()]
    assert codec.decode(b"") == [Stop()]  # Deepgram's older way to close
    assert codec.decode(b"\x01\x02\x03\x04") == [b"\x01\x02\x03\x04"]
    for bad, code in [('{"type": "Reconfigure"}', "unknown_type"), ("nope", "invalid_json")]:
        with pytest.raises(ProtocolError) as caught:
            codec.decode(bad)
        assert caught.value.code == code
    error = _one(codec, Error(code="unknown_type", message="what is Reconfigure"))
    assert error == {
        "type": "Error",
        "variant": "SchemaError",
        "description": "what is Reconfigure",
        "code": "unknown_type",
    }
    metadata = _one(codec, Stopped(session_id="x", transcript="", duration_s=2.5, utterances=0))
    assert metadata["type"] == "Metadata"
    assert metadata["sha256"] == hashlib.sha256(b"\x01\x02\x03\x04").hexdigest()
    assert (metadata["duration"], metadata["channels"], metadata["transaction_key"]) == (
        2.5,
        1,
        "deprecated",
    )
    assert metadata["models"] == list(metadata["model_info"])


def _session_decoder(**query: str) -> AudioDecoder:
    """The decoder a session makes from the config these query parameters map to."""
    config, _ = parse_query(query)
    return make_decoder(settle(config, StreamOptions()))


def test_g711_expansion_matches_the_standard_table() -> None:
    decoder = _session_decoder(encoding="mulaw", sample_rate="16000")  # 16 kHz: no resampling
    mulaw = decoder.feed(bytes([0xFF, 0x7F, 0x00, 0x80])) * 32768
    assert mulaw.tolist() == [0, 0, -32124, 32124]
    decoder = _session_decoder(encoding="alaw", sample_rate="16000")
    alaw = decoder.feed(bytes([0xD5, 0x55, 0xAA, 0x2A])) * 32768
    assert alaw.tolist() == [8, -8, 32256, -32256]


def test_downmix_averages_channels_across_chunk_boundaries() -> None:
    left = np.arange(-500, 500, dtype="<i2")
    right = (left // 2).astype("<i2")
    interleaved = np.stack([left, right], axis=1).astype("<i2").tobytes()
    decoder = _session_decoder(encoding="linear16", channels="2")
    out = np.concatenate([decoder.feed(piece) for piece in chunks(interleaved, 333)])  # odd sizes
    expected = ((left.astype(np.int32) + right) // 2).astype("<i2")
    assert np.array_equal(out * 32768, expected)
    assert decoder.statistics().misaligned_frames > 0  # a chunk of 333 bytes splits a sample


# -- against a real server ---------------------------------------------------------------------


def _sdk_stream(address: str, audio: bytes, **options: str) -> list[Any]:
    """The official client, unmodified, pointed at the local server (runs in a thread)."""

    client = deepgram_client(address)
    with client.listen.v1.connect(model="nova-3", **options) as socket:
        for piece in chunks(audio, 6400):  # 200 ms of 16 kHz PCM16
            socket.send_media(piece)
            time.sleep(0.05)  # four times real time
        socket.send_close_stream()
        return list(socket)


def _finals(messages: list[Any]) -> str:
    return " ".join(
        m.channel.alternatives[0].transcript
        for m in messages
        if getattr(m, "type", None) == "Results" and m.is_final
    )


async def test_official_sdk_gets_a_correct_transcript(
    tiny_model: SpeechModel, tmp_path: Path
) -> None:
    audio = pcm16_file(speech(JFK))
    async with serving(tiny_model, tmp_path) as address:
        messages = await trio.to_thread.run_sync(
            lambda: _sdk_stream(
                address,
                audio,
                encoding="linear16",
                sample_rate="16000",
                interim_results="true",
                punctuate="true",
            )
        )
    kinds = [type(message).__name__ for message in messages]
    assert kinds[-1] == "ListenV1Metadata", kinds
    assert "dict" not in kinds  # every message parsed into the SDK's own models
    assert overlap(_finals(messages), reference(JFK)) >= 0.8
    results = [m for m in messages if type(m).__name__ == "ListenV1Results"]
    assert {m.metadata.request_id for m in results} == {messages[-1].request_id}
    assert messages[-1].duration == pytest.approx(11.0, abs=0.05)
    assert any(not m.is_final and m.channel.alternatives[0].words for m in results)
    for result in results:
        if result.channel.alternatives[0].words:  # interim results' words are the draft's
            words = result.channel.alternatives[0].words
            assert all(
                result.start <= w.start <= w.end <= result.start + result.duration + 1e-3
                for w in words
            )
            assert all(w.punctuated_word for w in words)


async def test_wire_shapes_with_every_event(tiny_model: SpeechModel, tmp_path: Path) -> None:
    clip = "ljspeech_coqui/LJ001-0001.wav"
    audio = pcm16_file(speech(clip))
    half = len(audio) // 2 // 2 * 2
    query = (
        "encoding=linear16&sample_rate=16000&interim_results=true&vad_events=true"
        "&utterance_end_ms=1000&punctuate=true&model=nova-2"
    )
    outgoing: list[str | bytes] = [
        *chunks(audio[:half], 8000),
        '{"type": "KeepAlive"}',
        '{"type": "Finalize"}',
        *chunks(audio[half:], 8000),
        '{"type": "CloseStream"}',
    ]
    async with serving(tiny_model, tmp_path) as address:
        result = await exchange(f"ws://{address}/v1/listen?{query}", outgoing)
    assert result.close_code == 1000
    metadata = result.messages[-1]
    assert metadata["type"] == "Metadata"
    assert set(metadata) == {
        "type",
        "transaction_key",
        "request_id",
        "sha256",
        "created",
        "duration",
        "channels",
        "models",
        "model_info",
    }
    assert metadata["sha256"] == hashlib.sha256(audio).hexdigest()
    assert metadata["duration"] == pytest.approx(len(audio) / 32000, abs=0.05)
    results = result.of_type("Results")
    assert all(set(m) == RESULTS_KEYS for m in results)
    finals = [m for m in results if m["is_final"]]
    assert any(m["from_finalize"] for m in finals)  # the Finalize in the middle of speech
    for message in results:
        alternative = message["channel"]["alternatives"][0]
        assert isinstance(alternative["transcript"], str)
        assert isinstance(alternative["confidence"], float)
        assert isinstance(message["start"], float) and isinstance(message["duration"], float)
        for word in alternative["words"]:
            assert set(word) == WORD_KEYS
            assert isinstance(word["word"], str) and isinstance(word["confidence"], float)
    assert result.of_type("SpeechStarted")
    for event in result.of_type("UtteranceEnd"):
        assert event["channel"] == [0, 1] and isinstance(event["last_word_end"], float)
    text = " ".join(m["channel"]["alternatives"][0]["transcript"] for m in finals)
    assert overlap(text, reference(clip)) >= 0.7  # one cut in mid-sentence


def _mulaw(samples: np.ndarray[Any, np.dtype[np.float32]]) -> bytes:
    """G.711 μ-law compression (the test's own encoder, to feed the server's expander)."""
    pcm = np.clip(samples * 32768, -32635, 32635).astype(np.int32)
    sign = np.where(pcm < 0, 0x80, 0)
    magnitude = np.abs(pcm) + 0x84
    exponent = np.floor(np.log2(magnitude)).astype(np.int32) - 7
    mantissa = (magnitude >> (exponent + 3)) & 0x0F
    coded: bytes = (~(sign | (exponent << 4) | mantissa) & 0xFF).astype(np.uint8).tobytes()
    return coded


async def test_telephone_mulaw_at_8khz(tiny_model: SpeechModel, tmp_path: Path) -> None:
    """Runs on a fresh clone: the project's own espeak-ng clip, sent as 8 kHz μ-law. (Not
    weather.wav: over a telephone line tiny.en hears it as "But when we're today in sunny"
    on an AVX2-only EPYC, decoding the whole clip at once and at 87947e8 alike; library.wav it reads
    word for word there.)"""
    from actors.audio.file_decoder import decode_file

    voice = decode_file(DATA / "library.wav")
    narrow = soxr.resample(voice, 16000, 8000).astype(np.float32)
    outgoing: list[str | bytes] = [*chunks(_mulaw(narrow), 1600), '{"type": "CloseStream"}']
    query = "encoding=mulaw&sample_rate=8000&punctuate=false"
    async with serving(tiny_model, tmp_path) as address:
        result = await exchange(f"ws://{address}/v1/listen?{query}", outgoing)
    text = " ".join(
        m["channel"]["alternatives"][0]["transcript"]
        for m in result.of_type("Results")
        if m["is_final"]
    )
    said = "please return the library books before friday afternoon"
    assert overlap(text, said) >= 0.7, text
    assert text == text.lower()


async def test_browser_webm_in_250ms_chunks_matches_pcm(
    tiny_model: SpeechModel, tmp_path: Path
) -> None:
    """What a browser's MediaRecorder sends (live webm/opus, no `encoding`) against the same
    audio as 16 kHz PCM."""
    from actors.audio.file_decoder import decode_file

    voice = decode_file(speech(JFK))
    webm = load_make_clips().encode_clip(
        soxr.resample(voice, 16000, 48000).astype(np.float32)[np.newaxis, :],
        48000,
        container="webm",
        codec="libopus",
        options={"b": "32000"},
        container_options={"live": "1", "cluster_time_limit": "250"},
    )
    per_chunk = int(len(webm) / (len(voice) / 16000) * 0.25)
    pcm = bytes((np.clip(voice, -1, 1) * 32767).astype("<i2").tobytes())
    normalize = EnglishTextNormalizer()
    errors = {}
    async with serving(tiny_model, tmp_path) as address:
        for name, query, audio, size in [
            ("webm", "", webm, per_chunk),
            ("pcm", "encoding=linear16&sample_rate=16000", pcm, 8000),
        ]:
            outgoing: list[str | bytes] = [*chunks(audio, size), '{"type": "CloseStream"}']
            result = await exchange(f"ws://{address}/v1/listen?{query}", outgoing)
            assert result.close_code == 1000
            text = " ".join(
                m["channel"]["alternatives"][0]["transcript"]
                for m in result.of_type("Results")
                if m["is_final"]
            )
            errors[name] = jiwer.wer(normalize(reference(JFK)), normalize(text))
    assert errors["pcm"] <= 0.2
    assert errors["webm"] <= errors["pcm"] + 0.1, errors


async def test_stereo_linear16_is_downmixed(tiny_model: SpeechModel, tmp_path: Path) -> None:
    mono = np.frombuffer(pcm16_file(speech(JFK)), "<i2")
    stereo = np.stack([mono, mono], axis=1).astype("<i2").tobytes()
    async with serving(tiny_model, tmp_path) as address:
        messages = await trio.to_thread.run_sync(
            lambda: _sdk_stream(
                address, stereo, encoding="linear16", sample_rate="16000", channels="2"
            )
        )
    assert overlap(_finals(messages), reference(JFK)) >= 0.8
    assert messages[-1].channels == 2
    assert messages[-1].duration == pytest.approx(11.0, abs=0.05)


def test_metadata_struct_round_trips() -> None:
    """The Metadata message decodes with the SDK's own model (a guard on field types)."""
    from deepgram.listen.v1.types.listen_v1metadata import ListenV1Metadata

    codec = _codec()
    [text] = codec.encode(Stopped(session_id="x", transcript="", duration_s=1.0, utterances=0))
    assert isinstance(text, str)
    parsed = ListenV1Metadata.model_validate(msgspec.json.decode(text))
    assert parsed.duration == 1.0
