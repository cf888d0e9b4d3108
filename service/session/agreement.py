"""Committing the words of an open utterance that two drafts in a row agree on (LocalAgreement-2).

One `Agreement` per open utterance, owned by the partials worker of the session's transcriber
client (`service/session/transcribing.py`), which offers it each draft. Committed words are never
revised in a later partial: every later draft is asked to write only what follows them
(`DecodeOptions.committed`, so it costs the tail's tokens, not the whole utterance's), and
where a draft still disagrees the committed words stand. A draft's last word is never
committed: the audio may end inside it ("the" of "there").

The final is not bound by them. It is decoded afresh (beam 5, the whole utterance in the
finals' window) because the drafts are greedy decodes of a short window, and forcing their
committed words on the final cost accuracy (measured: docs/benchmarks.md): mostly first words
the drafts never heard ("it imitates" -> "imitates") and early guesses two drafts repeated
("though on the whole" -> "the one the whole").
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import attrs

_PUNCTUATION = "\"'“”¿¡([{}])-.,;:!?。，！？、…"


def _same(a: str, b: str) -> bool:
    return _bare(a) == _bare(b)


def _bare(word: str) -> str:
    return "".join(c for c in word.lower() if c not in _PUNCTUATION)


@attrs.frozen
class TimedWord:
    """A word of a draft, with its place in the utterance's audio (seconds from the
    utterance's start; NaN where the draft had no timings)."""

    word: str
    start: float = math.nan
    end: float = math.nan
    probability: float = 1.0

    @property
    def timed(self) -> bool:
        return not (math.isnan(self.start) or math.isnan(self.end))


@attrs.define
class Agreement:
    committed: list[TimedWord] = attrs.Factory(list)
    tail: list[TimedWord] = attrs.Factory(list)  # the last draft's words after the committed

    @property
    def text(self) -> str:
        return " ".join(word.word for word in self.committed)

    def offer(self, draft: str, timings: Sequence[TimedWord] = ()) -> str:
        """Commit what `draft` agrees on with the draft before it; the text to show.

        `timings`, when they are the draft's words one for one, place each word in the
        utterance (`service/session/drafting.py` trims later drafts' audio by them). The model
        was made to start `draft` with the committed words; where it did not (a draft cut at a
        repeat) they stand, and only the words past them are read.
        """
        timed = _placed(draft.split(), timings)
        for index, word in enumerate(self.committed[: len(timed)]):
            if not word.timed and timed[index].timed and _same(word.word, timed[index].word):
                self.committed[index] = attrs.evolve(timed[index], word=word.word)
        tail = timed[len(self.committed) :]
        agreed = 0
        for before, now in zip(self.tail, tail[:-1], strict=False):
            if not _same(before.word, now.word):
                break
            agreed += 1
        self.committed.extend(tail[:agreed])
        self.tail = tail[agreed:]
        return " ".join(word.word for word in [*self.committed, *self.tail])


def _placed(words: list[str], timings: Sequence[TimedWord]) -> list[TimedWord]:
    """`words` with the times of the `timings` that spell them (the aligner may split a word,
    "self-" "substantial"); from the first word they do not spell on, untimed."""
    placed: list[TimedWord] = []
    pieces = iter(timings)
    for word in words:
        target, spelled, first, last = _bare(word), "", None, None
        for piece in pieces:
            first = first or piece
            last, spelled = piece, spelled + _bare(piece.word)
            if len(spelled) >= len(target):
                break
        if first is None or last is None or spelled != target:
            break
        placed.append(
            TimedWord(word, first.start, last.end, min(first.probability, last.probability))
        )
    return [*placed, *(TimedWord(word) for word in words[len(placed) :])]
