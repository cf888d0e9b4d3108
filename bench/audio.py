"""Speech clips for the benchmarks: decode, downmix, resample to 16 kHz, find where speech is.

Plain functions, no tasks. Files are decoded with PyAV (WAV, FLAC, MP3…; headerless `.raw` is
read as s16le 16 kHz mono), averaged to mono and resampled with soxr. A clip's speech bounds come
from a simple energy gate, so that latency figures can start from the end of the words rather
than from the end of the file's trailing silence.
"""

from __future__ import annotations

import csv
from collections.abc import Iterable
from pathlib import Path

import attrs
import av
import numpy as np
import numpy.typing as npt
import soxr

SAMPLE_RATE = 16000
GATE_FRAME_S = 0.02
GATE_DB = 35.0  # a frame is speech when it is within this many dB of the clip's loudest frame

Samples = npt.NDArray[np.float32]


@attrs.frozen
class Clip:
    """One decoded clip at 16 kHz mono, with its reference text (None when it has none)."""

    name: str
    samples: Samples = attrs.field(eq=False, repr=False)
    reference: str | None
    speech_start: float  # seconds from the clip's start
    speech_end: float

    @property
    def duration(self) -> float:
        return len(self.samples) / SAMPLE_RATE


def speech_dir(repo_root: Path | None = None) -> Path:
    """`../shared/speech` next to the repository, or `$CHORUS_SPEECH_DIR`."""
    import os

    if configured := os.environ.get("CHORUS_SPEECH_DIR"):
        return Path(configured)
    root = repo_root or Path(__file__).resolve().parents[1]
    return root.parent / "shared" / "speech"


def read_audio(path: Path) -> Samples:
    """Decode any file PyAV reads into float32 mono samples at 16 kHz."""
    if path.suffix == ".raw":
        raw = np.frombuffer(path.read_bytes(), dtype="<i2").astype(np.float32) / 32768.0
        return raw
    pieces: list[npt.NDArray[np.float32]] = []
    rate = 0
    with av.open(str(path)) as container:
        stream = container.streams.audio[0]
        # One resampler keeps every frame in one layout and sample format (planar float).
        resampler = av.AudioResampler(format="fltp", layout=None, rate=None)
        for frame in container.decode(stream):
            for converted in resampler.resample(frame):
                rate = converted.sample_rate
                pieces.append(np.asarray(converted.to_ndarray(), dtype=np.float32))
        for converted in resampler.resample(None):
            pieces.append(np.asarray(converted.to_ndarray(), dtype=np.float32))
    if not pieces:
        return np.zeros(0, dtype=np.float32)
    mono = np.concatenate(pieces, axis=1).mean(axis=0)
    if rate != SAMPLE_RATE:
        mono = soxr.resample(mono, rate, SAMPLE_RATE)
    return np.ascontiguousarray(mono, dtype=np.float32)


def speech_bounds(samples: Samples) -> tuple[float, float]:
    """First and last moment (seconds) of the frames within `GATE_DB` of the loudest frame."""
    frame = int(GATE_FRAME_S * SAMPLE_RATE)
    count = len(samples) // frame
    if count == 0:
        return 0.0, len(samples) / SAMPLE_RATE
    frames = samples[: count * frame].reshape(count, frame).astype(np.float64)
    rms = np.sqrt((frames**2).mean(axis=1))
    threshold = max(float(rms.max()) * 10 ** (-GATE_DB / 20), 1e-4)
    loud = np.flatnonzero(rms >= threshold)
    if len(loud) == 0:
        return 0.0, len(samples) / SAMPLE_RATE
    return float(loud[0] * GATE_FRAME_S), float((loud[-1] + 1) * GATE_FRAME_S)


def make_clip(name: str, samples: Samples, reference: str | None) -> Clip:
    start, end = speech_bounds(samples)
    return Clip(name=name, samples=samples, reference=reference, speech_start=start, speech_end=end)


def load_set(table: Path, *, max_clip_s: float | None = None) -> list[Clip]:
    """Clips listed in a TSV with `file` and `reference` columns (paths relative to the TSV)."""
    with table.open(newline="", encoding="utf-8") as handle:
        rows = list(csv.DictReader(handle, delimiter="\t", quoting=csv.QUOTE_NONE))
    clips = []
    for row in rows:
        seconds = row.get("seconds")
        if max_clip_s is not None and seconds and float(seconds) > max_clip_s:
            continue
        samples = read_audio(table.parent / row["file"])
        if max_clip_s is not None and len(samples) / SAMPLE_RATE > max_clip_s:
            continue
        clips.append(make_clip(row["file"], samples, row.get("reference")))
    return clips


def load_files(paths: Iterable[Path]) -> list[Clip]:
    """Clips from audio files given by path; they have no reference, so no WER."""
    return [make_clip(path.name, read_audio(path), None) for path in paths]


def to_pcm16(samples: Samples) -> bytes:
    """Little-endian signed 16-bit PCM, clipped."""
    scaled = np.clip(samples, -1.0, 1.0) * 32767.0
    return np.round(scaled).astype("<i2").tobytes()
