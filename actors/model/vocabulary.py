"""The vocabulary engine: a session's key terms and prompt, as the model's decode takes them.

Every dialect's vocabulary ends here. Deepgram's `keyterm`/`keywords` query parameters, its v1
and Flux `Configure` messages, the native `config.keyterms`/`config.prompt` and the native
`configure` frame (which OpenAI's `prompt`/keywords are meant to reach too) all become one
`Vocabulary`, and `Vocabulary.apply` puts it into the `DecodeOptions` of each request: the
model adapter (`actors/model/whisper.py`) turns those into the tokens after
`<|startofprev|>`. A plain record and pure functions; the session keeps its vocabulary as a
live part that its reader writes (`service/session/vocabulary.py`).

Two ways to hand key terms to Whisper, both prompt tokens in the end:

* `prompt`: the terms written as a list ("Sweynheim, Pannartz, Subiaco.") after the client's
  own prompt, as Whisper's `initial_prompt` carries text the transcript should follow;
* `hotwords`: faster-whisper's `hotwords`, the terms joined by spaces before everything else
  that follows `<|startofprev|>`.

Which helps more was measured on clips with rare names (`python -m bench.vocabulary`, figures
in docs/accuracy.md): `MODE` is the winner, and the default.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

import attrs

from actors.model.port import DecodeOptions
from protocol.native import MAX_KEYTERM_CHARS, MAX_KEYTERMS, MAX_PROMPT_CHARS

Mode = Literal["prompt", "hotwords"]
MODE: Mode = "prompt"
MAX_KEYTERMS_CHARS = MAX_PROMPT_CHARS  # all of a vocabulary's terms together, as written


@attrs.frozen
class Vocabulary:
    """Names and terms the transcript should spell right, and a prompt it should follow."""

    keyterms: tuple[str, ...] = ()
    prompt: str | None = None

    @classmethod
    def of(cls, keyterms: Sequence[str] | None, prompt: str | None) -> Vocabulary:
        terms = tuple(dict.fromkeys(" ".join(term.split()) for term in keyterms or ()))
        prompt = prompt.strip() if prompt else None
        return cls(tuple(term for term in terms if term), prompt or None)

    def changed(self, keyterms: Sequence[str] | None, prompt: str | None) -> Vocabulary:
        """This vocabulary with what a `configure` gave replaced (None: kept)."""
        return Vocabulary.of(
            self.keyterms if keyterms is None else keyterms,
            self.prompt if prompt is None else prompt,
        )

    def apply(self, options: DecodeOptions, mode: Mode = MODE) -> DecodeOptions:
        """`options` decoding with this vocabulary (its own `prompt`, `hotwords` replaced)."""
        if not self.keyterms:
            return attrs.evolve(options, prompt=self.prompt, hotwords=None)
        if mode == "hotwords":
            return attrs.evolve(options, prompt=self.prompt, hotwords=" ".join(self.keyterms))
        terms = ", ".join(self.keyterms) + "."
        prompt = f"{self.prompt} {terms}" if self.prompt else terms
        return attrs.evolve(options, prompt=prompt, hotwords=None)


def vocabulary_problem(keyterms: Sequence[str] | None) -> str | None:
    """Why these key terms cannot be a session's vocabulary (None when they can)."""
    if keyterms is None:
        return None
    if len(keyterms) > MAX_KEYTERMS:
        return f"{len(keyterms)} key terms; at most {MAX_KEYTERMS}"
    for term in keyterms:
        if not term.strip() or len(term) > MAX_KEYTERM_CHARS:
            return f"a key term must hold 1 to {MAX_KEYTERM_CHARS} characters, not {len(term)}"
        if any(not character.isprintable() for character in term):
            return "a key term must be printable text"
    total = sum(len(term) + 2 for term in keyterms)
    if total > MAX_KEYTERMS_CHARS:
        return f"the key terms hold {total} characters together; at most {MAX_KEYTERMS_CHARS}"
    return None
