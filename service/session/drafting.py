"""The drafts of a session's open utterance: what the text shows while a person speaks.

`draft_partials` is one worker of the transcriber client stage (`service/session/transcribing.py`,
which owns its nursery). It takes the newest partial request from a `DraftSlot` (at most one
draft in flight; a newer request replaces one that has not started) and asks the transcriber:

- **Tail drafts.** Words that two drafts in a row agree on are committed (`Agreement`,
  LocalAgreement-2) with their times in the utterance (the drafts ask for word timings). Once
  an utterance has committed words `TAIL_AFTER_S` into it, a draft decodes only what is not
  committed yet: its audio starts `LEFT_CONTEXT_S` before the end of the committed words (at a
  committed word's start), those last committed words are the decoder's forced prefix, and the
  ones before the cut go before `<|startoftranscript|>` as context. So a draft's encoder window
  and its tokens stay a few seconds' worth however long the utterance runs.
- **Deadlines.** A revision (any draft after an utterance's first) carries the wall time at
  which this session's caption delay (audio received minus the end of the newest text shown)
  reaches `caption_target_s`; the transcriber runs revisions earliest deadline first
  (`actors/transcriber/schedule.py`), so the most overdue session goes next.
- **Fresh audio.** When the transcriber takes the draft into a batch it asks for the newest
  request (`DraftSlot` may hold a newer segment of the same utterance by then), so a draft that
  waited decodes the audio as it is when it runs, not as it was when it was asked for.

A draft whose utterance's final was asked for meanwhile, or whose session's events ended, is
abandoned (the transcriber drops it before the model sees it). The final is not bound by the
drafts: it is decoded afresh (`service/session/transcribing.py`).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager

import attrs
import trio

from actors.model.port import SAMPLE_RATE, DecodeOptions, Priority, Request, Result
from actors.speech.segmenter import Segment
from actors.transcriber.actor import TranscriptionFailed
from protocol.native import Partial, ServerFrame, Word
from service.session.agreement import Agreement, TimedWord
from service.session.record import Session

TAIL_AFTER_S = 1.0  # the cut must be this far into the utterance to trim anything
LEFT_CONTEXT_S = 0.5  # audio of committed words kept before the uncommitted tail
CUT_BEFORE_WORD_S = 0.2  # the cut goes this far before the first kept word's start


@attrs.frozen
class DraftPlan:
    """One draft request and where its audio sits in the utterance."""

    request: Request
    segment: Segment
    cut_s: float = 0.0  # the request's audio starts this far into the utterance
    before: tuple[TimedWord, ...] = ()  # committed words before the cut (in the context)


def plan_draft(segment: Segment, agreement: Agreement, options: DecodeOptions) -> DraftPlan:
    """The cheapest draft that keeps the committed words: the uncommitted tail with
    `LEFT_CONTEXT_S` of committed audio before it, when committed words have timings; else
    the whole utterance with the committed words as the forced prefix. Every draft asks for
    word timings: timing only some drafts left longer tails, which cost more than the
    timings saved."""
    drafting = attrs.evolve(options, words=True)
    tail = plan_tail(segment, agreement.committed, drafting)
    if tail is not None:
        return tail
    whole = attrs.evolve(drafting, committed=agreement.text or None)
    return DraftPlan(Request(segment.audio, whole), segment)


def plan_final(
    segment: Segment, agreement: Agreement | None, options: DecodeOptions, hold_s: float
) -> DraftPlan:
    """A final's request. With `hold_s` > 0 it reuses the drafts' work: the committed words
    that end `hold_s` or more before the utterance does stand, and only the audio after them
    is decoded (with the final's beam and window). Else, or with none to reuse, the whole
    utterance afresh (no words `before`)."""
    audio_s = len(segment.audio) / SAMPLE_RATE
    reused = []
    for word in agreement.committed if agreement is not None and hold_s > 0 else ():
        if not word.timed or word.end > audio_s - hold_s:
            break
        reused.append(word)
    tail = plan_tail(segment, reused, options)
    return tail or DraftPlan(Request(segment.audio, options), segment)


def plan_tail(
    segment: Segment, committed: Sequence[TimedWord], options: DecodeOptions
) -> DraftPlan | None:
    """Decode `segment` from `LEFT_CONTEXT_S` before the end of the last timed committed word
    on: the committed words from there forced, the earlier ones as context. None when no
    committed word has a time, or the cut would not be `TAIL_AFTER_S` into the audio."""
    audio_s = len(segment.audio) / SAMPLE_RATE
    timed = [index for index, word in enumerate(committed) if word.timed]
    if not timed:
        return None
    reach = committed[timed[-1]].end - LEFT_CONTEXT_S
    kept = timed[-1]  # the latest word that starts `LEFT_CONTEXT_S` before that end, or the
    while kept > 0 and committed[kept].start > reach and committed[kept - 1].timed:
        kept -= 1  # earliest from which on every word up to it is timed
    cut_s = max(0.0, committed[kept].start - CUT_BEFORE_WORD_S)
    if kept == 0 or cut_s < TAIL_AFTER_S or cut_s >= audio_s:
        return None
    before = tuple(committed[:kept])
    context = " ".join(filter(None, [options.context, " ".join(w.word for w in before)]))
    tail = attrs.evolve(
        options,
        context=context or None,
        committed=" ".join(word.word for word in committed[kept:]),
    )
    audio = segment.audio[int(cut_s * SAMPLE_RATE) :]
    return DraftPlan(Request(audio, tail), segment, cut_s, before)


def read_draft(plan: DraftPlan, result: Result) -> tuple[str, list[TimedWord]]:
    """The whole utterance's draft text and its word timings, in the utterance's time."""
    text = " ".join(filter(None, [" ".join(w.word for w in plan.before), result.text]))
    shift = plan.cut_s
    timings = [
        *plan.before,
        *(TimedWord(w.word, w.start + shift, w.end + shift, w.probability) for w in result.words),
    ]
    return text, timings


class Agreements:
    """Each open utterance's committed words: the drafts worker offers drafts while their
    utterance is open; the finals worker closes an utterance when its final is requested."""

    def __init__(self, *, enabled: bool) -> None:
        self.enabled = enabled
        self._open: dict[int, Agreement] = {}

    def of(self, utterance: int) -> Agreement:
        return self._open.setdefault(utterance, Agreement())

    def close(self, utterance: int) -> Agreement | None:
        """Forget this utterance and earlier ones; the closed utterance's words, if any."""
        closed = self._open.get(utterance)
        for done in [u for u in self._open if u <= utterance]:
            del self._open[done]
        return closed


class DraftSlot:
    """Holds the newest partial request; a newer one replaces one that has not started.

    Closed when the session's events end: every utterance then has its final on the way, so a
    draft still being asked for can commit nothing, and closing abandons it (the transcriber
    drops an abandoned request before the model sees it). For the same reason a draft being
    asked for is abandoned when its utterance's final is requested, and when a draft of a
    newer utterance arrives: that one's first text matters more.
    """

    def __init__(self) -> None:
        self.segment: Segment | None = None
        self.finalized_through = -1
        self.closed = False
        self._changed = trio.Event()
        self._asking: trio.CancelScope | None = None
        self._asking_for = -1  # the utterance of the draft being asked for

    def put(self, segment: Segment) -> None:
        if segment.utterance > self.finalized_through:
            self.segment = segment
            self._changed.set()
            if segment.utterance > self._asking_for:
                self._abandon()  # a newer utterance's first draft goes before an old draft

    def finalized(self, utterance: int) -> None:
        self.finalized_through = max(self.finalized_through, utterance)
        if self.segment is not None and self.segment.utterance <= utterance:
            self.segment = None
        if self._asking_for <= utterance:
            self._abandon()  # its final is on the way: the draft would commit nothing

    def _abandon(self) -> None:
        if self._asking is not None:
            self._asking.cancel()

    def close(self) -> None:
        self.closed = True
        self._changed.set()
        self._abandon()

    async def take(self) -> Segment | None:
        while self.segment is None and not self.closed:
            self._changed = trio.Event()
            await self._changed.wait()
        segment, self.segment = self.segment, None
        return segment

    def take_newer(self, utterance: int) -> Segment | None:
        """The waiting segment if it is a newer draft of `utterance` (it is then taken)."""
        segment = self.segment
        if segment is None or segment.utterance != utterance:
            return None
        self.segment = None
        return segment

    @contextmanager
    def asking(self, utterance: int) -> Iterator[trio.CancelScope]:
        """The scope of one draft's request: `close`, its utterance's final, or a newer
        utterance's draft abandons it."""
        with trio.CancelScope() as scope:
            self._asking, self._asking_for = scope, utterance
            if self.closed or utterance <= self.finalized_through:
                scope.cancel()
            try:
                yield scope
            finally:
                self._asking, self._asking_for = None, -1


@attrs.frozen
class DraftSettings:
    """What the drafts worker decodes with and aims for."""

    options: DecodeOptions  # the session's partial decode options (context set per draft)
    caption_target_s: float
    words: bool = False  # partials carry the draft's timed words


class _Asking:
    """The plan of the draft in flight; `latest` swaps in the slot's newer segment."""

    def __init__(self, plan: DraftPlan, slot: DraftSlot, make: DraftMaker) -> None:
        self.plan, self._slot, self._make = plan, slot, make

    def latest(self) -> Request | None:
        newer = self._slot.take_newer(self.plan.segment.utterance)
        if newer is None:
            return None
        self.plan = self._make(newer)
        return self.plan.request


class DraftMaker:
    """Plans drafts of one session against its agreements and context."""

    def __init__(
        self,
        settings: DraftSettings,
        agreements: Agreements,
        context: Callable[[], str | None],
        *,
        vocabulary: Callable[[DecodeOptions], DecodeOptions] = lambda options: options,
    ) -> None:
        self.settings, self.agreements, self.context = settings, agreements, context
        self.vocabulary = vocabulary  # the session's vocabulary now, set per draft

    def __call__(self, segment: Segment) -> DraftPlan:
        options = self.vocabulary(attrs.evolve(self.settings.options, context=self.context()))
        if not self.agreements.enabled:
            return DraftPlan(Request(segment.audio, options), segment)
        return plan_draft(segment, self.agreements.of(segment.utterance), options)


async def draft_partials(
    session: Session,
    slot: DraftSlot,
    frames: trio.MemorySendChannel[ServerFrame],
    make: DraftMaker,
    shown: set[int],
) -> None:
    """Ask for the newest draft, one at a time, and send each as a `partial` frame.

    `shown` holds the utterances that have shown text (their drafts are revisions); each draft
    shown moves the session's captions on (`FinalsMeter`, the transcriber client's)."""
    agreements, target = make.agreements, make.settings.caption_target_s
    transcriber, captions, audio = session.transcriber, session.finals.captions, session.audio
    with frames:
        while (segment := await slot.take()) is not None:
            asking = _Asking(make(segment), slot, make)
            first = segment.utterance not in shown
            priority: Priority = "first_partial" if first else "partial"
            now = trio.current_time()
            deadline = now + target - captions.delay_s(audio.received_s)
            with slot.asking(segment.utterance) as scope:
                try:
                    result = await transcriber.transcribe(
                        asking.plan.request,
                        priority=priority,
                        deadline=deadline,
                        latest=asking.latest,
                    )
                except TranscriptionFailed:
                    continue
            plan = asking.plan
            if scope.cancelled_caught or plan.segment.utterance <= slot.finalized_through:
                continue  # abandoned, or the final is on its way: this draft commits nothing
            text, timings = read_draft(plan, result)
            if not text:
                continue
            stable = 0
            if agreements.enabled:
                agreement = agreements.of(plan.segment.utterance)
                text = agreement.offer(text, timings)
                stable = len(agreement.text)
            shown.add(plan.segment.utterance)
            captions.shown(plan.segment.end)
            await frames.send(
                Partial(
                    utterance=plan.segment.utterance,
                    revision=plan.segment.revision,
                    text=text,
                    start=plan.segment.start,
                    end=plan.segment.end,
                    committed=stable,
                    confidence=round(result.confidence, 3),
                    silence_s=plan.segment.silence_s,
                    words=_words(plan.segment, timings) if make.settings.words else None,
                )
            )


def _words(segment: Segment, timings: list[TimedWord]) -> list[Word]:
    """A draft's timed words, in the session's audio time."""
    return [
        Word(
            word=w.word,
            start=round(segment.start + w.start, 3),
            end=round(segment.start + w.end, 3),
            confidence=round(w.probability, 3),
        )
        for w in timings
        if w.timed
    ]
