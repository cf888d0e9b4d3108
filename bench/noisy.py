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
from functools import partial
from pathlib import Path
from typing import Any

import attrs
import msgspec
import numpy as np

from actors.model.port import DecodeOptions, SpeechModel
from actors.speech.segmenter import Segment, Segmenter, SegmenterConfig
from bench.audio import SAMPLE_RATE, Clip, Samples, load_set, speech_dir, to_pcm16
from bench.conditions import (
    CAFE_TALKERS,
    CONDITIONS,
    DEFAULT_CONDITIONS,
    Condition,
    babble_talkers,
    condition_audio,
)
from bench.conversation import Conversation
from bench.figures import ErrorRate, word_error_rate
from bench.report import DEFAULT_RESULTS, cpu_model, machine, now_stamp
from service.session.lead_in import LEAD_IN_MODES, LeadIn, LeadInMode
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
    conversations: int = 0
    pause_s: float = 1.0
    offset_ms: float = 0.0
    live: int = 0
    final_lead_in: LeadInMode = "narrowband"
    server_cmd: str = "uv run chorus serve"
    server_args: str = ""


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
        default=DEFAULT_CONDITIONS,
        help=f"comma-separated, of {','.join(CONDITIONS)} (default: the first three; the last "
        "two are held out: no test or tuning looks at them)",
    )
    parser.add_argument(
        "--conversations",
        type=int,
        default=0,
        help="lay the clips end to end in this many conversations (each clip once, in order, "
        "--pause-s apart), and score those instead of single clips (default: single clips)",
    )
    parser.add_argument("--pause-s", type=float, default=1.0)
    parser.add_argument(
        "--offset-ms",
        type=float,
        default=0.0,
        help="more silence before each piece: the same speech with the VAD's 32 ms frames and "
        "the mel's 10 ms hops falling elsewhere, to see how much a score moves by chance "
        "(runs at a few offsets, e.g. 0, 8, 16, 24)",
    )
    parser.add_argument(
        "--live",
        type=int,
        default=0,
        metavar="SESSIONS",
        help="stream through a real server in real time, SESSIONS at once, instead of the "
        "clock-free simulation (implies --conversations SESSIONS unless given)",
    )
    parser.add_argument(
        "--final-lead-in",
        choices=LEAD_IN_MODES,
        default="narrowband",
        help="which finals the streaming side decodes after the previous one (as the server's "
        "CHORUS_FINAL_LEAD_IN; live: passed to the server)",
    )
    parser.add_argument("--server-cmd", default="uv run chorus serve")
    parser.add_argument("--server-args", default="", help="more flags for the server")
    parser.add_argument("--snr-db", type=float, default=10.0, help="babble SNR")
    parser.add_argument("--cpu-threads", type=int, default=2)
    parser.add_argument("--compute-type", default="int8")
    parser.add_argument("--beam-size", type=int, default=5)
    parser.add_argument("--language", default="en")
    parser.add_argument("--show", type=int, default=5, help="clips listed per condition")
    parser.add_argument("--out", type=Path, default=DEFAULT_RESULTS)
    settings = NoisySettings(**vars(parser.parse_args(argv)))
    if settings.live and not settings.conversations:
        settings = attrs.evolve(settings, conversations=settings.live)
    return settings


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
    model: SpeechModel,
    audio: Samples,
    *,
    beam_size: int,
    language: str,
    lead_in: LeadInMode = "narrowband",
) -> list[StreamedFinal]:
    """One live session's finals for `audio`: the server's segmenter, finals decoded in order
    with the options `service/session/transcribing.py` gives them, after the previous final
    where its `LeadIn` says so (an empty final is dropped)."""
    padded = np.concatenate([audio, np.zeros(int(TRAILING_SILENCE_S * SAMPLE_RATE), np.float32)])
    segmenter = Segmenter(SegmenterConfig())
    events = [*segmenter.feed(padded), *segmenter.close()]
    texts: list[str] = []
    finals = []
    leads = LeadIn(lead_in)
    for segment in (e for e in events if isinstance(e, Segment) and e.final):
        context = " ".join(texts[-CONTEXT_FINALS:]) or None
        options = DecodeOptions(language=language, beam_size=beam_size, context=context)
        earlier = " ".join(texts[:-1][-CONTEXT_FINALS:]) or None
        result = model.transcribe_batch([leads.request(segment, options, earlier)])[0]
        leads.remember(segment, result.text)
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


def stream_simulated(
    settings: NoisySettings, audio: dict[Condition, list[Samples]]
) -> dict[Condition, tuple[list[list[StreamedFinal]], float]]:
    """Every piece of audio through `stream_clip`, as many at once as the adapter has workers."""
    streamed: dict[Condition, tuple[list[list[StreamedFinal]], float]] = {}
    adapter = streaming_model(settings)
    workers = max(1, adapter.workers)
    with ThreadPoolExecutor(max_workers=workers) as pool:
        for condition in settings.conditions:
            begin = time.perf_counter()
            finals = list(
                pool.map(
                    lambda samples: stream_clip(
                        adapter,
                        samples,
                        beam_size=settings.beam_size,
                        language=settings.language,
                        lead_in=settings.final_lead_in,
                    ),
                    audio[condition],
                )
            )
            streamed[condition] = (finals, time.perf_counter() - begin)
            print(f"streaming {condition}: {streamed[condition][1]:.0f} s", flush=True)
    return streamed


def stream_live(
    settings: NoisySettings, audio: dict[Condition, list[Samples]]
) -> dict[Condition, tuple[list[list[StreamedFinal]], float]]:
    """Every piece of audio through a real server (`bench.noisy_live`), one server a condition."""
    import trio

    from bench.noisy_live import run_live

    streamed: dict[Condition, tuple[list[list[StreamedFinal]], float]] = {}
    for condition in settings.conditions:
        conversations = [
            Conversation(pcm=to_pcm16(samples), spans=()) for samples in audio[condition]
        ]
        begin = time.perf_counter()
        frames = trio.run(
            partial(
                run_live,
                conversations,
                model=settings.model,
                sessions=settings.live,
                server_cmd=settings.server_cmd,
                server_args=f"--final-lead-in {settings.final_lead_in} {settings.server_args}",
                log_path=settings.out / f"noisy-live-{condition}.log",
            )
        )
        finals = [
            [
                StreamedFinal(start=f.start, end=f.end, text=f.text, flags=list(f.flags))
                for f in session
            ]
            for session in frames
        ]
        streamed[condition] = (finals, time.perf_counter() - begin)
        print(f"live {condition}: {streamed[condition][1]:.0f} s", flush=True)
    return streamed


@attrs.frozen
class Item:
    """What one WER line scores: a clip, or clips laid end to end as one conversation."""

    name: str
    reference: str
    clips: list[Clip]


def conversation_groups(count: int, conversations: int) -> list[list[int]]:
    """Clip indices 0..count-1 in `conversations` runs of consecutive clips, as even as can be."""
    runs = max(1, min(conversations, count))
    size, extra = divmod(count, runs)
    groups, begin = [], 0
    for index in range(runs):
        end = begin + size + (1 if index < extra else 0)
        groups.append(list(range(begin, end)))
        begin = end
    return groups


def pieces(
    settings: NoisySettings, clips: Sequence[Clip], every: Sequence[Clip]
) -> tuple[list[Item], dict[Condition, list[Samples]]]:
    """What is scored, and its audio in each condition: every clip on its own, or with
    `--conversations` the clips in that many runs laid end to end `--pause-s` apart."""
    offset_s, snr = settings.offset_ms / 1000, settings.snr_db
    if not settings.conversations:
        items = [Item(clip.name, clip.reference or "", [clip]) for clip in clips]
        return items, {
            condition: [
                condition_audio(condition, padded(clip, 0.0, lead_s=offset_s), every, snr)
                for clip in clips
            ]
            for condition in settings.conditions
        }
    groups = [
        [clips[i] for i in group]
        for group in conversation_groups(len(clips), settings.conversations)
    ]
    items = [
        Item(
            "+".join(clip.name for clip in group),
            " ".join(clip.reference or "" for clip in group),
            group,
        )
        for group in groups
    ]
    audio = {
        condition: [
            np.concatenate(
                [
                    condition_audio(
                        condition,
                        padded(
                            clip, settings.pause_s, lead_s=(0.5 + offset_s) if index == 0 else 0.0
                        ),
                        every,
                        snr,
                    )
                    for index, clip in enumerate(group)
                ]
            )
            for group in groups
        ]
        for condition in settings.conditions
    }
    return items, audio


def padded(clip: Clip, pause_s: float, *, lead_s: float = 0.0) -> Clip:
    """`clip` led by `lead_s` and followed by `pause_s` of silence (a conversation's first clip
    is led by 0.5 s), before its condition is made: the noise of a noisy condition runs on
    through the pauses, as a room's does, and its SNR counts them."""
    lead = np.zeros(round(lead_s * SAMPLE_RATE), dtype=np.float32)
    pause = np.zeros(round(pause_s * SAMPLE_RATE), dtype=np.float32)
    return attrs.evolve(clip, samples=np.concatenate([lead, clip.samples, pause]))


def talkers_of(condition: Condition, item: Item, every: Sequence[Clip]) -> list[str]:
    if condition == "babble":
        return [t.name for clip in item.clips for t in babble_talkers(clip, every)]
    if condition == "cafe":
        return [
            t.name
            for clip in item.clips
            for t in babble_talkers(clip, every, CAFE_TALKERS, seed="cafe:")
        ]
    return []


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
    items, audio = pieces(settings, clips, every)
    seconds = sum(len(samples) for samples in audio[settings.conditions[0]]) / SAMPLE_RATE
    print(f"{len(clips)} clips in {len(items)} pieces, {seconds:.0f} s a condition", flush=True)

    offline: dict[Condition, tuple[list[str], float]] = {}
    model = offline_model(settings)
    for condition in settings.conditions:
        begin = time.perf_counter()
        texts = [transcribe_offline(model, samples, settings) for samples in audio[condition]]
        offline[condition] = (texts, time.perf_counter() - begin)
        print(f"offline {condition}: {offline[condition][1]:.0f} s", flush=True)
    del model

    streamed = stream_live(settings, audio) if settings.live else stream_simulated(settings, audio)

    results = []
    for condition in settings.conditions:
        offline_texts, offline_wall = offline[condition]
        all_finals, streaming_wall = streamed[condition]
        streaming_texts = [" ".join(f.text for f in finals if f.text) for finals in all_finals]
        references = [item.reference for item in items]
        per_clip = [
            ClipResult(
                clip=item.name,
                reference=reference,
                offline=off,
                streaming=live,
                finals=finals,
                offline_errors=errors(reference, off, settings.language),
                streaming_errors=errors(reference, live, settings.language),
                babble_talkers=talkers_of(condition, item, every),
            )
            for item, reference, off, live, finals in zip(
                items, references, offline_texts, streaming_texts, all_finals, strict=True
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
    "quiet-phone": "held out: quiet phone (400-3000 Hz, -18 dB, 8 kHz μ-law)",
    "cafe": "held out: cafe (2-3 talkers at 10 dB, pink noise at 15 dB)",
}


def _percent(value: float | None) -> str:
    return "-" if value is None else f"{100 * value:.2f}%"


def markdown(report: NoisyReport, show: int) -> str:
    options = report.options
    snr = float(options["snr_db"])
    lines = [
        f"# WER by listening condition: {options['model']}, {options['clips']} clips"
        + (
            f" in {options['pieces']} conversations"
            if options.get("conversations", "0") != "0"
            else ""
        )
        + (
            f", streamed live, {options['live']} at once" if options.get("live", "0") != "0" else ""
        ),
        "",
        f"{report.created}; {report.machine.get('cpu', '')}; {options['compute_type']}, "
        f"{options['cpu_threads']} threads, beam {options['beam_size']}"
        + (
            f"; each piece led by {options['offset_ms']} ms more silence"
            if float(options.get("offset_ms", "0"))
            else ""
        ),
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
        if value is not None and name not in ("out", "show", "server_cmd")
    }
    options["conditions"] = ",".join(settings.conditions)
    scored = conditions[0].clips  # clips, or conversations of clips named "a+b+…"
    options["clips"] = str(sum(len(piece.clip.split("+")) for piece in scored))
    options["pieces"] = str(len(scored))
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
