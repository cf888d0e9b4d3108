"""The vocabulary engine alone, Deepgram v1's key terms and `Configure` in its codec, and the
model adapter's hotwords."""

from __future__ import annotations

import json

import pytest
from support.audio_files import SPEECH
from support.dialect_helpers import reference

from actors.audio.file_decoder import decode_file
from actors.model.port import DecodeOptions, Request, SpeechModel
from actors.model.vocabulary import MODE, Vocabulary, vocabulary_problem
from actors.model.whisper import WhisperAdapter
from protocol.codec import ProtocolError
from protocol.dialects.configure import query_keyterms
from protocol.dialects.deepgram import DeepgramCodec, parse_query
from protocol.native import Config, Configure, Configured, Error, Ready, config_from_query
from service.session.config import check_config
from service.session.ports import StreamOptions

NAMES = ("Sweynheim", "Pannartz", "Subiaco")


def test_a_vocabulary_is_written_into_the_prompt_by_default() -> None:
    assert MODE == "prompt"  # the measured winner (docs/accuracy.md)
    vocabulary = Vocabulary.of(["Sweynheim", "  Pannartz ", "Sweynheim", " "], "Printers.")
    assert vocabulary == Vocabulary(("Sweynheim", "Pannartz"), "Printers.")
    options = vocabulary.apply(DecodeOptions(context="earlier text"))
    assert (options.prompt, options.hotwords) == ("Printers. Sweynheim, Pannartz.", None)
    assert options.context == "earlier text"
    hot = vocabulary.apply(DecodeOptions(), "hotwords")
    assert (hot.prompt, hot.hotwords) == ("Printers.", "Sweynheim Pannartz")
    assert Vocabulary.of(None, "  ").apply(DecodeOptions(prompt="old")).prompt is None
    assert Vocabulary.of(["Subiaco"], None).apply(DecodeOptions()).prompt == "Subiaco."


def test_a_change_replaces_what_it_gives() -> None:
    vocabulary = Vocabulary.of(["Subiaco"], "Printers.")
    assert vocabulary.changed(None, None) == vocabulary
    assert vocabulary.changed([], None) == Vocabulary((), "Printers.")
    assert vocabulary.changed(["Pannartz"], "") == Vocabulary(("Pannartz",), None)


@pytest.mark.parametrize(
    ("keyterms", "why"),
    [
        (["x"] * 101, "101 key terms; at most 100"),
        (["x" * 101], "1 to 100 characters"),
        ([" "], "1 to 100 characters"),
        (["bell\x07"], "printable"),
        (["x" * 60] * 20, "together; at most 1000"),
    ],
)
def test_hostile_key_terms_are_refused(keyterms: list[str], why: str) -> None:
    problem = vocabulary_problem(keyterms)
    assert problem is not None and why in problem
    refused = check_config(Config(keyterms=keyterms), StreamOptions(model="tiny.en"))
    assert refused is not None and refused.code == "invalid_vocabulary"


def test_deepgram_query_key_terms() -> None:
    assert query_keyterms([], []) is None
    assert query_keyterms(["Sweynheim"], ["Subiaco:2", "Rome:-1.5", "ratio:x"]) == [
        "Sweynheim",
        "Subiaco",
        "Rome",
        "ratio:x",
    ]
    config, _ = parse_query({"encoding": "linear16"}, ["Subiaco"])
    assert config.keyterms == ["Subiaco"]


def test_native_query_key_terms_are_comma_separated() -> None:
    config = config_from_query({"keyterms": "Sweynheim, Subiaco,,", "prompt": "Printers."})
    assert config.keyterms == ["Sweynheim", " Subiaco"]  # the engine trims them
    assert Vocabulary.of(config.keyterms, config.prompt).keyterms == ("Sweynheim", "Subiaco")


def v1_codec() -> DeepgramCodec:
    _, options = parse_query({})
    codec = DeepgramCodec(options, created="2026-01-01T00:00:00.000Z", model="tiny.en")
    codec.encode(Ready(session_id="ab" * 16, model="tiny.en", sample_rate=16000, language="en"))
    return codec


def answer(codec: DeepgramCodec, frame: Configured | Error) -> dict[str, object]:
    [message] = codec.encode(frame)
    assert isinstance(message, str)
    parsed: dict[str, object] = json.loads(message)
    return parsed


def test_deepgram_v1_configure_is_answered_once() -> None:
    codec = v1_codec()
    asked = codec.decode('{"type": "Configure", "keyterms": ["Subiaco"]}')
    assert asked == [Configure(keyterms=["Subiaco"])]
    success = answer(codec, Configured(keyterms=["Subiaco"], prompt=None))
    assert success == {
        "type": "ConfigureSuccess",
        "request_id": "abababab-abab-abab-abab-abababababab",
        "keyterms": ["Subiaco"],
    }
    codec.decode('{"type": "Configure", "features": {"numerals": true}}')
    assert "keyterms" not in answer(codec, Configured(keyterms=["Subiaco"], prompt=None))
    codec.decode('{"type": "Configure", "features": {"numerals": true}}')  # answered later
    with pytest.raises(ProtocolError) as caught:
        codec.decode('{"type": "Configure", "keyterms": "Subiaco"}')
    failure = answer(codec, Error(code=caught.value.code, message=caught.value.message))
    assert (failure["type"], failure["code"]) == ("ConfigureFailure", "CONFIGURE_INVALID")
    assert "keyterms" not in answer(codec, Configured(keyterms=["Subiaco"], prompt=None))
    codec.decode('{"type": "Configure", "keyterms": ["x"]}')
    failure = answer(codec, Error(code="invalid_vocabulary", message="too many"))
    assert failure["code"] == "CONFIGURE_KEYTERM_LIMIT_EXCEEDED"
    with pytest.raises(ProtocolError) as caught:  # not a Configure: an ordinary error
        codec.decode('{"type": "Shout"}')
    assert answer(codec, Error(code=caught.value.code, message=""))["type"] == "Error"


def test_the_adapter_puts_hotwords_first(tiny_model: SpeechModel) -> None:
    assert isinstance(tiny_model, WhisperAdapter)
    name = "ljspeech_coqui/LJ001-0002.wav"
    audio = decode_file(SPEECH / name)
    options = DecodeOptions(
        language="en", hotwords="Sweynheim Subiaco", prompt="Printers.", context="Before."
    )
    [result] = tiny_model.transcribe_batch([Request(audio, options)])
    assert "comparatively" in result.text.lower(), (result.text, reference(name))
    prefix = tiny_model._prefix(Request(audio, options))
    encode = tiny_model._encode
    expected = [*encode("Sweynheim Subiaco"), *encode("Printers."), *encode("Before.")]
    assert prefix[1:] == expected
