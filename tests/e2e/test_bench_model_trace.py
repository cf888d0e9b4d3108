"""`python -m bench.model_trace`: a real server records each model call, and the report
reads a trace whose answer is known."""

from __future__ import annotations

from collections.abc import Sequence
from io import StringIO
from pathlib import Path

import httpx
import msgspec
import numpy as np
import pytest
from support.audio_files import DATA
from support.servers import free_port, start_server, stop

from actors.model.judging import LOOPED
from actors.model.port import DecodeOptions, Request, Result, TokenUsage
from bench.model_trace import (
    TRACE_ENV,
    Call,
    KindSummary,
    main,
    read_calls,
    record_calls,
    summarize,
)


class _Model:
    """Writes 3 tokens a request, and loops on drafts of over a second."""

    def transcribe_batch(self, requests: Sequence[Request]) -> list[Result]:
        return [
            Result(
                "words",
                "en",
                tokens=TokenUsage(output=3),
                flags=(LOOPED,) if r.options.partial and len(r.audio) > 16000 else (),
            )
            for r in requests
        ]


def test_each_call_is_one_line_with_its_requests() -> None:
    out, ticks = StringIO(), iter([10.0, 10.25, 11.0, 11.5])
    record_calls(_Model, out, lambda: next(ticks))
    model = _Model()
    short, long = np.zeros(8000, np.float32), np.zeros(32000, np.float32)
    draft = DecodeOptions(partial=True)
    model.transcribe_batch([Request(short, draft), Request(long, draft)])
    model.transcribe_batch([Request(long)])
    first, second = (msgspec.json.decode(line, type=Call) for line in out.getvalue().split())
    assert first == Call(10.25, 250.0, [True, True], [0.5, 2.0], [3, 3], [False, True])
    assert second == Call(11.5, 500.0, [False], [2.0], [3], [False])


def test_the_summary_keeps_drafts_and_finals_apart() -> None:
    calls = [
        Call(1.0, 100.0, [True, True], [2.0, 2.0], [4, 16], [False, True]),
        Call(2.0, 60.0, [True], [1.0], [5], [False]),
        Call(3.0, 300.0, [False], [5.0], [20], [False]),
    ]
    drafts, finals = summarize(calls)
    assert drafts == KindSummary("drafts", 2, 3, 53.3, 8.3, 1, 0.64)
    assert finals == KindSummary("finals", 1, 1, 300.0, 20.0, 0, 0.0)


async def test_a_traced_server_records_its_model_calls(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    trace, port = tmp_path / "calls.jsonl", free_port()
    process = await start_server(
        tmp_path / "data", port, env={TRACE_ENV: str(trace)}, module="bench.model_trace"
    )
    try:
        async with httpx.AsyncClient(timeout=60) as http:
            answer = await http.post(
                f"http://127.0.0.1:{port}/v1/audio/transcriptions",
                files={"file": ("garden.wav", (DATA / "garden.wav").read_bytes(), "audio/wav")},
                data={"model": "whisper-1"},
            )
        assert answer.status_code == 200 and answer.json()["text"]
    finally:
        await stop(process)
    calls = read_calls(trace)
    assert calls and not any(any(call.drafts) for call in calls)  # an upload: finals only
    assert sum(sum(call.tokens) for call in calls) > 5 and all(call.ms > 0 for call in calls)
    assert main(["report", str(trace)]) == 0
    assert "| calls.jsonl | finals | " in capsys.readouterr().out
