"""Drafts on a smaller model: partials of English sessions go to a draft model (say tiny.en)
while finals, uploads and other languages stay on the main one (say base).

`DraftingModel` is a `SpeechModel` built by the app when `CHORUS_DRAFT_MODEL` names a model;
the transcriber actor calls it as it calls any model, in its worker threads. A batch never
mixes finals and partials (`actors/transcriber/actor.py`), so each call goes to one model;
a mixed call (a test, a future scheduler) is split and put back in order. Both models are
loaded for the same number of workers, and the actor's limiter lets no more than that many
calls run at once, so the threads are not oversubscribed.

Which partials draft: those whose language is the draft model's, English for an `.en` model
(a session with a set language; a session that asks the model to detect its language keeps
its drafts on the main model, which is the one that detects). The final is decoded afresh by
the main model, so a draft's words never reach it; a committed prefix is text, and each model
writes it with its own tokenizer.
"""

from __future__ import annotations

from collections.abc import Sequence

from actors.model.port import Request, Result, SpeechModel


class DraftingModel:
    """`main` for everything but the partials `draft` can write."""

    def __init__(self, main: SpeechModel, draft: SpeechModel, *, workers: int = 1) -> None:
        self.main = main
        self.draft = draft
        self.name = main.name
        self.multilingual = main.multilingual
        self.languages = main.languages
        self.workers = workers

    def drafts(self, request: Request) -> bool:
        options = request.options
        if not options.partial or options.task != "transcribe" or not options.language:
            return False
        if self.draft.multilingual:
            return options.language in self.draft.languages
        return options.language == "en"

    def transcribe_batch(self, requests: Sequence[Request]) -> list[Result]:
        drafted = [index for index, request in enumerate(requests) if self.drafts(request)]
        chosen = set(drafted)
        rest = [index for index in range(len(requests)) if index not in chosen]
        results: dict[int, Result] = {}
        for indices, model in ((drafted, self.draft), (rest, self.main)):
            if indices:  # one call per model that has requests: no empty batches
                answers = model.transcribe_batch([requests[i] for i in indices])
                results.update(zip(indices, answers, strict=True))
        return [results[index] for index in range(len(requests))]
