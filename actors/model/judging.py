"""What a decoded text is worth: sans-IO rules over the decoder's scores, no model library.

`judge` applies Whisper's own silence rule (a likely "no speech" with a low score or a text
that compresses too well is no text), and flags text that is likely made up: a low average
log-probability, a repetitive text, a phrase Whisper often invents on silence. A final under
`SHORT_S` decoded with an average log-probability under -1.0 is no text either: where the
noise goes on after the speaker stops (babble, a cafe), the segmenter opens a 2 s utterance on
it and Whisper writes a sentence nobody said ("That is the most important thing in the
world.", -1.38); at four offsets of the shared set in four noisy and clean conditions every
final so judged was of that kind, and no final of the clean or telephone sets was. Only English
is judged so (`SHORT_LANGUAGES`): it is the only language that was measured, and real speech in
others scored under -1.0 in 2.5 s (base: Spanish taken for Nepali at -1.05, Japanese at -1.11).

Loop guard: a tight window (`actors/model/windows.py`) still loops now and then, and where it
does depends on the CPU's int8 kernels (on an AVX2-only EPYC, tiny.en repeated LJ001-0011 twice
over in a 10 s window; with AVX-512 it did not). A result that looks looped (a run of words
repeated back to back, a compression ratio over `MAX_COMPRESSION_RATIO`, or a generation that
ran into its `max_length`) is marked `LOOPED`; the adapter decodes a looped final once more in a
30 s window and keeps the wider answer (marked `WIDENED`), which brings the word error rate of
CPUs that loop back to that of those that do not (measured: docs/benchmarks.md). A looped
draft is cut where the repeat begins instead (`cut_loop`).

Skipped phrases: the session's earlier finals, given as context, now and then make Whisper
leave out a phrase that echoes them. In 10 dB babble running through the pauses, a 13.5 s final
after a context ending "…on the side of the lowercase." read "The earliest book printed with
movable type the aforesaid Gutenberg Bible", 12 words where 26 were said ("than the capital
letters; the lower-case being in fact invented in the early Middle Ages" gone); decoded
without the context, it had them all. Such a final has far fewer words than its audio
(`sparse`: under `SPARSE_WORDS_PER_S` a second over at least `SPARSE_MIN_S`; read speech runs
2-3 words a second, slow verse 1.4), so the adapter decodes it once more without the context
and keeps that answer (marked `UNPROMPTED`) where it has clearly more words (`fuller`).
"""

from __future__ import annotations

import zlib

import attrs

from actors.model.port import Result

MAX_COMPRESSION_RATIO = 2.4
SHORT_S = 3.0  # a final this short decoded with avg_logprob under -1.0 is taken for noise
SHORT_LANGUAGES = frozenset({"en"})  # ... in these languages only (measured in English alone)
HALLUCINATIONS = (
    "thank you for watching",
    "thanks for watching",
    "subscribe",
    "subtitles by",
    "amara.org",
    "please like",
    "see you in the next video",
    "transcription by",
)
LOOPED = "looped: a phrase repeated back to back, or the generation ran out of length"
WIDENED = "widened: decoded again in a 30 s window"
UNPROMPTED = "unprompted: decoded again without the earlier finals, which had made it skip words"

SPARSE_MIN_S = 6.0  # shorter finals are never judged sparse
SPARSE_WORDS_PER_S = 1.0  # fewer words a second than this over a long final: a skipped phrase
FULLER_BY = 1.5  # the second answer is kept when it has this many times the words
# languages written without spaces between words: their word counts say nothing of skips
UNSPACED = frozenset({"zh", "ja", "th", "lo", "my", "km", "bo", "yue"})


def judge(
    text: str,
    language: str,
    language_prob: float,
    avg_logprob: float,
    no_speech_prob: float,
    *,
    seconds: float | None = None,
) -> Result:
    """Whisper's own silence rule, plus flags for text that is likely made up. A final of
    `seconds` under `SHORT_S` that the decoder was unsure of is no text either, in the
    `SHORT_LANGUAGES` (`seconds` is given for finals only: a draft's first second may well be
    unsure)."""
    flags: list[str] = []
    ratio = compression_ratio(text)
    silent = no_speech_prob > 0.6 and (avg_logprob < -1.0 or ratio > MAX_COMPRESSION_RATIO)
    if silent or no_speech_prob > 0.9:
        flags.append(f"no_speech: p={no_speech_prob:.2f}, avg_logprob={avg_logprob:.2f}")
        text = ""
    elif text and _short_and_unsure(language, avg_logprob, seconds):
        flags.append(f"no_speech: {seconds:.1f} s decoded unsure, avg_logprob={avg_logprob:.2f}")
        text = ""
    elif avg_logprob < -1.0:
        flags.append(f"low_confidence: avg_logprob={avg_logprob:.2f}")
    if ratio > MAX_COMPRESSION_RATIO:
        flags.append(f"repetition: compression_ratio={ratio:.2f}")
    lowered = text.lower()
    if any(phrase in lowered for phrase in HALLUCINATIONS):
        flags.append("suspected_hallucination: a phrase Whisper often invents on silence")
    return Result(
        text=text,
        language=language,
        language_probability=language_prob,
        avg_logprob=avg_logprob,
        no_speech_prob=no_speech_prob,
        compression_ratio=ratio,
        flags=tuple(flags),
    )


def mark_loop(result: Result, decoded: str, *, ran_out: bool) -> Result:
    """`result`, flagged `LOOPED` when its text looks looped (`decoded`: the text before the
    silence rule; `ran_out`: the generation reached its `max_length`)."""
    if result.text and (
        ran_out or result.compression_ratio > MAX_COMPRESSION_RATIO or repeats(decoded)
    ):
        return attrs.evolve(result, flags=(*result.flags, LOOPED))
    return result


def looped(result: Result) -> bool:
    return any(flag.startswith("looped") for flag in result.flags)


def cut_loop(result: Result) -> Result:
    """A looped draft up to where its repeat begins, with the words it keeps: a phrase said
    again (`before_repeat`), and then a repeat that its token room cut short at the end
    ("should be viewed. The forms", `before_trailing_repeat`)."""
    text = before_trailing_repeat(before_repeat(result.text))
    return attrs.evolve(result, text=text, words=result.words[: len(text.split())])


def _short_and_unsure(language: str, avg_logprob: float, seconds: float | None) -> bool:
    short = seconds is not None and seconds < SHORT_S
    return short and avg_logprob < -1.0 and language in SHORT_LANGUAGES


def sparse(result: Result, seconds: float) -> bool:
    """Whether a final of `seconds` of audio has so few words that a phrase was likely
    skipped (an empty final is the silence rule's, not a skip)."""
    if not result.text or seconds < SPARSE_MIN_S or result.language in UNSPACED:
        return False
    return len(result.text.split()) < SPARSE_WORDS_PER_S * seconds


def fuller(first: Result, second: Result) -> Result | None:
    """`second`, marked `UNPROMPTED` and its cost added to `first`'s, when it has at least
    `FULLER_BY` times `first`'s words and is not itself looped; else None (keep `first`)."""
    if looped(second) or len(second.text.split()) < FULLER_BY * len(first.text.split()):
        return None
    return attrs.evolve(
        second, flags=(*second.flags, UNPROMPTED), tokens=first.tokens + second.tokens
    )


def repeat_start(text: str, shortest: int = 3, longest: int = 6) -> int | None:
    """Index of the word where a phrase starts again, or None: `shortest`+ words back to back
    ("a b c a b c"), or `longest` words anywhere (a loop cut short by the length limit)."""
    words = [word.strip(".,!?;:").lower() for word in text.split()]
    starts = []
    for lag in range(shortest, len(words)):
        run = 0  # how many words in a row equal the word `lag` places later
        for index, (here, there) in enumerate(zip(words, words[lag:], strict=False)):
            run = run + 1 if here == there else 0
            if run >= min(lag, longest):
                starts.append(index - run + 1 + lag)
                break
    return min(starts, default=None)


def repeats(text: str) -> bool:
    return repeat_start(text) is not None


def before_repeat(text: str) -> str:
    """`text` up to where a phrase starts again, else unchanged."""
    start = repeat_start(text)
    return text if start is None else " ".join(text.split()[:start])


def before_trailing_repeat(text: str) -> str:
    """`text` without its last words where they say again the words some places before
    them: two words or more ("viewed. The forms" after "The forms of…"), or one said twice
    ("but but"). Only for text already judged looped: ordinary speech repeats words too."""
    words = [word.strip(".,!?;:").lower() for word in text.split()]
    cut = len(words)
    for lag in range(1, len(words)):
        run = 0  # how many of the last words equal the word `lag` places before each
        while run < len(words) - lag and words[-1 - run] == words[-1 - run - lag]:
            run += 1
        if run >= min(lag, 2):
            cut = min(cut, len(words) - run)
    return text if cut == len(words) else " ".join(text.split()[:cut])


def compression_ratio(text: str) -> float:
    if not text:
        return 0.0
    data = text.encode("utf-8")
    return len(data) / len(zlib.compress(data))
