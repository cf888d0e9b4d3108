"""What the capacity figures are divided by, measured in the same invocation.

`offline_throughput` runs faster-whisper's own `WhisperModel.transcribe` (beam 5, the given
threads, int8 on the CPU) over clips of the speech set, one after another, and returns audio
seconds per wall second: what the model does on this machine with nobody waiting. Capacity
efficiency E = sessions held × the conversations' speech fraction ÷ that throughput (DESIGN §8),
so a figure from one machine can be set beside a figure from another.

`baseline_server_command` builds an earlier commit of Chorus in a temporary git worktree (its
own `uv sync --locked` environment) and returns the command that serves it, so that a change's
gain is a ratio measured side by side in one run (`--baseline-ref 54ff505`).
"""

from __future__ import annotations

import subprocess
import tempfile
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

import attrs
import numpy as np

from bench.audio import SAMPLE_RATE, Clip


@attrs.frozen
class OfflineThroughput:
    audio_s: float
    wall_s: float
    files: int
    beam_size: int
    cpu_threads: int

    @property
    def audio_s_per_wall_s(self) -> float:
        return self.audio_s / self.wall_s if self.wall_s > 0 else 0.0


def offline_throughput(
    model_name: str,
    clips: Sequence[Clip],
    *,
    cpu_threads: int = 2,
    beam_size: int = 5,
    budget_s: float = 60.0,
) -> OfflineThroughput:
    """faster-whisper's `transcribe` over `clips` in order until `budget_s` of audio (blocking)."""
    from faster_whisper import WhisperModel

    from bench.offline import model_directory

    model = WhisperModel(
        model_directory(model_name), device="cpu", compute_type="int8", cpu_threads=cpu_threads
    )

    def transcribe(samples: np.ndarray) -> None:
        segments, _ = model.transcribe(samples, language="en", beam_size=beam_size)
        list(segments)

    transcribe(clips[0].samples)  # warm-up, untimed
    audio = wall = 0.0
    files = 0
    for clip in clips:
        begin = time.perf_counter()
        transcribe(clip.samples)
        wall += time.perf_counter() - begin
        audio += len(clip.samples) / SAMPLE_RATE
        files += 1
        if audio >= budget_s:
            break
    return OfflineThroughput(audio, wall, files, beam_size, cpu_threads)


@contextmanager
def baseline_worktree(ref: str, repo: Path | None = None) -> Iterator[Path]:
    """A detached worktree of `ref` with its own environment; removed on exit."""
    repo = repo or Path(__file__).resolve().parents[1]
    with tempfile.TemporaryDirectory(prefix="chorus-baseline-") as parent:
        tree = Path(parent) / "tree"
        subprocess.run(
            ["git", "-C", str(repo), "worktree", "add", "--detach", str(tree), ref],
            check=True,
            capture_output=True,
        )
        try:
            subprocess.run(
                ["uv", "sync", "--locked", "--quiet"], cwd=tree, check=True, capture_output=True
            )
            yield tree
        finally:
            subprocess.run(
                ["git", "-C", str(repo), "worktree", "remove", "--force", str(tree)],
                check=False,
                capture_output=True,
            )


def baseline_server_command(tree: Path) -> list[str]:
    return ["uv", "run", "--project", str(tree), "chorus", "serve"]
