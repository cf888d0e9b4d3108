"""`python -m bench.vocabulary`: does a vocabulary help, and in which form (prompt or hotwords)?

Every clip of the shared English set (`../shared/speech/en_wer.tsv`) is cut into utterances by
the live segmenter (its own VAD, the default endpointing) and each utterance is decoded by the
model adapter three ways: with no vocabulary, with the key terms `TERMS` as a prompt, and
with them as faster-whisper's hotwords (`actors/model/vocabulary.py`). Every clip gets the
same terms, as a session would: the clips without them show whether a vocabulary hurts
general accuracy. Reported per way: term recall (of the terms' occurrences in the references,
how many the transcripts spell right), and WER on the whole set. One process, one model,
the ways in turn on the same utterances; the run prints a JSON report.
"""

from __future__ import annotations

import argparse
import json
import re
import time
from collections.abc import Sequence
from pathlib import Path

import attrs

from actors.model.port import DecodeOptions, Request, SpeechModel
from actors.model.vocabulary import Mode, Vocabulary
from actors.speech.segmenter import Segment, Segmenter, SegmenterConfig
from bench.audio import Clip, load_set, speech_dir
from bench.figures import word_error_rate
from bench.report import cpu_model, machine

# the rare names and terms of the shared English set's references (LJ Speech's history of
# printing, Sense and Sensibility, Mr Quilter): what tiny.en has little reason to spell right
TERMS = (
    "Gutenberg",
    "Schoeffer",
    "Maintz",
    "Strasburg",
    "Basle",
    "Lubeck",
    "Sweynheim",
    "Pannartz",
    "Subiaco",
    "Quilter",
    "Dashwood",
    "letterpress",
    "ne-plus-ultra",
)
WAYS: tuple[tuple[str, Mode | None], ...] = (
    ("none", None),
    ("prompt", "prompt"),
    ("hotwords", "hotwords"),
)


@attrs.frozen
class WayResult:
    way: str
    wer: float | None
    term_hits: int
    term_occurrences: int
    missed: tuple[str, ...]
    seconds: float

    @property
    def recall(self) -> float | None:
        return self.term_hits / self.term_occurrences if self.term_occurrences else None


def utterances(clip: Clip) -> list[Segment]:
    """The clip's utterances as a live session's segmenter cuts them."""
    segmenter = Segmenter(SegmenterConfig(interim=False))
    events = [*segmenter.feed(clip.samples), *segmenter.close()]
    return [event for event in events if isinstance(event, Segment) and event.final]


def term_counts(reference: str, hypothesis: str) -> tuple[int, int, list[str]]:
    """(occurrences of the terms in `reference`, how many `hypothesis` has, the missed)."""
    occurrences = hits = 0
    missed: list[str] = []
    for term in TERMS:
        pattern = re.compile(rf"\b{re.escape(term)}\b", re.IGNORECASE)
        wanted = len(pattern.findall(reference))
        found = min(wanted, len(pattern.findall(hypothesis)))
        occurrences, hits = occurrences + wanted, hits + found
        missed.extend([term] * (wanted - found))
    return occurrences, hits, missed


def measure(
    model: SpeechModel, clips: Sequence[tuple[Clip, list[Segment]]], mode: Mode | None
) -> tuple[list[str], float]:
    """Each clip's transcript decoded one way, and the seconds it took."""
    vocabulary = Vocabulary.of(TERMS if mode else (), None)
    options = DecodeOptions(language="en", beam_size=5)
    if mode is not None:
        options = vocabulary.apply(options, mode)
    started = time.perf_counter()
    texts = []
    for _, segments in clips:
        results = model.transcribe_batch([Request(s.audio, options) for s in segments])
        texts.append(" ".join(result.text.strip() for result in results if result.text))
    return texts, time.perf_counter() - started


def run(model_name: str, table: Path, cpu_threads: int) -> dict[str, object]:
    from actors.model.weights import resolve_model
    from actors.model.whisper import WhisperAdapter

    model = WhisperAdapter(
        resolve_model(model_name), device="cpu", compute_type="int8", cpu_threads=cpu_threads
    )
    clips = [(clip, utterances(clip)) for clip in load_set(table)]
    results = []
    for way, mode in WAYS:
        texts, seconds = measure(model, clips, mode)
        pairs = [(clip.reference or "", text) for (clip, _), text in zip(clips, texts, strict=True)]
        occurrences = hits = 0
        missed: list[str] = []
        for reference, text in pairs:
            wanted, found, lost = term_counts(reference, text)
            occurrences, hits, missed = occurrences + wanted, hits + found, [*missed, *lost]
        wer = word_error_rate(pairs).wer
        results.append(WayResult(way, wer, hits, occurrences, tuple(missed), round(seconds, 1)))
    return {
        "model": model_name,
        "clips": len(clips),
        "audio_s": round(sum(clip.duration for clip, _ in clips), 1),
        "terms": list(TERMS),
        "cpu": cpu_model(),
        "machine": machine(),
        "ways": [{**attrs.asdict(result), "recall": result.recall} for result in results],
    }


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.vocabulary", description=__doc__)
    parser.add_argument("--model", default="tiny.en")
    parser.add_argument("--set", type=Path, default=None, help="a TSV of clips (en_wer.tsv)")
    parser.add_argument("--cpu-threads", type=int, default=2)
    arguments = parser.parse_args(argv)
    table = arguments.set or speech_dir() / "en_wer.tsv"
    print(json.dumps(run(arguments.model, table, arguments.cpu_threads), indent=2))


if __name__ == "__main__":
    main()
