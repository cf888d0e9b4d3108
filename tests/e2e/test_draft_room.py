"""How many tokens a decode may write (`actors/model/windows.py`): CTranslate2's `max_length`
as the adapter sets it, what CTranslate2 then writes, and a draft that runs out of room
flagged looped and cut where its repeat starts."""

from __future__ import annotations

from typing import Any

import ctranslate2
import numpy as np
import pytest
from support.audio_files import DATA, load

import actors.model.windows as windows
from actors.model.judging import before_repeat, before_trailing_repeat, looped
from actors.model.port import DecodeOptions, Request, SpeechModel
from actors.model.whisper import WhisperAdapter
from actors.model.windows import max_length, token_cap


@pytest.mark.parametrize(
    ("text", "kept"),
    [
        ("The forms of printed letters should be viewed. The forms",
         "The forms of printed letters should be viewed."),
        ("in B in B in B", "in B"),
        ("but but but", "but"),
        ("produced, produced, produced,", "produced,"),
        ("ask not what your country can do", "ask not what your country can do"),
        ("the cat sat on the mat", "the cat sat on the mat"),
    ],
)  # fmt: skip
def test_a_repeat_cut_short_at_the_end_is_dropped(text: str, kept: str) -> None:
    assert before_trailing_repeat(before_repeat(text)) == kept


def _draft(seconds: float) -> Request:
    return Request(np.zeros(int(seconds * 16000), np.float32), DecodeOptions(partial=True))


@pytest.mark.parametrize("start", [2, 4, 35])
@pytest.mark.parametrize("seconds", [0.5, 2.4, 6.0])
def test_each_draft_gets_room_for_its_audio_and_no_more(start: int, seconds: float) -> None:
    room = windows.DRAFT_TOKENS + int(seconds * windows.DRAFT_TOKENS_PER_S)
    length = max_length([start], [start], [_draft(seconds)])
    assert token_cap(length, start) == room
    # in a call with a longer draft, the shorter still gets at least its room
    length = max_length([start, start], [start, start], [_draft(seconds), _draft(seconds + 3)])
    assert token_cap(length, start) > room


def test_finals_keep_sixteen_tokens_and_twelve_a_second_after_the_longest_prompt() -> None:
    final = Request(np.zeros(5 * 16000, np.float32))
    assert max_length([35, 20], [35, 20], [final, final]) == 35 + 16 + 60
    assert max_length([400], [400], [final]) == windows.MAX_TOKENS


def _tokens(model: SpeechModel) -> tuple[Any, Any, Any]:
    assert isinstance(model, WhisperAdapter)
    whisper = model._whisper
    tokenizer = model._tokenizer("en", "transcribe")
    return whisper, tokenizer, whisper.model


@pytest.mark.parametrize("context", [0, 7, 20])
@pytest.mark.parametrize("length", [20, 30, 44])
def test_token_cap_is_what_ctranslate2_writes(
    tiny_model: SpeechModel, context: int, length: int
) -> None:
    """CTranslate2 (4.8) stops a Whisper decode at half its `max_length`, or at what the
    prompt leaves of it plus one: the rule `token_cap` is, checked on speech long enough
    to go on past every cap here."""
    whisper, tokenizer, model = _tokens(tiny_model)
    names = ("weather.wav", "library.wav", "garden.wav")
    speech = np.concatenate([load(DATA / name) for name in names])
    audio = np.zeros(30 * 16000, np.float32)
    audio[: min(len(speech), len(audio))] = speech[: len(audio)]
    features = whisper.feature_extractor(audio, padding=160)[None, :, :3000]
    encoded = model.encode(ctranslate2.StorageView.from_array(np.ascontiguousarray(features)))
    earlier = tokenizer.encode(" A weather report, then a walk to the library." * 4)[:context]
    before = [tokenizer.sot_prev, *earlier] if context else []
    prompt = [*before, *tokenizer.sot_sequence, tokenizer.no_timestamps]
    written = model.generate(encoded, [prompt], beam_size=1, max_length=length)[0]
    assert len(written.sequences_ids[0]) == token_cap(length, len(prompt))


def test_a_draft_that_runs_out_of_room_is_flagged_looped_and_cut(
    tiny_model: SpeechModel, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With room for a few tokens only, a draft of a long clip runs out of room: it is
    flagged looped, whatever its prompt (a short prompt's cap is half of `max_length`, which
    the flag used to miss), and writes no more than its room."""
    monkeypatch.setattr(windows, "DRAFT_TOKENS", 4)
    monkeypatch.setattr(windows, "DRAFT_TOKENS_PER_S", 0.0)
    library = load(DATA / "library.wav")
    options = DecodeOptions(language="en", partial=True)
    with_context = DecodeOptions(
        language="en", partial=True, context="Notes from a walk to the library."
    )
    results = tiny_model.transcribe_batch(
        [Request(library, options), Request(library, with_context)]
    )
    for result in results:
        assert looped(result)
        assert 0 < result.tokens.output <= 4
        assert 0 < len(result.text.split()) <= 4
