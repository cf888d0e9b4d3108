"""`python -m bench.noisy`: WER of offline faster-whisper and of Chorus's streaming path, side by
side, on the speech set clean, under 10 dB babble and over a telephone line (issue 10).

The conditions are made here, deterministically (`bench/conditions.py`): babble of 4-6 other
speakers of the set at `--snr-db` (10), and 300-3400 Hz, 8 kHz G.711 μ-law decoded back by
Chorus's own decoder. Both methods get the very same 16 kHz samples of each clip:

- **offline**: faster-whisper's `WhisperModel.transcribe` on the whole clip (`--beam-size` 5,
  `--cpu-threads` 2, `--compute-type` int8, language `en`);
- **streaming**: what one live session gets, simulated offline and without the clock: the
  clip (plus 0.5 s of silence, as `tests/e2e/test_wer_streaming.py` streams it) goes through the
  server's `Segmenter` with its default settings, and each final is decoded as
  `service/session/transcribing.py` decodes finals, one at a time and in order: the Whisper adapter
  loaded as `chorus serve` loads it (tight windows, the loop guard, workers x threads from
  `--cpu-threads`), beam `--beam-size`, the session's last `CONTEXT_FINALS` finals as context.
  Finals are batch-invariant (docs/accuracy.md), so this is what a loaded server
  gives too. Clips are streamed on as many threads as the adapter has workers.

WER uses Whisper's English normalizer over all words of a condition together. The report (Markdown
and JSON in `bench/results/noisy-<stamp>.*`) has every clip's texts, and lists the clips where the
two methods differ most, with the streaming finals' cut times, to see which words are lost.
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import attrs
import msgspec
import numpy as np

from actors.model.port import DecodeOptions, Request, SpeechModel
from actors.speech.segmenter import Segment, Segmenter, SegmenterConfig
from bench.audio import SAMPLE_RATE, Samples, load_set, speech_dir
from bench.conditions import CONDITIONS, Condition, babble_talkers, condition_audio
from bench.figures import ErrorRate, word_error_rate
from bench.report import DEFAULT_RESULTS, cpu_model, machine, now_stamp
from service.session.transcribing import CONTEXT_FINALS

TRAILING_SILENCE_S = 0.5
METHODS = ("offline", "streaming")


@attrs.frozen
class NoisySettings:
    model: str
    clip_set: Path | None
    limit: int | None
    conditions: tuple[Condition, ...]
    snr_db: float
    cpu_threads: int
    compute_type: str
    beam_size: int
    language: str
    show: int
    out: Path


def parse_conditions(text: str) -> tuple[Condition, ...]:
    names = [name.strip() for name in text.split(",") if name.strip()]
    unknown = [name for name in names if name not in CONDITIONS]
    if unknown or not names:
        raise argparse.ArgumentTypeError(f"conditions are {', '.join(CONDITIONS)}; got {text!r}")
    return tuple(condition for condition in CONDITIONS if condition in names)


def parse_arguments(argv: Sequence[str] | None = None) -> NoisySettings:
    parser = argparse.ArgumentParser(prog="python -m bench.noisy", description=__doc__)
    parser.add_argument("--model", default="tiny.en")
    parser.add_argument("--set", dest="clip_set", type=Path, help="TSV of files and references")
    parser.add_argument("--limit", type=int, help="only the first LIMIT clips")
    parser.add_argument(
        "--conditions",
        type=parse_conditions,
        default=CONDITIONS,
        help="comma-separated, of clean,babble,telephone (default: all three)",
    )
    parser.add_argument("--snr-db", type=float, default=10.0, help="babble SNR")
    parser.add_argument("--cpu-threads", type=int, default=2)
    parser.add_argument("--compute-type", default="int8")
    parser.add_argument("--beam-size", type=int, default=5)
    parser.add_argument("--language", default="en")
    parser.add_argument("--show", type=int, default=5, help="clips listed per condition")
    parser.add_argument("--out", type=Path, default=DEFAULT_RESULTS)
    return NoisySettings(**vars(parser.parse_args(argv)))


# -- the report ----------------------------------------------------------------------------


class StreamedFinal(msgspec.Struct):
    start: float
    end: float
    text: str
    flags: list[str] = []


class ClipResult(msgspec.Struct):
    clip: str
    reference: str
    offline: str
    streaming: str
    finals: list[StreamedFinal]
    offline_errors: int
    streaming_errors: int
    babble_talkers: list[str] = []


class Score(msgspec.Struct):
    wer: float | None
    reference_words: int
    substitutions: int
    deletions: int
    insertions: int
    wall_s: float


class ConditionResult(msgspec.Struct):
    condition: str
    offline: Score
    streaming: Score
    streaming_finals: int
    clips: list[ClipResult]


class NoisyReport(msgspec.Struct):
    kind: str
    created: str
    machine: dict[str, str]
    options: dict[str, str]
    conditions: list[ConditionResult]


# -- the two methods -----------------------------------------------------------------------


def stream_clip(
    model: SpeechModel, audio: Samples, *, beam_size: int, language: str
) -> list[StreamedFinal]:
    """One live session's finals for `audio`: the server's segmenter, finals decoded in order
    with the options `service/session/transcribing.py` gives them (an empty final is dropped)."""
    padded = np.concatenate([audio, np.zeros(int(TRAILING_SILENCE_S * SAMPLE_RATE), np.float32)])
    segmenter = Segmenter(SegmenterConfig())
    events = [*segmenter.feed(padded), *segmenter.close()]
    texts: list[str] = []
    finals = []
    for segment in (e for e in events if isinstance(e, Segment) and e.final):
        context = " ".join(texts[-CONTEXT_FINALS:]) or None
        options = DecodeOptions(language=language, beam_size=beam_size, context=context)
        result = model.transcribe_batch([Request(segment.audio, options)])[0]
        if result.text:
            texts.append(result.text)
        finals.append(
            StreamedFinal(
                start=round(segment.start, 3),
                end=round(segment.end, 3),
                text=result.text,
                flags=list(result.flags),
            )
        )
    return finals


def offline_model(settings: NoisySettings) -> Any:
    from faster_whisper import WhisperModel

    from bench.offline import model_directory

    return WhisperModel(
        model_directory(settings.model),
        device="cpu",
        compute_type=settings.compute_type,
        cpu_threads=settings.cpu_threads,
    )


def transcribe_offline(model: Any, audio: Samples, settings: NoisySettings) -> str:
    segments, _ = model.transcribe(audio, language=settings.language, beam_size=settings.beam_size)
    return " ".join(segment.text.strip() for segment in segments)


def streaming_model(settings: NoisySettings) -> SpeechModel:
    from actors.model.weights import resolve_model
    from actors.model.whisper import WhisperAdapter

    return WhisperAdapter(
        resolve_model(settings.model),
        device="cpu",
        compute_type=settings.compute_type,
        cpu_threads=settings.cpu_threads,
    )


# -- the run -------------------------------------------------------------------------------


def score(pairs: Sequence[tuple[str, str]], wall: float, language: str) -> Score:
    rate: ErrorRate = word_error_rate(pairs, language=language)
    return Score(
        wer=rate.wer,
        reference_words=rate.reference_words,
        substitutions=rate.substitutions,
        deletions=rate.deletions,
        insertions=rate.insertions,
        wall_s=round(wall, 2),
    )


def errors(reference: str, hypothesis: str, language: str) -> int:
    rate = word_error_rate([(reference, hypothesis)], language=language)
    return rate.substitutions + rate.deletions + rate.insertions


def measure(settings: NoisySettings) -> list[ConditionResult]:
    table = settings.clip_set or speech_dir() / "en_wer.tsv"
    if not table.exists():
        raise SystemExit(f"no speech set at {table}; give --set")
    every = load_set(table)  # babble talkers come from the whole set, even under --limit
    clips = [clip for clip in every if clip.reference][: settings.limit]
    audio = {
        condition: [condition_audio(condition, clip, every, settings.snr_db) for clip in clips]
        for condition in settings.conditions
    }
    print(f"{len(clips)} clips, {sum(c.duration for c in clips):.0f} s a condition", flush=True)

    offline: dict[Condition, tuple[list[str], float]] = {}
    model = offline_model(settings)
    for condition in settings.conditions:
        begin = time.perf_counter()
        texts = [transcribe_offline(model, samples, settings) for samples in audio[condition]]
        offline[condition] = (texts, time.perf_counter() - begin)
        print(f"offline {condition}: {offline[condition][1]:.0f} s", flush=True)
    del model

    streamed: dict[Condition, tuple[list[list[StreamedFinal]], float]] = {}
    adapter = streaming_model(settings)
    workers = max(1, adapter.workers)
    with ThreadPoolExecutor(max_workers=workers) as pool:
        for condition in settings.conditions:
            begin = time.perf_counter()
            finals = list(
                pool.map(
                    lambda samples: stream_clip(
                        adapter, samples, beam_size=settings.beam_size, language=settings.language
                    ),
                    audio[condition],
                )
            )
            streamed[condition] = (finals, time.perf_counter() - begin)
            print(f"streaming {condition}: {streamed[condition][1]:.0f} s", flush=True)

    results = []
    for condition in settings.conditions:
        offline_texts, offline_wall = offline[condition]
        all_finals, streaming_wall = streamed[condition]
        streaming_texts = [" ".join(f.text for f in finals if f.text) for finals in all_finals]
        references = [clip.reference or "" for clip in clips]
        per_clip = [
            ClipResult(
                clip=clip.name,
                reference=reference,
                offline=off,
                streaming=live,
                finals=finals,
                offline_errors=errors(reference, off, settings.language),
                streaming_errors=errors(reference, live, settings.language),
                babble_talkers=(
                    [talker.name for talker in babble_talkers(clip, every)]
                    if condition == "babble"
                    else []
                ),
            )
            for clip, reference, off, live, finals in zip(
                clips, references, offline_texts, streaming_texts, all_finals, strict=True
            )
        ]
        results.append(
            ConditionResult(
                condition=condition,
                offline=score(
                    list(zip(references, offline_texts, strict=True)),
                    offline_wall,
                    settings.language,
                ),
                streaming=score(
                    list(zip(references, streaming_texts, strict=True)),
                    streaming_wall,
                    settings.language,
                ),
                streaming_finals=sum(len(finals) for finals in all_finals),
                clips=per_clip,
            )
        )
    return results


CONDITION_TITLES = {
    "clean": "clean",
    "babble": "babble {snr:g} dB",
    "telephone": "telephone (8 kHz μ-law)",
}


def _percent(value: float | None) -> str:
    return "-" if value is None else f"{100 * value:.2f}%"


def markdown(report: NoisyReport, show: int) -> str:
    options = report.options
    snr = float(options["snr_db"])
    lines = [
        f"# WER by listening condition: {options['model']}, {options['clips']} clips",
        "",
        f"{report.created}; {report.machine.get('cpu', '')}; {options['compute_type']}, "
        f"{options['cpu_threads']} threads, beam {options['beam_size']}",
        "",
        "| condition | offline faster-whisper | streaming (Chorus) | streaming - offline | "
        "offline S/D/I | streaming S/D/I | finals | wall s offline / streaming |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for result in report.conditions:
        off, live = result.offline, result.streaming
        gap = (
            "-"
            if off.wer is None or live.wer is None
            else f"{100 * (live.wer - off.wer):+.2f} points"
        )
        title = CONDITION_TITLES[result.condition].format(snr=snr)
        lines.append(
            f"| {title} | {_percent(off.wer)} | {_percent(live.wer)} | {gap} | "
            f"{off.substitutions}/{off.deletions}/{off.insertions} | "
            f"{live.substitutions}/{live.deletions}/{live.insertions} | "
            f"{result.streaming_finals} | {off.wall_s:.0f} / {live.wall_s:.0f} |"
        )
    lines += ["", f"Reference words per condition: {report.conditions[0].offline.reference_words}."]
    for result in report.conditions:
        differing = sorted(
            (c for c in result.clips if c.streaming_errors != c.offline_errors),
            key=lambda c: (-abs(c.streaming_errors - c.offline_errors), c.clip),
        )
        if not differing:
            continue
        title = CONDITION_TITLES[result.condition].format(snr=snr)
        lines += [
            "",
            f"## {title}: clips where the methods differ most ({len(differing)} differ)",
            "",
        ]
        for clip in differing[:show]:
            cuts = ", ".join(f"{f.start:.2f}-{f.end:.2f}" for f in clip.finals)
            lines += [
                f"- `{clip.clip}`: errors offline {clip.offline_errors}, streaming "
                f"{clip.streaming_errors}; finals at {cuts or 'none'} s",
                f"  - reference: {clip.reference}",
                f"  - offline: {clip.offline}",
                f"  - streaming: {' | '.join(f.text for f in clip.finals)}",
            ]
            if clip.babble_talkers:
                lines.append(f"  - babble: {', '.join(clip.babble_talkers)}")
    return "\n".join(lines) + "\n"


def run(settings: NoisySettings) -> Path:
    created, stamp = now_stamp()
    conditions = measure(settings)
    options = {
        name: str(value)
        for name, value in attrs.asdict(settings).items()
        if value is not None and name not in ("out", "show")
    }
    options["conditions"] = ",".join(settings.conditions)
    options["clips"] = str(len(conditions[0].clips))
    report = NoisyReport(
        kind="noisy",
        created=created,
        machine={**machine(), "cpu": cpu_model()},
        options=options,
        conditions=conditions,
    )
    stem = settings.out / f"noisy-{stamp}"
    stem.parent.mkdir(parents=True, exist_ok=True)
    Path(f"{stem}.json").write_bytes(
        msgspec.json.format(msgspec.json.encode(report), indent=2) + b"\n"
    )
    Path(f"{stem}.md").write_text(markdown(report, settings.show))
    return stem


def main(argv: Sequence[str] | None = None) -> None:
    stem = run(parse_arguments(argv))
    print(Path(f"{stem}.md").read_text(), end="")


if __name__ == "__main__":
    main()
