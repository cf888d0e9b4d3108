"""Committing the words of an open utterance that two drafts in a row agree on (LocalAgreement-2).

One `Agreement` per open utterance, owned by the partials worker of the session's transcriber
client (`service/session/transcribing.py`), which offers it each draft. Committed words are never
revised in a later partial: every later draft is asked to write only what follows them
(`DecodeOptions.committed`, so it costs the tail's tokens, not the whole utterance's), and
where a draft still disagrees the committed words stand. A draft's last word is never
committed: the audio may end inside it ("the" of "there").

The final is not bound by them. It is decoded afresh (beam 5, the whole utterance in the
finals' window) because the drafts are greedy decodes of a short window: forcing their
committed words on the final, tiny.en on the shared English set with every draft decoded
(no load), went from 5.69% WER to 7.23%; committing only words older than 1.5 s / 3 s of the
draft, 6.52% / 6.28%. Mostly first words the drafts never heard ("it imitates" -> "imitates")
and early guesses two drafts repeated ("though on the whole" -> "the one the whole").
"""

from __future__ import annotations

import attrs

_PUNCTUATION = "\"'“”¿¡([{}])-.,;:!?。，！？、…"


def _same(a: str, b: str) -> bool:
    return a.strip(_PUNCTUATION).lower() == b.strip(_PUNCTUATION).lower()


@attrs.define
class Agreement:
    committed: list[str] = attrs.Factory(list)
    tail: list[str] = attrs.Factory(list)  # the last draft's words after the committed ones

    @property
    def text(self) -> str:
        return " ".join(self.committed)

    def offer(self, draft: str) -> str:
        """Commit what `draft` agrees on with the draft before it; the text to show.

        The model was made to start `draft` with the committed words; where it did not (a
        draft cut at a repeat) they stand, and only the words past them are read.
        """
        tail = draft.split()[len(self.committed) :]
        agreed = 0
        for before, now in zip(self.tail, tail[:-1], strict=False):
            if not _same(before, now):
                break
            agreed += 1
        self.committed.extend(tail[:agreed])
        self.tail = tail[agreed:]
        return " ".join([*self.committed, *self.tail])
