"""The Flux codec alone: end-of-turn confidence, query parameters, turns from native frames,
`Configure`'s one answer, errors."""

from __future__ import annotations

import json
from typing import Any

import pytest

from protocol.codec import ProtocolError
from protocol.dialects.deepgram import QueryError
from protocol.dialects.flux import FluxCodec, end_of_turn_confidence
from protocol.dialects.flux_query import FluxThresholds, parse_flux_query
from protocol.native import (
    Configure,
    Configured,
    Error,
    Final,
    Finalize,
    KeepAlive,
    Partial,
    Ready,
    Stop,
    Word,
)

PCM_1S = bytes(32000)  # one second of 16 kHz PCM16


def test_confidence_grows_with_the_silence_and_a_finished_sentence() -> None:
    assert end_of_turn_confidence(0.0, "and then we") == 0.0
    assert end_of_turn_confidence(0.5, "and then we") == 0.5
    assert end_of_turn_confidence(0.0, "That is all.") == 0.3
    assert end_of_turn_confidence(0.4, "Is that all?") == pytest.approx(0.7)
    assert end_of_turn_confidence(0.4, 'He said "stop!"') == pytest.approx(0.7)
    assert end_of_turn_confidence(0.9, "Done.") == 1.0  # capped
    assert end_of_turn_confidence(2.0, "") == 1.0
    assert end_of_turn_confidence(-1.0, "well,") == 0.0


def test_query_parameters() -> None:
    config, thresholds, rate = parse_flux_query(
        {"model": "flux-general-en", "encoding": "linear16", "sample_rate": "16000"},
        ["Chorus"],
    )
    assert (config.encoding, config.sample_rate, config.language) == ("pcm_s16le", 16000, "en")
    assert (config.interim, config.words, config.keyterms) == (True, True, ["Chorus"])
    assert thresholds == FluxThresholds(0.7, None, 5000) and rate == 32000
    config, thresholds, rate = parse_flux_query(
        {"encoding": "mulaw", "eot_threshold": "0.9", "eager_eot_threshold": "0.4"}
    )
    assert (config.encoding, config.sample_rate, rate) == ("mulaw", 8000, 8000)
    assert thresholds == FluxThresholds(0.9, 0.4, 5000)
    config, _, rate = parse_flux_query({"encoding": "opus", "model": "flux-general-multi"})
    assert (config.encoding, config.language, rate) == ("auto", "auto", 0)


@pytest.mark.parametrize(
    ("params", "param"),
    [
        ({"eot_threshold": "0.2"}, "eot_threshold"),
        ({"eot_threshold": "1.5"}, "eot_threshold"),
        ({"eot_threshold": "high"}, "eot_threshold"),
        ({"eager_eot_threshold": "0.8", "eot_threshold": "0.7"}, "eager_eot_threshold"),
        ({"eager_eot_threshold": "0.1"}, "eager_eot_threshold"),
        ({"eot_timeout_ms": "100"}, "eot_timeout_ms"),
        ({"eot_timeout_ms": "60000"}, "eot_timeout_ms"),
        ({"encoding": "speex"}, "encoding"),
        ({"encoding": "linear32"}, "encoding"),
        ({"sample_rate": "96000"}, "sample_rate"),
        ({"sample_rate": "16000.5"}, "sample_rate"),
    ],
)
def test_bad_query_parameters_are_refused_by_name(params: dict[str, str], param: str) -> None:
    with pytest.raises(QueryError) as caught:
        parse_flux_query(params)
    assert caught.value.param == param


def codec(**thresholds: Any) -> tuple[FluxCodec, list[dict[str, Any]]]:
    flux = FluxCodec(FluxThresholds(**thresholds), bytes_per_second=32000)
    ready = Ready(session_id="ab" * 16, model="m", sample_rate=16000, language="en")
    sent = encode_all(flux, ready)
    return flux, sent


def encode_all(flux: FluxCodec, *frames: Any) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    for frame in frames:
        out.extend(json.loads(message) for message in flux.encode(frame))
    return out


def partial(text: str, end: float, silence_s: float = 0.0, utterance: int = 0) -> Partial:
    words = [Word(word=w, start=0.1 * i, end=0.1 * i + 0.1, confidence=0.9) for i, w in
             enumerate(text.split())]  # fmt: skip
    return Partial(
        utterance=utterance, revision=1, text=text, start=0.0, end=end,
        silence_s=silence_s, words=words,
    )  # fmt: skip


def final(text: str, *, utterance: int = 0, from_finalize: bool = False) -> Final:
    return Final(
        utterance=utterance, text=text, start=0.0, end=2.0, language="en", confidence=0.9,
        from_finalize=from_finalize, words=[Word(word="Hi", start=0.1, end=0.4, confidence=0.8)],
    )  # fmt: skip


def test_a_turn_from_drafts_to_its_end() -> None:
    flux, sent = codec(eager_eot_threshold=0.5)
    assert sent == [{"type": "Connected", "request_id": "abababab-abab-abab-abab-abababababab",
                     "sequence_id": 0}]  # fmt: skip
    sent += encode_all(
        flux,
        partial("Hello", 0.5),
        partial("Hello there", 0.75),
        partial("Hello there.", 1.0, silence_s=0.25),  # 0.55: eager
        partial("Hello there, and", 1.25),  # speech again: resumed
        partial("Hello there, and bye.", 1.5, silence_s=0.1),  # 0.4
    )
    events = [m["event"] for m in sent[1:]]
    assert events == ["StartOfTurn", "Update", "EagerEndOfTurn", "TurnResumed", "Update"]
    assert [m["sequence_id"] for m in sent] == [0, 1, 2, 3, 4, 5]
    assert sent[3]["end_of_turn_confidence"] == 0.55
    assert sent[1]["audio_window_start"] == 0.0 and sent[1]["audio_window_end"] == 0.5
    assert flux.decode(PCM_1S) == [PCM_1S]  # not over yet: no finalize
    sent = encode_all(flux, partial("Hello there, and bye.", 1.75, silence_s=0.45))  # 0.75
    assert [m["event"] for m in sent] == ["EagerEndOfTurn"]  # eager again, since resumed
    assert flux.decode(PCM_1S) == [Finalize(), PCM_1S]  # the turn is over: cut it now
    assert flux.decode(PCM_1S) == [PCM_1S]  # once
    [end] = encode_all(flux, final("Hello there, and bye.", from_finalize=True))
    assert (end["event"], end["trigger"], end["turn_index"]) == ("EndOfTurn", "model", 0)
    assert end["transcript"] == "Hello there, and bye." and end["end_of_turn_confidence"] == 0.75
    assert end["words"] == [{"word": "Hi", "confidence": 0.8, "start": 0.1, "end": 0.4}]
    [start] = encode_all(flux, partial("Next", 3.0, utterance=1))
    assert (start["event"], start["turn_index"]) == ("StartOfTurn", 1)
    assert "trigger" not in start


def test_turns_do_not_overlap() -> None:
    """A draft of the next utterance can come before the open turn's final (finals take
    longer): it is not sent, so turn n ends before turn n + 1 starts."""
    flux, _ = codec()
    encode_all(flux, partial("One.", 1.0))
    assert encode_all(flux, partial("Two", 2.0, utterance=1)) == []
    [end] = encode_all(flux, final("One."))
    assert (end["event"], end["turn_index"]) == ("EndOfTurn", 0)
    [start] = encode_all(flux, partial("Two more", 2.3, utterance=1))
    assert (start["event"], start["turn_index"]) == ("StartOfTurn", 1)


def test_silence_past_the_timeout_ends_the_turn_whatever_the_confidence() -> None:
    flux, _ = codec(eot_threshold=1.0, eot_timeout_ms=600)
    encode_all(flux, partial("and then", 1.0, silence_s=0.65))
    assert flux.decode(PCM_1S)[0] == Finalize()
    [end] = encode_all(flux, final("And then.", from_finalize=True))
    assert end["trigger"] == "timeout"


def test_a_turn_end_asked_far_behind_the_audio_waits_for_a_newer_draft() -> None:
    flux, _ = codec()
    flux.decode(PCM_1S * 3)  # the client is 3 s in; the draft saw 1 s
    encode_all(flux, partial("Done.", 1.0, silence_s=0.5))
    assert flux.decode(PCM_1S) == [PCM_1S]


def test_force_end_turn_close_stream_and_keepalive() -> None:
    flux, _ = codec()
    encode_all(flux, partial("Wait", 0.5))
    assert flux.decode('{"type": "ForceEndTurn"}') == [Finalize()]
    [end] = encode_all(flux, final("Wait.", from_finalize=True))
    assert end["trigger"] == "manual"
    assert flux.decode('{"type": "KeepAlive"}') == [KeepAlive()]
    assert flux.decode('{"type": "CloseStream"}') == [Stop()]
    [start, end] = encode_all(flux, final("Bye.", utterance=1))  # a turn with no draft shown
    assert (start["event"], end["event"], end["trigger"]) == ("StartOfTurn", "EndOfTurn", "manual")
    assert encode_all(flux, final("", utterance=2)) == []  # nothing said: no turn


def test_each_configure_is_answered_once() -> None:
    flux, _ = codec()
    asked = flux.decode(
        '{"type": "Configure", "thresholds": {"eot_threshold": 0.9, "eager_eot_threshold": 0.5},'
        ' "keyterms": "Chorus"}'
    )
    assert asked == [Configure(keyterms=["Chorus"])]
    assert flux.thresholds.eot_threshold == 0.7  # not before the session says yes
    [success] = encode_all(flux, Configured(keyterms=["Chorus"], prompt=None))
    assert success["type"] == "ConfigureSuccess" and success["keyterms"] == ["Chorus"]
    assert success["thresholds"] == {
        "eot_threshold": 0.9, "eager_eot_threshold": 0.5, "eot_timeout_ms": 5000
    }  # fmt: skip
    assert flux.thresholds == FluxThresholds(0.9, 0.5, 5000)
    for bad in (
        '{"type": "Configure", "thresholds": {"eot_threshold": 0.95, "eager_eot_threshold": 1}}',
        '{"type": "Configure", "thresholds": {"eot_threshold": "high"}}',
        '{"type": "Configure", "surprise": 1}',
    ):
        with pytest.raises(ProtocolError) as caught:
            flux.decode(bad)
        [failure] = encode_all(flux, Error(code=caught.value.code, message=caught.value.message))
        assert failure["type"] == "ConfigureFailure" and failure["code"] == "CONFIGURE_INVALID"
    flux.decode('{"type": "Configure", "thresholds": {"eot_timeout_ms": 900}, "keyterms": []}')
    [failure] = encode_all(flux, Error(code="invalid_vocabulary", message="too many"))
    assert failure["code"] == "CONFIGURE_KEYTERM_LIMIT_EXCEEDED"
    assert flux.thresholds.eot_timeout_ms == 5000  # refused whole


def test_bad_input_is_a_warning_and_only_an_ending_is_an_error() -> None:
    from deepgram.listen.v2.types import ListenV2FatalError, ListenV2Warning

    flux, _ = codec()
    with pytest.raises(ProtocolError) as caught:
        flux.decode('{"type": "Shout"}')
    [warning] = encode_all(flux, Error(code=caught.value.code, message=caught.value.message))
    # the SDK's own models, strictly: a non-fatal one is never the SDK's fatal `Error`
    assert ListenV2Warning.model_validate(warning).code == "UNKNOWN_TYPE"
    assert warning["type"] == "Warning" and warning["request_id"] == flux.request_id
    assert warning["sequence_id"] == 1 and "Flux" in warning["description"]
    [fatal] = encode_all(flux, Error(code="idle_timeout", message="closing", fatal=True))
    assert ListenV2FatalError.model_validate(fatal).code == "IDLE_TIMEOUT"
    assert fatal["type"] == "Error" and fatal["sequence_id"] == 2
    assert flux.decode(b"") == [Stop()]
