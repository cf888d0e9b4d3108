"""`python -m bench.reuse` on the real tiny.en model: one simulated session over speech with a
long utterance drafts it, then decodes its final fresh and by a reuse rule from the same
drafts; the reuse rule keeps committed words and decodes less audio."""

from __future__ import annotations

import numpy as np
from support.audio_files import DATA, load

from actors.model.port import SpeechModel
from bench.figures import word_error_rate
from bench.reuse import _Tally, stream_clip

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
    tallies = {"fresh": _Tally(), "0.5": _Tally()}
    drafts, draft_s = stream_clip(tiny_model, audio, (0.5,), 1, tallies)
    assert drafts >= 10 and draft_s > 0
    assert tallies["0.5"].reused >= 5  # words the final did not decode again
    for tally in tallies.values():
        (text,) = tally.texts
        wer = word_error_rate([(SAID, text)]).wer
        assert wer is not None and wer <= 0.25, text
