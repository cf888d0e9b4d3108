"""What the model did in a live run: every model call of a running server, one JSON line each,
and the table they make.

`python -m bench.model_trace serve [chorus serve flags]` runs `chorus serve` in this process
with the Whisper adapter's `transcribe_batch` wrapped (`record_calls`): each call, in whichever
worker thread makes it, appends a `Call` to `$CHORUS_MODEL_TRACE` (by default
`bench/results/model-trace-<stamp>.jsonl`): when it ended, its wall milliseconds, and for each
request whether it was a draft, its audio, the tokens it wrote and whether it looped. Drive it
with `python -m bench.load --url …` and stop it with Ctrl-C.

`python -m bench.model_trace report FILE…` reads traces back (`summarize`): per file, drafts
and finals apart, the calls, the requests, the model milliseconds and tokens per request, and
how many requests looped and how many of the tokens those wrote. Times are the machine's.
"""

from __future__ import annotations

import os
import sys
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import IO

import msgspec

from actors.model.judging import looped
from actors.model.port import SAMPLE_RATE, Request, Result
from bench.report import DEFAULT_RESULTS, now_stamp

TRACE_ENV = "CHORUS_MODEL_TRACE"


class Call(msgspec.Struct):
    at: float  # wall clock (s) when the call returned
    ms: float
    drafts: list[bool]
    audio_s: list[float]
    tokens: list[int]  # written, forced words not counted
    looped: list[bool]


class KindSummary(msgspec.Struct):
    kind: str  # "drafts" or "finals"
    calls: int
    requests: int
    ms_each: float  # model wall milliseconds per request
    tokens_each: float
    looped: int  # requests that looped
    looped_tokens_share: float  # of the tokens written, the share of looped requests


Batch = Callable[[object, Sequence[Request]], list[Result]]


def record_calls(adapter_class: type, out: IO[str], clock: Callable[[], float]) -> None:
    """Wrap `adapter_class.transcribe_batch` so that each call appends a `Call` to `out`."""
    original: Batch = adapter_class.transcribe_batch  # type: ignore[attr-defined]
    lock = threading.Lock()
    encoder = msgspec.json.Encoder()

    def transcribe_batch(self: object, requests: Sequence[Request]) -> list[Result]:
        begin = clock()
        results = original(self, requests)
        ended = clock()
        call = Call(
            at=round(ended, 3),
            ms=round(1000 * (ended - begin), 2),
            drafts=[request.options.partial for request in requests],
            audio_s=[round(len(request.audio) / SAMPLE_RATE, 3) for request in requests],
            tokens=[result.tokens.output for result in results],
            looped=[looped(result) for result in results],
        )
        with lock:
            out.write(encoder.encode(call).decode() + "\n")
            out.flush()
        return results

    adapter_class.transcribe_batch = transcribe_batch  # type: ignore[attr-defined]


def read_calls(path: Path) -> list[Call]:
    decoder = msgspec.json.Decoder(Call)
    return [decoder.decode(line) for line in path.read_text().splitlines() if line.strip()]


def summarize(calls: Sequence[Call]) -> list[KindSummary]:
    """Drafts and finals apart (a call is the drafts' when all its requests are drafts)."""
    summaries = []
    for kind, drafts in (("drafts", True), ("finals", False)):
        chosen = [call for call in calls if all(call.drafts) is drafts]
        requests = sum(len(call.drafts) for call in chosen)
        tokens = sum(sum(call.tokens) for call in chosen)
        looped_tokens = sum(
            count
            for call in chosen
            for count, loop in zip(call.tokens, call.looped, strict=True)
            if loop
        )
        summaries.append(
            KindSummary(
                kind=kind,
                calls=len(chosen),
                requests=requests,
                ms_each=round(sum(call.ms for call in chosen) / max(1, requests), 1),
                tokens_each=round(tokens / max(1, requests), 1),
                looped=sum(sum(call.looped) for call in chosen),
                looped_tokens_share=round(looped_tokens / max(1, tokens), 3),
            )
        )
    return summaries


def markdown(named: Sequence[tuple[str, Sequence[KindSummary]]]) -> str:
    lines = [
        "| trace | kind | calls | requests | ms a request | tokens a request | looped | "
        "looped requests' share of tokens |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for name, summaries in named:
        lines.extend(
            f"| {name} | {s.kind} | {s.calls} | {s.requests} | {s.ms_each:.1f} | "
            f"{s.tokens_each:.1f} | {s.looped} | {100 * s.looped_tokens_share:.0f}% |"
            for s in summaries
        )
    return "\n".join(lines)


def serve(argv: Sequence[str]) -> int:
    from actors.model.whisper import WhisperAdapter
    from service.cli import main as chorus

    _, stamp = now_stamp()
    path = Path(os.environ.get(TRACE_ENV) or DEFAULT_RESULTS / f"model-trace-{stamp}.jsonl")
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a") as out:
        record_calls(WhisperAdapter, out, time.time)
        print(f"tracing model calls to {path}", file=sys.stderr)
        return chorus(["serve", *argv])


def main(argv: Sequence[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    if args[:1] == ["serve"]:
        return serve(args[1:])
    if args[:1] == ["report"] and len(args) > 1:
        print(markdown([(Path(name).name, summarize(read_calls(Path(name)))) for name in args[1:]]))
        return 0
    print(__doc__, file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main())
