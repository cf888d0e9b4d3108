"""From session records to figures: latencies, time to first partial, partial rate, WER.

Pure functions. The definitions (DESIGN §8):

- final latency: arrival of a final - the wall time the chunk holding audio time `final.end`
  was sent (the server cannot have answered before it had that audio);
- end-of-speech latency: arrival of a final - the send time of the end of the speech it covers,
  that is min(`final.end`, the end of the last reference span it overlaps); it adds the
  endpointing wait to the final latency, and is what a speaker feels;
- time to first partial: for each reference span, the first partial whose `end` is past the
  span's start - the send time of the span's speech start;
- first-text delay and caption delay: `bench.timeline`, against the clips' places in the audio;
- WER: finals of completed sessions against their references, both normalized by Whisper's
  English normalizer (the basic one for other languages), counted over all words together;
- text lag: how far committed text is behind the audio, sampled whenever a chunk is sent and on
  at that pace until the session's last frame: the audio time sent so far minus the end of the
  latest final that had arrived by then (pauses and the utterance still being spoken count in
  it; a server that falls behind, or is slow to commit the last words, makes it grow).

A `Window` given to `session_figures` keeps only the latencies whose reference instant (the send
time they are measured from) lies in it; counts, WER and text lag always cover the whole session.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable, Iterable, Sequence

import attrs
import jiwer
import numpy as np

from bench.client import SessionRecord
from bench.conversation import Span
from bench.schema import BatchStats, Distribution, Health, Sessions, SessionSpread
from bench.timeline import (
    EPSILON_S,
    Window,
    caption_delays,
    first_text_delays,
    inside,
    sent_spans,
    sent_time,
)
from protocol.native import Final, Partial, Status


def distribution(samples: Sequence[float]) -> Distribution:
    if not samples:
        return Distribution(count=0)
    values = np.asarray(samples, dtype=np.float64)
    p50, p95, p99 = (float(v) for v in np.percentile(values, [50, 95, 99]))
    return Distribution(
        count=len(values),
        p50=p50,
        p95=p95,
        p99=p99,
        mean=float(values.mean()),
        max=float(values.max()),
    )


def session_spread(per_session: Sequence[Sequence[float]]) -> SessionSpread:
    """Each session's p95 (None without samples), the worst of them and their median."""
    p95s = [
        float(np.percentile(np.asarray(samples, dtype=np.float64), 95)) if samples else None
        for samples in per_session
    ]
    known = [(value, index) for index, value in enumerate(p95s) if value is not None]
    if not known:
        return SessionSpread(p95_s=p95s)
    worst, client = max(known)
    return SessionSpread(
        p95_s=p95s,
        worst_p95_s=worst,
        worst_session=client,
        median_p95_s=float(np.median([value for value, _ in known])),
    )


def overlapping(spans: Iterable[Span], start: float, end: float) -> list[Span]:
    return [span for span in spans if start < span.end and end > span.start]


@attrs.frozen
class SessionFigures:
    final_latencies: tuple[float, ...]
    end_of_speech_latencies: tuple[float, ...]
    first_partial_latencies: tuple[float, ...]
    first_text_latencies: tuple[float, ...]
    finals: int
    unmatched_finals: int
    partials: int
    speech_s: float  # reference speech inside the audio that was sent
    hypothesis: str
    max_lag_s: float | None
    text_lags: tuple[float, ...] = ()
    caption_delays: tuple[float, ...] = ()


def session_figures(record: SessionRecord, window: Window | None = None) -> SessionFigures:
    """One session's figures; latencies only where their reference instant is in `window`."""
    spans = sent_spans(record)
    finals = [(a.at, a.frame) for a in record.arrivals if isinstance(a.frame, Final)]
    partials = [(a.at, a.frame) for a in record.arrivals if isinstance(a.frame, Partial)]
    lags = [a.frame.lag_s for a in record.arrivals if isinstance(a.frame, Status)]
    final_latencies, speech_latencies = [], []
    unmatched = 0
    for at, final in finals:
        sent = sent_time(record, final.end)
        if sent is not None and inside(window, sent):
            final_latencies.append(at - sent)
        covered = overlapping(record.conversation.spans, final.start, final.end)
        if not covered:
            unmatched += 1
            continue
        speech_end = min(final.end, max(span.end for span in covered))
        sent = sent_time(record, speech_end)
        if sent is not None and inside(window, sent):
            speech_latencies.append(at - sent)
    first_partials = []
    for span in spans:
        arrivals = [at for at, partial in partials if partial.end > span.start + EPSILON_S]
        sent = sent_time(record, span.start)
        if arrivals and sent is not None and inside(window, sent):
            first_partials.append(min(arrivals) - sent)
    ordered = sorted((final.start, final.utterance, final.text) for _, final in finals)
    return SessionFigures(
        final_latencies=tuple(final_latencies),
        end_of_speech_latencies=tuple(speech_latencies),
        first_partial_latencies=tuple(first_partials),
        first_text_latencies=tuple(first_text_delays(record, window)),
        finals=len(finals),
        unmatched_finals=unmatched,
        partials=len(partials),
        speech_s=sum(span.end - span.start for span in spans),
        hypothesis=" ".join(text.strip() for _, _, text in ordered),
        max_lag_s=max(lags) if lags else None,
        text_lags=tuple(text_lags(record, finals)),
        caption_delays=tuple(caption_delays(record, window)),
    )


def text_lags(record: SessionRecord, finals: Sequence[tuple[float, Final]]) -> list[float]:
    """Audio sent so far minus the end of the finals arrived by then, at every chunk sent and,
    at the same pace, on after the last one until the session's last frame (while the server
    still commits what it was sent)."""
    if not record.sent_at:
        return []
    sends = list(zip(record.audio_ends, record.sent_at, strict=True))
    first, last_sent = record.sent_at[0], record.sent_at[-1]
    step = max((last_sent - first) / (len(sends) - 1), 0.01) if len(sends) > 1 else 0.1
    last_frame = max((arrival.at for arrival in record.arrivals), default=last_sent)
    extra = math.floor((last_frame - last_sent) / step + EPSILON_S)
    sends += [(record.audio_ends[-1], last_sent + step * (k + 1)) for k in range(max(extra, 0))]
    arrived = sorted(finals, key=lambda pair: pair[0])
    lags, committed, index = [], 0.0, 0
    for audio_end, at in sends:
        while index < len(arrived) and arrived[index][0] <= at:
            committed = max(committed, arrived[index][1].end)
            index += 1
        lags.append(max(audio_end - committed, 0.0))
    return lags


def reference_text(record: SessionRecord) -> str | None:
    """The session's reference transcript, or None when a clip has no reference."""
    texts = [span.reference for span in record.conversation.spans]
    if any(text is None for text in texts):
        return None
    return " ".join(text for text in texts if text)


@attrs.frozen
class ErrorRate:
    wer: float | None
    reference_words: int
    substitutions: int = 0
    deletions: int = 0
    insertions: int = 0


def word_error_rate(pairs: Iterable[tuple[str, str]], *, language: str = "en") -> ErrorRate:
    """WER over (reference, hypothesis) pairs, counting all words together."""
    normalize = _normalizer(language)
    references, hypotheses = [], []
    for reference, hypothesis in pairs:
        normalized = normalize(reference).strip()
        if normalized:
            references.append(normalized)
            hypotheses.append(normalize(hypothesis).strip())
    if not references:
        return ErrorRate(wer=None, reference_words=0)
    counts = jiwer.process_words(references, hypotheses)
    words = counts.hits + counts.substitutions + counts.deletions
    return ErrorRate(
        wer=float(counts.wer),
        reference_words=int(words),
        substitutions=int(counts.substitutions),
        deletions=int(counts.deletions),
        insertions=int(counts.insertions),
    )


def _normalizer(language: str) -> Callable[[str], str]:
    # whisper_normalizer's sources hold invalid escape sequences: compiling them warns, and
    # under `-W error` (pytest here) the warning would be a SyntaxError.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        warnings.simplefilter("ignore", SyntaxWarning)
        from whisper_normalizer.basic import BasicTextNormalizer
        from whisper_normalizer.english import EnglishTextNormalizer
    english = language.startswith("en")
    normalize: Callable[[str], str] = EnglishTextNormalizer() if english else BasicTextNormalizer()
    return normalize


def count_sessions(records: Sequence[SessionRecord]) -> Sessions:
    return Sessions(
        started=sum(record.started for record in records),
        completed=sum(record.outcome == "completed" for record in records),
        refused=sum(record.outcome == "refused" for record in records),
        failed=sum(record.outcome == "failed" for record in records),
    )


def batch_difference(before: Health | None, after: Health | None) -> BatchStats | None:
    """What the transcriber did between two `/health` answers."""
    if before is None or after is None or before.transcriber is None or after.transcriber is None:
        return None
    old, new = before.transcriber, after.transcriber
    sizes = {
        size: count - old.batch_sizes.get(size, 0)
        for size, count in new.batch_sizes.items()
        if count - old.batch_sizes.get(size, 0) > 0
    }
    batches, items = new.batches - old.batches, new.items - old.items
    return BatchStats(
        batches=batches,
        items=items,
        mean_batch=items / batches if batches else None,
        batch_sizes=dict(sorted(sizes.items(), key=lambda pair: int(pair[0]))),
        busy_s=new.busy_s - old.busy_s,
        model_s={
            kind: round(seconds - old.model_s.get(kind, 0.0), 3)
            for kind, seconds in new.model_s.items()
        },
    )
