"""Loading the Whisper adapter puts numpy's BLAS on one thread (see `actors/model/whisper.py`):
OpenBLAS's spinning pool took the cores the model workers run on. Each case runs in a fresh
interpreter, because the setting is process-wide."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

SCRIPT = """
import json, threadpoolctl
from actors.model.weights import resolve_model
from actors.model.whisper import WhisperAdapter

def blas():
    pools = threadpoolctl.threadpool_info()
    return sorted({p["num_threads"] for p in pools if p["user_api"] == "blas"})

before = blas()
WhisperAdapter(resolve_model("tiny.en"), device="cpu", compute_type="int8", cpu_threads=2)
print(json.dumps({"before": before, "after": blas()}))
"""


def _threads(**env: str) -> dict[str, list[int]]:
    environment = {k: v for k, v in os.environ.items() if k != "OPENBLAS_NUM_THREADS"}
    done = subprocess.run(
        [sys.executable, "-c", SCRIPT],
        env={**environment, **env},
        capture_output=True,
        text=True,
        check=True,
        timeout=120,
    )
    result: dict[str, list[int]] = json.loads(done.stdout.strip().splitlines()[-1])
    return result


def test_loading_the_model_puts_blas_on_one_thread() -> None:
    threads = _threads()
    if not threads["before"]:
        pytest.skip("numpy reports no BLAS library to limit")
    assert threads["after"] == [1]


def test_an_explicit_openblas_setting_is_kept() -> None:
    threads = _threads(OPENBLAS_NUM_THREADS="2")
    if not threads["before"]:
        pytest.skip("numpy reports no BLAS library to limit")
    assert threads["before"] == threads["after"] == [2]
