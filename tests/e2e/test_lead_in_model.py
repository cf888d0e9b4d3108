"""A final decoded after the previous one (`DecodeOptions.lead_in`), on the real model: the
previous utterance's audio and text come first, and the result is this utterance's alone.

The clips are the repository's own (tests/data/speech): LJSpeech's first sentence, and its
second, "in being comparatively modern.", which continues it after a pause. Words are
asserted with a tolerance (the text differs between CPUs), never as exact strings.
"""

from __future__ import annotations

import jiwer
import numpy as np
from support.audio_files import SPEECH, load
from whisper_normalizer.english import EnglishTextNormalizer

from actors.model.port import DecodeOptions, Request, SpeechModel

FIRST = SPEECH / "ljspeech_coqui/LJ001-0001.wav"
SECOND = SPEECH / "ljspeech_coqui/LJ001-0002.wav"
SECOND_TEXT = "in being comparatively modern"
normalize = EnglishTextNormalizer()


def test_the_lead_in_is_heard_and_left_out_of_the_result(tiny_model: SpeechModel) -> None:
    first, second = load(FIRST), load(SECOND)
    pause = np.zeros(8000, np.float32)
    options = DecodeOptions(language="en", beam_size=5)
    (before,) = tiny_model.transcribe_batch([Request(first, options)])
    assert "printing" in normalize(before.text)
    lead = DecodeOptions(
        language="en",
        beam_size=5,
        words=True,
        lead_in=before.text,
        lead_in_s=(len(first) + len(pause)) / 16000,
    )
    (result,) = tiny_model.transcribe_batch([Request(np.concatenate([first, pause, second]), lead)])
    text = normalize(result.text)
    assert "printing" not in text.split() and "exhibition" not in text.split(), result.text
    # four words: tiny.en hears "modern" as "moderate" on some CPUs, so one may be wrong
    assert "comparatively" in text.split() and jiwer.wer(SECOND_TEXT, text) <= 0.5, result.text
    # the words are this utterance's, timed from its own start
    assert result.words
    assert normalize(" ".join(word.word for word in result.words)) == text
    seconds = len(second) / 16000
    assert all(0.0 <= word.start <= word.end <= seconds for word in result.words), result.words
    assert result.words[-1].end > seconds / 2
    # the tokens it reports are the ones it wrote, not the lead-in it was given
    assert 0 < result.tokens.output < 16
