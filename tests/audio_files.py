"""Test helpers: real speech on disk, read as 16 kHz mono, and where the shared set lives."""

from __future__ import annotations

import csv
import os
from pathlib import Path
from typing import Literal

import av
import numpy as np
import pytest
import soxr

from actors.model.port import Samples
from protocol.dialects.pcm import g711_table

HERE = Path(__file__).resolve().parent
DATA = HERE / "data"
SPEECH = Path(os.environ.get("CHORUS_SPEECH_DIR") or HERE.parent.parent / "shared" / "speech")


def need_speech() -> Path:
    """The shared speech set, or skip: it lives beside the checkout, not in it."""
    if not (SPEECH / "en_wer.tsv").is_file():
        pytest.skip(f"shared speech set not found at {SPEECH} (set CHORUS_SPEECH_DIR)")
    return SPEECH


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


def en_wer_rows() -> list[dict[str, str]]:
    with (need_speech() / "en_wer.tsv").open() as handle:
        return list(csv.DictReader(handle, delimiter="\t"))


def telephone_band(samples: Samples, rate: int = 16000) -> Samples:
    """What a phone line leaves of `samples`: 300-3400 Hz, resampled to 8 kHz."""
    spectrum = np.fft.rfft(samples)
    frequencies = np.fft.rfftfreq(len(samples), 1 / rate)
    spectrum[(frequencies < 300) | (frequencies > 3400)] = 0
    band = np.fft.irfft(spectrum, len(samples)).astype(np.float32)
    return np.asarray(soxr.resample(band, rate, 8000), dtype=np.float32)


def g711_encode(samples: Samples, law: Literal["mulaw", "alaw"]) -> bytes:
    """Code each sample as the G.711 byte whose expansion lies nearest (exact, if slow)."""
    table = g711_table(law).astype(np.int32)
    order = np.argsort(table, kind="stable")
    levels = table[order]
    values = np.clip(np.round(samples * 32768), -32768, 32767).astype(np.int32)
    above = np.clip(np.searchsorted(levels, values), 1, len(levels) - 1)
    nearer_below = values - levels[above - 1] <= levels[above] - values
    return bytes(order[np.where(nearer_below, above - 1, above)].astype(np.uint8).tobytes())
