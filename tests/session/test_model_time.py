"""Where the model's time goes, as `/health` and `/metrics` tell an operator: a server whose
model takes a known time per second of audio is given finals, first drafts, revisions and an
upload's work through its real transcriber, and each kind's model seconds come out apart."""

from __future__ import annotations

from pathlib import Path

import httpx
import numpy as np
import pytest
from conftest import serve_app
from support.fakes import SlowModel

from actors.model.port import Priority, Request
from service.app import create_app
from service.config import Settings
from service.runtime import runtime


async def test_model_time_is_told_by_what_it_went_to(tmp_path: Path) -> None:
    app = create_app(Settings(model="slow", data_dir=tmp_path), model=SlowModel(0.05))
    second = np.zeros(16000, np.float32)
    work: list[tuple[Priority, float]] = [
        ("final", 4.0),  # 0.2 s of model time
        ("first_partial", 1.0),  # 0.05 s
        ("partial", 2.0),  # 0.1 s: a revision
        ("background", 3.0),  # 0.15 s: an upload's piece
    ]
    async with serve_app(app) as address:
        transcriber = runtime(app).transcriber
        for priority, seconds in work:
            audio = np.tile(second, int(seconds))
            await transcriber.transcribe(Request(audio), priority=priority)
        async with httpx.AsyncClient() as http:
            health = (await http.get(f"http://{address}/health")).json()["transcriber"]
            metrics = (await http.get(f"http://{address}/metrics")).text
    spent = health["model_s"]
    assert spent["final"] == pytest.approx(0.2, abs=0.05)
    assert spent["first_draft"] == pytest.approx(0.05, abs=0.05)
    assert spent["revision"] == pytest.approx(0.1, abs=0.05)
    assert spent["other"] == pytest.approx(0.15, abs=0.05)
    assert sum(spent.values()) == pytest.approx(health["busy_s"], abs=0.01)
    assert spent["final"] > spent["revision"] > spent["first_draft"]
    samples = (line.split(" ") for line in metrics.splitlines() if not line.startswith("#"))
    lines = {name: float(value) for name, value, *_ in samples}
    for kind, seconds in spent.items():
        key = f'chorus_transcriber_model_seconds_total{{kind="{kind}"}}'
        assert lines[key] == pytest.approx(seconds, abs=0.01)
