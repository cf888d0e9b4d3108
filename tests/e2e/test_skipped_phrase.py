"""A final that skipped a phrase (far fewer words than its audio) is decoded again without the
session's earlier finals, whose echo made Whisper skip, and the fuller answer kept
(`actors/model/judging.py`, `WhisperAdapter._retry_sparse`); and a short final the decoder was
unsure of (noise after the speaker stopped) is no text."""

from __future__ import annotations

import numpy as np
import pytest
from support.model_free import ModelFreeAdapter

from actors.model import judging
from actors.model.judging import UNPROMPTED, fuller, sparse
from actors.model.port import DecodeOptions, Request, Result, TokenUsage
from actors.model.whisper import WhisperAdapter
from bench.figures import word_error_rate

SAID = "than the capital letters the lower case being in fact invented in the early middle ages"
SKIPPED = "the earliest book printed with movable type"  # what came after, alone


def _result(text: str, language: str = "en", flags: tuple[str, ...] = ()) -> Result:
    return Result(text=text, language=language, flags=flags, tokens=TokenUsage(audio=500))


@pytest.mark.parametrize(
    ("text", "seconds", "language", "expected"),
    [
        (SKIPPED, 13.5, "en", True),  # 7 words in 13.5 s
        (f"{SAID} {SKIPPED}", 13.5, "en", False),  # 23 words
        (SKIPPED, 5.0, "en", False),  # too short to judge
        ("", 13.5, "en", False),  # empty: the silence rule's, not a skip
        ("我们今天去公园散步然后回家吃饭", 13.5, "zh", False),  # no spaces between words
    ],
)
def test_sparse(text: str, seconds: float, language: str, expected: bool) -> None:
    assert sparse(_result(text, language), seconds) is expected


def test_fuller_keeps_only_clearly_more_words_and_never_a_loop() -> None:
    first = _result(SKIPPED)
    kept = fuller(first, _result(f"{SAID} {SKIPPED}"))
    assert kept is not None and kept.text.startswith("than the capital")
    assert UNPROMPTED in kept.flags and kept.tokens.audio == 1000  # both decodes counted
    assert fuller(first, _result(f"{SKIPPED} and more")) is None  # not 1.5x the words
    looping = _result(f"{SAID} {SAID}", flags=("looped: test",))
    assert fuller(first, looping) is None


class _EchoingAdapter(ModelFreeAdapter):
    """The real batching and retry logic over a decoder that skips the phrase when it is
    given context (as base did in babble), and hears it all without."""

    def __init__(self) -> None:
        super().__init__()
        self.calls: list[list[str | None]] = []

    def _prefix(self, request: Request) -> list[int]:
        return [1] if request.options.context else []

    def _run_group(
        self, requests: list[Request], prefixes: list[list[int]], frames: int, beam_size: int
    ) -> list[Result]:
        self.calls.append([request.options.context for request in requests])
        return [
            _result(SKIPPED if request.options.context else f"{SAID} {SKIPPED}")
            for request in requests
        ]


def test_a_sparse_final_is_decoded_again_without_context() -> None:
    model = _EchoingAdapter()
    long, short = np.zeros(12 * 16000, np.float32), np.zeros(4 * 16000, np.float32)
    final = DecodeOptions(language="en", context="on the side of the lowercase.")
    results = model.transcribe_batch(
        [
            Request(long, final),
            Request(short, final),  # 7 words in 4 s: not sparse
            Request(long, DecodeOptions(language="en", context="x", partial=True)),  # a draft
            Request(long, DecodeOptions(language="en")),  # no context to leave out
        ]
    )
    assert results[0].text == f"{SAID} {SKIPPED}" and UNPROMPTED in results[0].flags
    assert [r.text for r in results[1:]] == [SKIPPED, SKIPPED, f"{SAID} {SKIPPED}"]
    assert model.calls[-1] == [None]  # one more decode, of the sparse final alone


def test_a_lead_in_does_not_count_as_the_finals_own_audio() -> None:
    # 12 s of audio of which 7 s are the previous final's: 5 s of its own, too short to judge
    model = _EchoingAdapter()
    options = DecodeOptions(language="en", context="earlier.", lead_in="earlier.", lead_in_s=7.0)
    results = model.transcribe_batch([Request(np.zeros(12 * 16000, np.float32), options)])
    assert results[0].text == SKIPPED and len(model.calls) == 1


def test_the_retry_runs_on_the_real_decoder(
    tiny_model: WhisperAdapter, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Whether a context makes a given CPU's int8 kernels skip a phrase is not something a test
    # can rely on; so every long final is judged sparse here, and the real second decode must
    # come back with the clip's words, its cost added, and the answer kept only if fuller.
    from support.audio_files import DATA, load

    reference = (
        "printing in the only sense with which we are at present concerned differs from most "
        "if not from all the arts and crafts represented in the exhibition"
    )
    audio = load(DATA / "speech" / "ljspeech_coqui" / "LJ001-0001.wav")
    options = DecodeOptions(language="en", beam_size=1, context="The arts and crafts.")
    alone = tiny_model.transcribe_batch([Request(audio, options)])[0]
    monkeypatch.setattr(judging, "SPARSE_WORDS_PER_S", 100.0)
    retried = tiny_model.transcribe_batch([Request(audio, options)])[0]
    assert retried.tokens.audio == 2 * alone.tokens.audio  # decoded twice
    assert retried.text == alone.text or UNPROMPTED in retried.flags
    rate = word_error_rate([(reference, retried.text)])
    assert rate.wer is not None and rate.wer <= 0.15


# -- a short final the decoder was unsure of is noise ---------------------------------------

MADE_UP = "That is the most important thing in the world."  # 2.1 s of babble, -1.38


@pytest.mark.parametrize(
    ("language", "avg_logprob", "seconds", "kept"),
    [
        ("en", -1.38, 2.1, False),  # the babble after the last speaker: no text
        ("en", -1.38, None, True),  # a draft: its first second may well be unsure
        ("en", -1.38, 5.0, True),  # long enough to be speech heard badly: kept, flagged
        ("en", -0.30, 1.0, True),  # a short, sure final ("Yes.")
        # real speech in languages the rule was not measured on (base, 2.5 s of the shared
        # multilingual set): kept, flagged
        ("es", -1.05, 2.5, True),
        ("ja", -1.11, 2.5, True),
    ],
)
def test_a_short_unsure_final_is_no_text(
    language: str, avg_logprob: float, seconds: float | None, kept: bool
) -> None:
    result = judging.judge(MADE_UP, language, 1.0, avg_logprob, 0.2, seconds=seconds)
    assert (result.text == MADE_UP) is kept
    if not kept:
        assert result.flags[0].startswith("no_speech")
    elif avg_logprob < -1.0:
        assert result.flags[0].startswith("low_confidence")


def test_the_adapter_judges_a_final_by_its_own_seconds(tiny_model: WhisperAdapter) -> None:
    # `read_output` with the decoder's output for an unsure 2 s final: no text; the same
    # output for a draft (no seconds given) keeps it
    from types import SimpleNamespace

    from actors.model.reading import read_output

    tokenizer = tiny_model._tokenizer("en", "transcribe")
    tokens = tokenizer.encode(" " + MADE_UP)
    output = SimpleNamespace(sequences_ids=[tokens], scores=[-1.4], no_speech_prob=0.2)
    common = {"room": 100, "usage": TokenUsage(audio=500)}
    final = read_output(output, tokenizer, 0, 0, ("en", 1.0), seconds=2.0, **common)  # type: ignore[arg-type]
    draft = read_output(output, tokenizer, 0, 0, ("en", 1.0), **common)  # type: ignore[arg-type]
    assert final.text == "" and final.flags[0].startswith("no_speech")
    assert draft.text == MADE_UP
