"""Test helpers: real speech on disk, read as 16 kHz mono, and where it lives."""

from __future__ import annotations

import csv
import io
import os
import wave
from pathlib import Path

import av
import numpy as np

from actors.model.port import Samples
from bench.conditions import g711_encode as g711_encode  # telephone helpers: bench's conditions
from bench.conditions import telephone_band as telephone_band

HERE = Path(__file__).resolve().parent
DATA = HERE.parent / "data"
# Real speech with references: the repository's clips (tests/data/speech/README.md), or another
# set laid out the same way, such as the shared set's 42 English clips (`../shared/speech`).
SPEECH = Path(os.environ.get("CHORUS_SPEECH_DIR") or DATA / "speech")


def load(path: Path | str, rate: int = 16000) -> Samples:
    with av.open(str(path)) as container:
        resampler = av.AudioResampler(format="flt", layout="mono", rate=rate)
        pieces = [
            frame.to_ndarray()[0]
            for packet in container.decode(audio=0)
            for frame in resampler.resample(packet)
        ]
        pieces += [frame.to_ndarray()[0] for frame in resampler.resample(None)]
    return np.concatenate(pieces).astype(np.float32)


def pcm16(samples: Samples) -> bytes:
    return (np.clip(samples, -1, 1) * 32767).astype("<i2").tobytes()


def wav_bytes(samples: Samples, rate: int = 16000) -> bytes:
    """`samples` as a 16-bit mono WAV file."""
    buffer = io.BytesIO()
    with wave.open(buffer, "wb") as out:
        out.setnchannels(1)
        out.setsampwidth(2)
        out.setframerate(rate)
        out.writeframes(pcm16(samples))
    return buffer.getvalue()


def en_wer_rows() -> list[dict[str, str]]:
    with (SPEECH / "en_wer.tsv").open() as handle:
        return list(csv.DictReader(handle, delimiter="\t"))
