"""`python -m bench.reuse` on the real tiny.en model: one simulated session over speech with a
long utterance drafts it, then decodes its final fresh and by two rules from the same drafts:
reuse keeps committed words and decodes less audio, forced words force them on the whole
utterance."""

from __future__ import annotations

import numpy as np
from support.audio_files import DATA, load

from actors.model.port import SpeechModel
from bench.figures import word_error_rate
from bench.reuse import ForcedRule, Rule, _Tally, stream_clip
from service.session.agreement import Agreement, TimedWord

SAID = (
    "The weather today is sunny with a light breeze from the west. "
    "Please return the library books before Friday afternoon. "
    "My grandmother planted tomatoes and roses in her garden."
)


def test_a_reused_final_keeps_the_drafts_words_and_reads_the_speech(
    tiny_model: SpeechModel,
) -> None:
    audio = np.concatenate(
        [load(DATA / f"{name}.wav") for name in ("weather", "library", "garden")]
    )
    rules: dict[str, Rule] = {"fresh": 0.0, "reuse": 0.5, "forced": ForcedRule(0.5)}
    tallies = {name: _Tally() for name in rules}
    drafts, draft_s = stream_clip(tiny_model, audio, rules, 1, tallies)
    assert drafts >= 10 and draft_s > 0
    assert tallies["fresh"].reused == 0
    assert tallies["reuse"].reused >= 5  # words the final did not decode again
    assert tallies["forced"].reused >= 5  # words forced on the final
    for tally in tallies.values():
        (text,) = tally.texts
        wer = word_error_rate([(SAID, text)]).wer
        assert wer is not None and wer <= 0.25, text


def test_forced_words_stop_at_the_hold_and_at_an_unsure_word() -> None:
    agreement = Agreement(
        committed=[
            TimedWord("produced", 0.5, 1.0, 0.9),
            TimedWord("the", 1.0, 1.2, 0.95),
            TimedWord("block", 1.2, 1.5, 0.4),
            TimedWord("books", 1.5, 2.0, 0.9),
        ]
    )
    assert ForcedRule.parse("0.5") == ForcedRule(0.5, 0.0)
    assert ForcedRule.parse("1:0.6") == ForcedRule(1.0, 0.6)
    assert ForcedRule(0.5).words(agreement, 3.0) == ["produced", "the", "block", "books"]
    assert ForcedRule(1.2).words(agreement, 3.0) == ["produced", "the", "block"]  # books: 1 s
    assert ForcedRule(0.5, 0.6).words(agreement, 3.0) == ["produced", "the"]
    assert ForcedRule(0.5, 0.6).name == "forced 0.5 s, p ≥ 0.6"
