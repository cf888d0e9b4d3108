"""A session's vocabulary while it runs: the reader's live part.

The route's config gives the session its first vocabulary (`config.keyterms`,
`config.prompt`); a `configure` frame (`protocol.native.Configure`, what every dialect's
`Configure` decodes to) changes it at any time, audio or not. The reader
(`service/session/inbound.py`) is the one writer: it checks the change and answers it,
`configured` or an `error`. The transcriber client reads `current` for every request it makes
(`service/session/transcribing.py`), so a change holds from the next draft and the next
utterance on; what the model makes of it is the vocabulary engine's
(`actors/model/vocabulary.py`).
"""

from __future__ import annotations

from collections.abc import Sequence

import attrs

from actors.model.vocabulary import Vocabulary, vocabulary_problem
from protocol.native import MAX_PROMPT_CHARS, Config, Configure, Configured, Error


@attrs.define
class SessionVocabulary:
    """The vocabulary a session's `configure` frames set (None: the config's, unchanged)."""

    changed: Vocabulary | None = None

    def current(self, keyterms: Sequence[str] | None, prompt: str | None) -> Vocabulary:
        """The vocabulary in effect, given the config's key terms and prompt."""
        return self.changed or Vocabulary.of(keyterms, prompt)

    def configure(self, frame: Configure, config: Config) -> Configured | Error:
        """Apply one `configure` frame on top of `config`'s vocabulary; the answer."""
        refused = configure_error(frame)
        if refused is not None:
            return refused
        current = self.current(config.keyterms, config.prompt)
        self.changed = current.changed(frame.keyterms, frame.prompt)
        return Configured(keyterms=list(self.changed.keyterms), prompt=self.changed.prompt)


def configure_error(frame: Configure) -> Error | None:
    """The `invalid_vocabulary` error for a `configure` no session takes (None: it may be
    taken); a multichannel session checks it once, before every channel gets it, as a
    dialect's `Configure` is built without the native frame's limits."""
    problem = vocabulary_problem(frame.keyterms)
    if problem is None and frame.prompt is not None and len(frame.prompt) > MAX_PROMPT_CHARS:
        problem = f"a prompt holds at most {MAX_PROMPT_CHARS} characters"
    return None if problem is None else Error(code="invalid_vocabulary", message=problem)
