"""Drafts on a smaller model (`actors/model/drafts.py`): English partials go to the draft model,
everything else to the main one; with real models, tiny.en drafts under base finals."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pytest
from support.audio_files import DATA, load

from actors.model.drafts import DraftingModel
from actors.model.port import DecodeOptions, Request, Result
from actors.model.whisper import WhisperAdapter
from bench.figures import word_error_rate
from service.app import load_whisper
from service.config import Settings

WEATHER = "The weather today is sunny with a light breeze from the west."


class Named:
    """A fake model that answers with its name and the request's length."""

    def __init__(self, name: str, *, multilingual: bool, languages: tuple[str, ...]) -> None:
        self.name, self.multilingual, self.languages = name, multilingual, languages
        self.workers = 1
        self.calls: list[int] = []

    def transcribe_batch(self, requests: Sequence[Request]) -> list[Result]:
        self.calls.append(len(requests))
        return [Result(text=f"{self.name} {len(r.audio)}", language="en") for r in requests]


def request(samples: int, **options: object) -> Request:
    return Request(np.zeros(samples, np.float32), DecodeOptions(**options))  # type: ignore[arg-type]


def test_english_partials_draft_and_the_rest_stays_on_the_main_model() -> None:
    main = Named("base", multilingual=True, languages=("en", "de"))
    model = DraftingModel(main, Named("tiny.en", multilingual=False, languages=("en",)))
    assert (model.name, model.multilingual, model.languages) == ("base", True, ("en", "de"))
    requests = [
        request(1, language="en", partial=True),  # drafts
        request(2, language="en"),  # a final
        request(3, language=None, partial=True),  # the language is to be detected
        request(4, language="de", partial=True),  # not the draft model's language
        request(5, language="en", partial=True, task="translate"),
        request(6, language="en", partial=True),  # drafts
    ]
    texts = [result.text for result in model.transcribe_batch(requests)]
    assert texts == ["tiny.en 1", "base 2", "base 3", "base 4", "base 5", "tiny.en 6"]
    assert model.transcribe_batch(requests[:1])[0].text == "tiny.en 1"  # one call, one model
    assert model.transcribe_batch(requests[1:2])[0].text == "base 2"


def test_a_multilingual_draft_model_drafts_its_own_languages() -> None:
    main = Named("small", multilingual=True, languages=("en", "de", "fr"))
    model = DraftingModel(main, Named("tiny", multilingual=True, languages=("en", "de")))
    assert model.drafts(request(1, language="de", partial=True))
    assert not model.drafts(request(1, language="fr", partial=True))


@pytest.mark.parametrize("draft_model", ["auto", "none", "tiny.en"])
def test_tiny_en_drafts_for_nobody_but_itself(draft_model: str) -> None:
    model = load_whisper(Settings(model="tiny.en", draft_model=draft_model, cpu_threads=2))
    assert not isinstance(model, DraftingModel) and model.name == "tiny.en"


def test_none_keeps_partials_on_base() -> None:
    model = load_whisper(Settings(model="base", draft_model="none", cpu_threads=2))
    assert not isinstance(model, DraftingModel) and model.name == "base"


@pytest.fixture(scope="module")
def drafting() -> DraftingModel:
    """The default (`auto`) under base on a CPU: tiny.en drafts."""
    model = load_whisper(Settings(model="base", device="cpu", cpu_threads=2))
    assert isinstance(model, DraftingModel)
    return model


def test_real_tiny_en_drafts_under_base_finals(drafting: DraftingModel) -> None:
    assert (drafting.name, drafting.draft.name, drafting.multilingual) == ("base", "tiny.en", True)
    assert isinstance(drafting.main, WhisperAdapter) and drafting.main.final_window == "pad"
    weather = load(DATA / "weather.wav")
    draft, final, detected = drafting.transcribe_batch(
        [
            Request(weather, DecodeOptions(language="en", partial=True)),
            Request(weather, DecodeOptions(language="en", beam_size=5)),
            Request(weather, DecodeOptions(language=None, partial=True)),
        ]
    )
    for result in (draft, final):
        rate = word_error_rate([(WEATHER, result.text)]).wer
        assert rate is not None and rate <= 0.25, result.text
    assert detected.language == "en"  # base detected it: tiny.en cannot


def test_real_english_sessions_draft_on_tiny_en(drafting: DraftingModel) -> None:
    """What the tiny.en model writes is what an English session's partial gets."""
    weather = load(DATA / "weather.wav")
    partial = Request(weather, DecodeOptions(language="en", partial=True))
    assert drafting.transcribe_batch([partial]) == drafting.draft.transcribe_batch([partial])
