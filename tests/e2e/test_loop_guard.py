"""The adapter's loop guard and context: a looped result is decoded again in a 30 s window;
earlier finals go before the prompt as a fixed number of tokens."""

from __future__ import annotations

import numpy as np
import pytest
from support.model_free import ModelFreeAdapter

from actors.model.judging import before_repeat, repeats
from actors.model.port import DecodeOptions, Request, Result
from actors.model.whisper import CONTEXT_TOKENS, WhisperAdapter
from actors.model.windows import WINDOW_S


@pytest.mark.parametrize(
    ("text", "looped"),
    [
        ("and so my fellow americans ask not what your country can do for you", False),
        ("ask what you can do for your country ask not what your country can do", False),
        ("no no no no", False),  # one word said again is speech, not a loop
        ("the cat sat the cat sat", True),
        # a loop cut short by the length limit: six words again, further on
        ("it is of the first importance that the letter used should be fine and form "
         "it is of the first importance that the letter", True),
    ],
)  # fmt: skip
def test_repeats(text: str, looped: bool) -> None:
    assert repeats(text) is looped


class _LoopingAdapter(ModelFreeAdapter):
    """The real batching and retry logic over a decoder that loops on windows under 30 s."""

    def __init__(self) -> None:
        super().__init__()
        self.windows: list[tuple[int, int]] = []

    def _run_group(
        self, requests: list[Request], prefixes: list[list[int]], frames: int, beam_size: int
    ) -> list[Result]:
        self.windows.append((frames, len(requests)))
        results = []
        for request in requests:
            loops = frames < WINDOW_S * 100 and request.options.language == "xx"
            text = "fine and form fine and form fine and form" if loops else "fine and form"
            flags = ("looped: test",) if loops else ()
            results.append(Result(text=text, language="en", flags=flags))
        return results


def test_a_looped_result_is_decoded_again_in_a_full_window() -> None:
    model = _LoopingAdapter()
    audio = np.zeros(4 * 16000, np.float32)
    looping, fine = DecodeOptions(language="xx"), DecodeOptions(language="en")
    model_results = model.transcribe_batch(
        [Request(audio, looping), Request(audio, fine), Request(audio, looping)]
    )
    assert [r.text for r in model_results] == ["fine and form"] * 3
    assert model.windows == [(1000, 3), (3000, 2)]  # one retry batch for both loops
    assert any(flag.startswith("widened") for flag in model_results[0].flags)
    assert model_results[1].flags == ()


def test_looped_flag_comes_from_the_real_decoder(tiny_model: WhisperAdapter) -> None:
    # The real `_run_group` marks a result that repeats itself; a plain one is not marked.
    from support.audio_files import DATA, load

    result = tiny_model.transcribe_batch([Request(load(DATA / "weather.wav"))])[0]
    assert "sunny" in result.text.lower()
    assert not any(flag.startswith(("looped", "widened")) for flag in result.flags)


def test_context_is_a_fixed_number_of_tokens(tiny_model: WhisperAdapter) -> None:
    audio = np.zeros(16000, np.float32)
    long_one = "The weather today is sunny with a light breeze from the west. " * 4
    other = "Please return the library books before Friday afternoon, and thank you. " * 4
    short = "Hello."
    prefixes = [
        tiny_model._prefix(Request(audio, DecodeOptions(context=text)))
        for text in (long_one, other, short)
    ]
    assert len(prefixes[0]) == len(prefixes[1]) == CONTEXT_TOKENS + 1  # they share a batch
    assert len(prefixes[2]) < CONTEXT_TOKENS + 1
    with_prompt = tiny_model._prefix(
        Request(audio, DecodeOptions(prompt="Gardening notes.", context=long_one))
    )
    assert len(with_prompt) > CONTEXT_TOKENS + 1  # the client's prompt is kept whole
    assert tiny_model._prefix(Request(audio)) == []


def test_a_looping_draft_is_cut_where_the_repeat_starts() -> None:
    looped = "the cat sat on the mat. the cat sat on the mat. the cat"
    assert before_repeat(looped) == "the cat sat on the mat."
    assert before_repeat("ask not what your country can do") == "ask not what your country can do"
