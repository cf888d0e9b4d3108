"""`python -m bench.reuse`: what finals that reuse the drafts' work cost in accuracy and save in
model time, on the speech set clean, under 10 dB babble and over a telephone line (issue 20).

Each clip (plus 0.5 s of silence) goes through one simulated live session without the clock:
the server's `Segmenter` with its defaults, every partial it asks for drafted as
`service/session/drafting.py` drafts (tail drafts, committed words with their times, greedy),
and at each utterance's end its final decoded two or more ways from the same drafts:

- **fresh**: the whole utterance, beam `--beam-size`, the finals' window (what Chorus does by
  default);
- **reuse H**: the committed words that end H seconds or more before the utterance does stand,
  and only the audio from a second before their end on is decoded, with the final's beam
  (`drafting.plan_final`, `CHORUS_FINAL_REUSE_S=H`);
- **forced H** (`--forced H` or `H:P`): the whole utterance in the finals' window, as fresh,
  with the committed words that end H seconds or more before it forced as the decoder's first
  words, up to the first whose draft gave it a probability under P. The encoder's work is
  the same as fresh; what it shows is what forcing words saves of the decoder's
  (`bench.model_cost` times one forced token).

It reports WER (Whisper's English normalizer, over all words of a condition), substitutions,
deletions and insertions per condition and rule, and the model seconds each rule's finals took
(one final at a time, on the adapter `chorus serve` loads with `--cpu-threads`). The drafts are
every draft the segmenter asks for: a loaded server drafts less often, commits less and so
reuses less. Writes `bench/results/reuse-<stamp>.md` and `.json`.
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Sequence
from pathlib import Path

import attrs
import msgspec
import numpy as np

from actors.model.port import DecodeOptions, Request, SpeechModel
from actors.model.weights import resolve_model
from actors.model.whisper import WhisperAdapter
from actors.speech.segmenter import Segment, Segmenter, SegmenterConfig
from bench.audio import SAMPLE_RATE, Samples, load_set, speech_dir
from bench.conditions import CONDITIONS, Condition, condition_audio
from bench.figures import word_error_rate
from bench.noisy import TRAILING_SILENCE_S, parse_conditions
from bench.report import DEFAULT_RESULTS, cpu_model, now_stamp, write_pair
from service.session.agreement import Agreement
from service.session.drafting import DraftPlan, plan_draft, plan_final, read_draft
from service.session.transcribing import CONTEXT_FINALS


@attrs.frozen
class ForcedRule:
    """The whole utterance decoded with committed words ending `hold_s` before its end
    forced, up to the first with a probability under `min_probability`."""

    hold_s: float
    min_probability: float = 0.0

    @property
    def name(self) -> str:
        floor = f", p ≥ {self.min_probability:g}" if self.min_probability > 0 else ""
        return f"forced {self.hold_s:g} s{floor}"

    @classmethod
    def parse(cls, text: str) -> ForcedRule:
        hold, _, floor = text.partition(":")
        return cls(float(hold), float(floor or 0.0))

    def words(self, agreement: Agreement, audio_s: float) -> list[str]:
        kept = []
        for word in agreement.committed:
            late = word.timed and word.end > audio_s - self.hold_s
            if late or word.probability < self.min_probability:
                break
            kept.append(word.word)
        return kept


@attrs.frozen
class ReuseSettings:
    model: str
    clip_set: Path | None
    limit: int | None
    conditions: tuple[Condition, ...]
    holds: tuple[float, ...]
    forced: tuple[ForcedRule, ...]
    snr_db: float
    cpu_threads: int
    compute_type: str
    beam_size: int
    out: Path


class RuleScore(msgspec.Struct):
    rule: str
    wer: float | None
    substitutions: int
    deletions: int
    insertions: int
    final_model_s: float
    reused_words: int


class ConditionScores(msgspec.Struct):
    condition: str
    reference_words: int
    drafts: int
    draft_model_s: float
    rules: list[RuleScore]


def parse_arguments(argv: Sequence[str] | None = None) -> ReuseSettings:
    parser = argparse.ArgumentParser(prog="python -m bench.reuse", description=__doc__)
    parser.add_argument("--model", default="tiny.en")
    parser.add_argument("--set", dest="clip_set", type=Path, help="TSV of files and references")
    parser.add_argument("--limit", type=int, help="only the first LIMIT clips")
    parser.add_argument("--conditions", type=parse_conditions, default=CONDITIONS)
    parser.add_argument(
        "--holds",
        type=lambda text: tuple(float(x) for x in text.split(",")),
        default=(0.5, 1.5, 3.0),
        help="reuse rules: committed words ending this many seconds before the utterance",
    )
    parser.add_argument(
        "--forced",
        type=lambda text: tuple(ForcedRule.parse(x) for x in text.split(",") if x),
        default=(),
        help="rules H or H:P: committed words ending H s before the utterance (and each with "
        "a draft probability of at least P) forced on the whole utterance's final",
    )
    parser.add_argument("--snr-db", type=float, default=10.0)
    parser.add_argument("--cpu-threads", type=int, default=2)
    parser.add_argument("--compute-type", default="int8")
    parser.add_argument("--beam-size", type=int, default=5)
    parser.add_argument("--out", type=Path, default=DEFAULT_RESULTS)
    return ReuseSettings(**vars(parser.parse_args(argv)))


@attrs.define
class _Tally:
    texts: list[str] = attrs.Factory(list)  # one per clip
    model_s: float = 0.0
    reused: int = 0


Rule = float | ForcedRule
"""A final's rule: reuse H (a hold in seconds; 0 is fresh) or forced words."""


def rules_of(settings: ReuseSettings) -> dict[str, Rule]:
    """Every rule the settings ask for, by its name in the report; fresh first."""
    reuse: dict[str, Rule] = {f"reuse {hold:g} s": hold for hold in settings.holds}
    return {"fresh": 0.0, **reuse, **{rule.name: rule for rule in settings.forced}}


def final_plan(
    rule: Rule, segment: Segment, agreement: Agreement, options: DecodeOptions
) -> tuple[DraftPlan, int]:
    """The final's request by `rule`, and how many committed words it did not decode."""
    if isinstance(rule, ForcedRule):
        words = rule.words(agreement, len(segment.audio) / SAMPLE_RATE)
        forced = attrs.evolve(options, committed=" ".join(words) or None)
        return DraftPlan(Request(segment.audio, forced), segment), len(words)
    plan = plan_final(segment, agreement, options, rule)
    return plan, len(plan.before)


def stream_clip(
    model: SpeechModel,
    audio: Samples,
    rules: dict[str, Rule],
    beam_size: int,
    tallies: dict[str, _Tally],
) -> tuple[int, float]:
    """One session over `audio`: drafts as asked, then each final by every rule (fresh among
    them). Appends each rule's text for the clip to its tally (`tallies`, by the same names);
    returns (drafts, draft model seconds)."""
    padded = np.concatenate([audio, np.zeros(int(TRAILING_SILENCE_S * SAMPLE_RATE), np.float32)])
    segmenter = Segmenter(SegmenterConfig())
    events = [*segmenter.feed(padded), *segmenter.close()]
    finals: dict[str, list[str]] = {rule: [] for rule in tallies}
    agreement, drafts, draft_s = Agreement(), 0, 0.0
    for segment in (e for e in events if isinstance(e, Segment)):
        if not segment.final:
            options = DecodeOptions(language="en", partial=True, context=_context(finals["fresh"]))
            draft = plan_draft(segment, agreement, options)
            begin = time.perf_counter()
            result = model.transcribe_batch([draft.request])[0]
            draft_s += time.perf_counter() - begin
            drafts += 1
            if result.text:
                agreement.offer(*read_draft(draft, result))
            continue
        for name, rule in rules.items():
            options = DecodeOptions(
                language="en", beam_size=beam_size, context=_context(finals[name])
            )
            plan, reused = final_plan(rule, segment, agreement, options)
            begin = time.perf_counter()
            result = model.transcribe_batch([plan.request])[0]
            tallies[name].model_s += time.perf_counter() - begin
            text = read_draft(plan, result)[0]
            tallies[name].reused += reused
            if text:
                finals[name].append(text)
        agreement = Agreement()
    for name, tally in tallies.items():
        tally.texts.append(" ".join(finals[name]))
    return drafts, draft_s


def _context(finals: list[str]) -> str | None:
    return " ".join(finals[-CONTEXT_FINALS:]) or None


def measure(settings: ReuseSettings) -> list[ConditionScores]:
    table = settings.clip_set or speech_dir() / "en_wer.tsv"
    every = load_set(table)
    clips = [clip for clip in every if clip.reference][: settings.limit]
    model = WhisperAdapter(
        resolve_model(settings.model),
        device="cpu",
        compute_type=settings.compute_type,
        cpu_threads=settings.cpu_threads,
    )
    scores, rules = [], rules_of(settings)
    for condition in settings.conditions:
        tallies = {name: _Tally() for name in rules}
        drafts, draft_s = 0, 0.0
        for clip in clips:
            audio = condition_audio(condition, clip, every, settings.snr_db)
            count, seconds = stream_clip(model, audio, rules, settings.beam_size, tallies)
            drafts, draft_s = drafts + count, draft_s + seconds
        references = [clip.reference or "" for clip in clips]
        scored = []
        for name, tally in tallies.items():
            rate = word_error_rate(list(zip(references, tally.texts, strict=True)))
            scored.append(
                RuleScore(
                    rule=name,
                    wer=rate.wer,
                    substitutions=rate.substitutions,
                    deletions=rate.deletions,
                    insertions=rate.insertions,
                    final_model_s=round(tally.model_s, 2),
                    reused_words=tally.reused,
                )
            )
        reference_words = word_error_rate(list(zip(references, references, strict=True)))
        scores.append(
            ConditionScores(
                condition=condition,
                reference_words=reference_words.reference_words,
                drafts=drafts,
                draft_model_s=round(draft_s, 2),
                rules=scored,
            )
        )
        print(_table([scores[-1]]), flush=True)
    return scores


def _table(scores: list[ConditionScores]) -> str:
    lines = [
        "| condition | rule | WER | sub | del | ins | finals' model s | words reused |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for condition in scores:
        for rule in condition.rules:
            wer = "-" if rule.wer is None else f"{100 * rule.wer:.2f}%"
            lines.append(
                f"| {condition.condition} | {rule.rule} | {wer} | {rule.substitutions} | "
                f"{rule.deletions} | {rule.insertions} | {rule.final_model_s} | "
                f"{rule.reused_words} |"
            )
    lines += [
        "",
        "| condition | drafts | drafts' model s | ms a draft |",
        "|---|---|---|---|",
        *(
            f"| {c.condition} | {c.drafts} | {c.draft_model_s} | "
            f"{1000 * c.draft_model_s / max(1, c.drafts):.0f} |"
            for c in scores
        ),
    ]
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> None:
    settings = parse_arguments(argv)
    scores = measure(settings)
    when, stamp = now_stamp()
    header = (
        f"# Finals reusing drafts, {when}\n\nmodel {settings.model}, {settings.compute_type}, "
        f"{settings.cpu_threads} threads, beam {settings.beam_size}; CPU {cpu_model()}\n\n"
    )
    write_pair(settings.out / f"reuse-{stamp}", header + _table(scores) + "\n", scores)


if __name__ == "__main__":
    main()
