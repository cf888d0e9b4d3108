"""What the capacity figures are divided by, measured in the same invocation.

`offline_throughput` runs faster-whisper's own `WhisperModel.transcribe` (beam 5, the given
threads, int8 on the CPU) over clips of the speech set, one after another, and returns audio
seconds per wall second: what the model does on this machine with nobody waiting. It does so in
`passes` (3) passes over the same clips and keeps the median pass, so one slow pass (base: 8.42
against 9.05 and 8.96) does not move E. The machine itself drifts more between invocations
(tiny.en: 14.0 to 17.1 on one machine, one day), which is why E is only ever read against the
reference of its own invocation. Capacity
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
    audio_s: float  # of one pass
    wall_s: float  # of the median pass
    files: int
    beam_size: int
    cpu_threads: int
    passes: tuple[float, ...] = ()  # audio seconds per wall second of each pass, in order

    @property
    def audio_s_per_wall_s(self) -> float:
        return self.audio_s / self.wall_s if self.wall_s > 0 else 0.0

    @classmethod
    def of_passes(
        cls, audio_s: float, walls: Sequence[float], files: int, beam_size: int, cpu_threads: int
    ) -> OfflineThroughput:
        """The median pass of `walls` (wall seconds of each pass over `audio_s` of audio)."""
        median = sorted(walls)[(len(walls) - 1) // 2] if walls else 0.0
        rates = tuple(audio_s / wall if wall > 0 else 0.0 for wall in walls)
        return cls(audio_s, median, files, beam_size, cpu_threads, rates)


def offline_throughput(
    model_name: str,
    clips: Sequence[Clip],
    *,
    cpu_threads: int = 2,
    beam_size: int = 5,
    budget_s: float = 60.0,
    passes: int = 3,
) -> OfflineThroughput:
    """faster-whisper's `transcribe` over `clips` in order until `budget_s` of audio, `passes`
    times; the median pass (blocking)."""
    from faster_whisper import WhisperModel

    from bench.offline import model_directory

    model = WhisperModel(
        model_directory(model_name), device="cpu", compute_type="int8", cpu_threads=cpu_threads
    )

    def transcribe(samples: np.ndarray) -> None:
        segments, _ = model.transcribe(samples, language="en", beam_size=beam_size)
        list(segments)

    transcribe(clips[0].samples)  # warm-up, untimed
    chosen: list[Clip] = []
    audio = 0.0
    for clip in clips:
        chosen.append(clip)
        audio += len(clip.samples) / SAMPLE_RATE
        if audio >= budget_s:
            break
    walls = []
    for _ in range(max(1, passes)):
        begin = time.perf_counter()
        for clip in chosen:
            transcribe(clip.samples)
        walls.append(time.perf_counter() - begin)
    return OfflineThroughput.of_passes(audio, walls, len(chosen), beam_size, cpu_threads)


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
