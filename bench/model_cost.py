"""`python -m bench.model_cost`: what the model's time goes to, on this machine (issue 20).

Capacity is bounded by model time, and a plan to spend less of it (shorter windows, fewer
decoding steps, wider batches, reusing the drafts' words) is only as good as what each piece
costs. This times CTranslate2's two calls the way a server worker makes them (one worker, by
default on one thread: on 2 cores `chorus serve` runs 2 workers of 1 thread), on clips of the
speech set about `--clip-s` long, distinct in each batch:

- **encoder**: one `encode` of a batch of windows, for each window length and batch size;
- **decoding**: one `generate` after it (10 s windows), greedy and beam 5, for each batch size,
  with the milliseconds per decoding step (per generated token of each sequence);
- **forced words**: the same greedy decode with the first k tokens of its own answer forced after
  `<|notimestamps|>` (how committed words and a lead-in reach the decoder), and with k tokens of
  earlier text before `<|startoftranscript|>` (how a session's context does);
- **drafts**: b tail drafts as the server asks for them (1.5-3.5 s of different clips, a
  session's context, word timings) through the server's adapter, `WhisperAdapter`: one call
  each, one call per draft window (how the adapter grouped them until drafts shared a window),
  and one call for all (how it does now: padded to the longest window).

Every figure is the median of `--repeats` calls after one untimed call. Writes
`bench/results/model-cost-<stamp>.md` and `.json`.
"""

from __future__ import annotations

import argparse
import functools
import statistics
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import attrs
import msgspec
import numpy as np

from actors.model.port import DecodeOptions, Request
from bench.audio import SAMPLE_RATE, Clip, load_set, speech_dir
from bench.report import DEFAULT_RESULTS, cpu_model, now_stamp, write_pair

if TYPE_CHECKING:
    from actors.model.whisper import WhisperAdapter

DECODE_WINDOW_S = 10  # the floor of a final's window (actors/model/windows.py)
FRAMES_PER_SECOND = 100


@attrs.frozen
class CostSettings:
    model: str
    clip_set: Path | None
    clip_s: float
    windows: tuple[int, ...]
    batches: tuple[int, ...]
    forced: tuple[int, ...]
    cpu_threads: int
    compute_type: str
    repeats: int
    out: Path


class EncoderCost(msgspec.Struct):
    window_s: int
    batch: int
    ms: float  # one call

    @property
    def ms_each(self) -> float:
        return self.ms / self.batch


class DecodeCost(msgspec.Struct):
    batch: int
    beam_size: int
    ms: float  # one call
    tokens: int  # generated, all sequences


class ForcedCost(msgspec.Struct):
    where: str  # "prefix": after <|notimestamps|>; "context": before <|startoftranscript|>
    tokens: int
    ms: float


class DraftsCost(msgspec.Struct):
    batch: int
    windows: int  # distinct draft windows among them
    alone_ms: float  # one call per draft, all of them
    apart_ms: float  # one call per window
    shared_ms: float  # one call


class ModelCost(msgspec.Struct):
    model: str
    compute_type: str
    cpu_threads: int
    cpu: str
    clip_s: float
    encoder: list[EncoderCost]
    decoding: list[DecodeCost]
    forced: list[ForcedCost]
    drafts: list[DraftsCost]


def _numbers(kind: Callable[[str], Any]) -> Callable[[str], tuple[Any, ...]]:
    return lambda text: tuple(kind(x) for x in text.split(","))


def parse_arguments(argv: Sequence[str] | None = None) -> CostSettings:
    parser = argparse.ArgumentParser(prog="python -m bench.model_cost", description=__doc__)
    parser.add_argument("--model", default="tiny.en")
    parser.add_argument("--set", dest="clip_set", type=Path, help="TSV of files and references")
    parser.add_argument("--clip-s", type=float, default=5.0, help="clips about this long")
    parser.add_argument("--windows", type=_numbers(int), default=(4, 10, 20, 30))
    parser.add_argument("--batches", type=_numbers(int), default=(1, 2, 4, 8))
    parser.add_argument("--forced", type=_numbers(int), default=(4, 8, 15))
    parser.add_argument("--cpu-threads", type=int, default=1)
    parser.add_argument("--compute-type", default="int8")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--out", type=Path, default=DEFAULT_RESULTS)
    return CostSettings(**vars(parser.parse_args(argv)))


class _Timer:
    """Median wall milliseconds of `repeats` calls, after one untimed call."""

    def __init__(self, repeats: int) -> None:
        self.repeats = max(1, repeats)

    def __call__(self, call: Callable[[], Any]) -> tuple[float, Any]:
        result = call()
        times = []
        for _ in range(self.repeats):
            begin = time.perf_counter()
            result = call()
            times.append(1000 * (time.perf_counter() - begin))
        return round(statistics.median(times), 1), result


class Probe:
    """One faster-whisper model, loaded as a server worker loads it, and what it is timed on."""

    def __init__(self, settings: CostSettings, clips: Sequence[Clip]) -> None:
        import ctranslate2
        from faster_whisper import WhisperModel
        from faster_whisper.tokenizer import Tokenizer

        from bench.offline import model_directory

        self._storage = ctranslate2.StorageView.from_array
        self.whisper = WhisperModel(
            model_directory(settings.model),
            device="cpu",
            compute_type=settings.compute_type,
            cpu_threads=settings.cpu_threads,
        )
        multilingual = self.whisper.model.is_multilingual
        self.tokenizer = Tokenizer(
            self.whisper.hf_tokenizer, multilingual, task="transcribe", language="en"
        )
        self.clips = clips
        self.time = _Timer(settings.repeats)

    def encoded(self, window_s: int, batch: int) -> Any:
        frames = window_s * FRAMES_PER_SECOND
        features = []
        for clip in (list(self.clips) * batch)[:batch]:
            padded = np.zeros(window_s * SAMPLE_RATE, dtype=np.float32)
            usable = clip.samples[: len(padded)]
            padded[: len(usable)] = usable
            features.append(self.whisper.feature_extractor(padded, padding=160)[:, :frames])
        return self.whisper.model.encode(
            self._storage(np.ascontiguousarray(np.stack(features))), to_cpu=False
        )

    @property
    def start(self) -> list[int]:
        return [*self.tokenizer.sot_sequence, self.tokenizer.no_timestamps]

    def generate(self, encoded: Any, prompts: list[list[int]], beam_size: int) -> Any:
        return self.whisper.model.generate(
            encoded, prompts, beam_size=beam_size, max_length=224, suppress_blank=True
        )


def measure_encoder(probe: Probe, settings: CostSettings) -> list[EncoderCost]:
    return [
        EncoderCost(window, batch, probe.time(functools.partial(probe.encoded, window, batch))[0])
        for window in settings.windows
        for batch in settings.batches
    ]


def measure_decoding(probe: Probe, settings: CostSettings) -> list[DecodeCost]:
    costs = []
    for batch in settings.batches:
        encoded = probe.encoded(DECODE_WINDOW_S, batch)
        for beam in (1, 5):
            call = functools.partial(probe.generate, encoded, [probe.start] * batch, beam)
            ms, outputs = probe.time(call)
            tokens = sum(len(output.sequences_ids[0]) for output in outputs)
            costs.append(DecodeCost(batch, beam, ms, tokens))
    return costs


def measure_forced(probe: Probe, settings: CostSettings) -> list[ForcedCost]:
    """Greedy, batch 1: the clip's own first k tokens forced, or k tokens of the next clip's
    text (what a session said before) as context."""
    encoded = probe.encoded(DECODE_WINDOW_S, 1)
    answer = probe.generate(encoded, [probe.start], 1)[0].sequences_ids[0]
    earlier = probe.tokenizer.encode(" " + " ".join(c.reference or "" for c in probe.clips[1:3]))

    def timed(prompt: list[int]) -> float:
        return probe.time(lambda: probe.generate(encoded, [prompt], 1))[0]

    costs = [ForcedCost("nothing", 0, timed(probe.start))]
    for count in (count for count in settings.forced if count > 0):
        prefix = [*probe.start, *answer[:count]]
        context = [probe.tokenizer.sot_prev, *earlier[-count:], *probe.start]
        costs.append(ForcedCost("prefix", min(count, len(answer)), timed(prefix)))
        costs.append(ForcedCost("context", min(count, len(earlier)), timed(context)))
    return costs


TAILS_S = (2.5, 3.5, 1.5, 2.0, 3.0, 1.8, 2.8, 3.2)  # the drafts' audio, cycled
TAIL_FROM_S = 1.0  # where in its clip a tail starts


def measure_drafts(settings: CostSettings, clips: Sequence[Clip]) -> list[DraftsCost]:
    from actors.model.weights import resolve_model
    from actors.model.whisper import WhisperAdapter

    adapter = WhisperAdapter(
        resolve_model(settings.model),
        device="cpu",
        compute_type=settings.compute_type,
        cpu_threads=settings.cpu_threads,
        workers=1,
    )
    timer = _Timer(settings.repeats)
    return [_time_drafts(adapter, _tail_drafts(batch, clips), timer) for batch in settings.batches]


def _tail_drafts(batch: int, clips: Sequence[Clip]) -> list[Request]:
    requests = []
    for index in range(batch):
        clip, before = clips[index % len(clips)], clips[(index + 1) % len(clips)]
        start = int(TAIL_FROM_S * SAMPLE_RATE)
        end = start + int(TAILS_S[index % len(TAILS_S)] * SAMPLE_RATE)
        options = DecodeOptions(language="en", context=before.reference, words=True, partial=True)
        requests.append(Request(np.ascontiguousarray(clip.samples[start:end]), options))
    return requests


def _time_drafts(adapter: WhisperAdapter, requests: list[Request], timer: _Timer) -> DraftsCost:
    by_window: dict[int, list[Request]] = {}
    for request in requests:
        by_window.setdefault(adapter._window(request), []).append(request)
    alone, _ = timer(lambda: [adapter.transcribe_batch([r]) for r in requests])
    apart, _ = timer(lambda: [adapter.transcribe_batch(g) for g in by_window.values()])
    shared, _ = timer(lambda: adapter.transcribe_batch(requests))
    return DraftsCost(len(requests), len(by_window), alone, apart, shared)


def measure(settings: CostSettings) -> ModelCost:
    table = settings.clip_set or speech_dir() / "en_wer.tsv"
    clips = sorted(
        (clip for clip in load_set(table) if clip.reference),
        key=lambda clip: abs(clip.duration - settings.clip_s),
    )[: max(3, *settings.batches)]
    probe = Probe(settings, clips)
    return ModelCost(
        model=settings.model,
        compute_type=settings.compute_type,
        cpu_threads=settings.cpu_threads,
        cpu=cpu_model(),
        clip_s=round(statistics.mean(clip.duration for clip in clips), 2),
        encoder=measure_encoder(probe, settings),
        decoding=measure_decoding(probe, settings),
        forced=measure_forced(probe, settings),
        drafts=measure_drafts(settings, clips),
    )


_WHERE = {"nothing": "nothing", "prefix": "forced prefix", "context": "context"}


def markdown(cost: ModelCost) -> str:
    lines = [
        f"model {cost.model}, {cost.compute_type}, {cost.cpu_threads} thread(s); CPU {cost.cpu}; "
        f"clips of {cost.clip_s} s on average",
        "",
        "| encoder window | batch | ms a call | ms a window |",
        "|---|---|---|---|",
        *(f"| {e.window_s} s | {e.batch} | {e.ms:.0f} | {e.ms_each:.0f} |" for e in cost.encoder),
        "",
        f"| decoding ({DECODE_WINDOW_S} s windows) | batch | ms a call | tokens | ms a step | "
        "ms a token |",
        "|---|---|---|---|---|---|",
        *(
            f"| {'greedy' if d.beam_size == 1 else f'beam {d.beam_size}'} | {d.batch} | "
            f"{d.ms:.0f} | {d.tokens} | {d.ms * d.batch / max(1, d.tokens):.1f} | "
            f"{d.ms / max(1, d.tokens):.1f} |"
            for d in cost.decoding
        ),
        "",
        "| greedy, batch 1, with | tokens | ms a call |",
        "|---|---|---|",
        *(f"| {_WHERE[f.where]} | {f.tokens} | {f.ms:.0f} |" for f in cost.forced),
        "",
        "| tail drafts | windows | ms: one call each | one call per window | one call |",
        "|---|---|---|---|---|",
        *(
            f"| {d.batch} | {d.windows} | {d.alone_ms:.0f} | {d.apart_ms:.0f} | {d.shared_ms:.0f} |"
            for d in cost.drafts
        ),
    ]
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> None:
    settings = parse_arguments(argv)
    cost = measure(settings)
    when, stamp = now_stamp()
    text = f"# What the model's time goes to, {when}\n\n{markdown(cost)}\n"
    print(text)
    write_pair(settings.out / f"model-cost-{stamp}", text, cost)


if __name__ == "__main__":
    main()
