"""What the transcriber actor asks of a speech model, with no model library imported.

`SpeechModel.transcribe_batch` is synchronous and blocking: the transcriber actor calls it in a
worker thread, one batch at a time. The real adapter lives in `actors/model/whisper.py`; tests use
`tests/support/fakes.py:FakeModel`.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal, Protocol

import attrs
import numpy as np
import numpy.typing as npt

SAMPLE_RATE = 16000

Samples = npt.NDArray[np.float32]
"""Mono float32 audio at 16 kHz, the only audio shape past the segmenter."""

Priority = Literal["final", "first_partial", "partial", "background"]
"""Live finals and the first partial of an utterance that shows no text yet (a short draft,
and what a listener waits for), oldest first; then other partials; `background` (uploads)
only when no live work waits."""


@attrs.frozen
class DecodeOptions:
    """Per-request decoding choices; requests with equal `batch_key`s may share a batch."""

    language: str | None = None  # None: detect
    task: Literal["transcribe", "translate"] = "transcribe"
    prompt: str | None = None
    # key terms in faster-whisper's `hotwords` form: before the prompt, after
    # `<|startofprev|>` (the vocabulary engine, `actors/model/vocabulary.py`, says when)
    hotwords: str | None = None
    context: str | None = None  # the session's earlier finals; only its tail is used
    # words already committed for this utterance: forced as the start of the text, so the
    # decoder only writes what follows them (see `service/session/agreement.py`)
    committed: str | None = None
    # the previous final's text, spoken in the first `lead_in_s` seconds of the audio: forced
    # like committed words, so the model hears the utterance in its sentence, and then left
    # out of the result (text, words, tokens): the final of the rest alone
    # (`service/session/lead_in.py` says when)
    lead_in: str | None = None
    lead_in_s: float = 0.0
    words: bool = False
    beam_size: int = 1
    partial: bool = False  # a draft of an open utterance: cheaper window, no second try


@attrs.frozen(eq=False)
class Request:
    audio: Samples = attrs.field(repr=lambda audio: f"<{len(audio) / SAMPLE_RATE:.2f} s>")
    options: DecodeOptions = DecodeOptions()


@attrs.frozen
class WordTiming:
    word: str
    start: float  # seconds from the start of the request's audio
    end: float
    probability: float


@attrs.frozen
class TokenUsage:
    """What one call cost the model, in tokens (OpenAI reports usage so): `audio`, the encoder
    positions of the window it read (Whisper's encoder writes one per 20 ms); `text`, the
    decoder's prompt (the start-of-transcript tokens, a client's prompt and the context);
    `output`, the tokens it generated. All 0 from a model that does not count them."""

    audio: int = 0
    text: int = 0
    output: int = 0

    def __add__(self, other: TokenUsage) -> TokenUsage:
        return TokenUsage(
            self.audio + other.audio, self.text + other.text, self.output + other.output
        )


@attrs.frozen
class Result:
    text: str
    language: str
    language_probability: float = 1.0
    avg_logprob: float = 0.0
    no_speech_prob: float = 0.0
    compression_ratio: float = 1.0
    words: tuple[WordTiming, ...] = ()
    flags: tuple[str, ...] = ()
    tokens: TokenUsage = TokenUsage()

    @property
    def confidence(self) -> float:
        if self.words:
            return float(np.mean([word.probability for word in self.words]))
        return float(np.exp(min(self.avg_logprob, 0.0)))


class SpeechModel(Protocol):
    name: str
    multilingual: bool
    languages: tuple[str, ...]
    # calls that may run at once: the model was loaded for that many (CTranslate2's
    # `inter_threads`), and the transcriber starts as many workers
    workers: int

    def transcribe_batch(self, requests: Sequence[Request]) -> list[Result]:
        """Transcribe every request; blocking. One result per request, in order."""
        ...
