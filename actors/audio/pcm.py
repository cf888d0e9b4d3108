"""Raw PCM in, 16 kHz mono float32 out: the front of every session's audio path.

`PcmDecoder` is sans-IO and owned by one session's segmenter task. It reads 16-bit and float
PCM, and 8-bit G.711 μ-law / A-law (telephony). It carries an odd trailing
byte (or partial float) over to the next frame rather than dropping it, and resamples other
rates with soxr's streaming resampler, which keeps its filter state across chunks so chunk
boundaries leave no clicks and no samples are lost.
"""

from __future__ import annotations

from typing import Literal

import numpy as np
import soxr

from actors.model.port import SAMPLE_RATE, Samples
from protocol.dialects.pcm import g711_table

PcmEncoding = Literal["pcm_s16le", "pcm_f32le", "mulaw", "alaw"]
_WIDTH = {"pcm_s16le": 2, "pcm_f32le": 4, "mulaw": 1, "alaw": 1}


class PcmDecoder:
    """Decode little-endian PCM frames and resample them to 16 kHz mono."""

    def __init__(self, encoding: PcmEncoding, sample_rate: int, channels: int = 1) -> None:
        self.encoding = encoding
        self.sample_rate = sample_rate
        self.channels = channels
        self._frame_bytes = _WIDTH[encoding] * channels
        self._carry = b""
        self.misaligned_frames = 0
        self._resampler = (
            soxr.ResampleStream(sample_rate, SAMPLE_RATE, 1, dtype="float32", quality="HQ")
            if sample_rate != SAMPLE_RATE
            else None
        )

    def feed(self, data: bytes) -> Samples:
        """Return the 16 kHz samples that `data` completes; keep any partial sample for later."""
        data = self._carry + data
        usable = len(data) - len(data) % self._frame_bytes
        if usable != len(data):
            self.misaligned_frames += 1
        self._carry = data[usable:]
        samples = self._to_float(data[:usable])
        if self._resampler is None:
            return samples
        return np.asarray(self._resampler.resample_chunk(samples), dtype=np.float32)

    def flush(self) -> Samples:
        """End of stream: drain the resampler (a dangling partial sample is dropped)."""
        self._carry = b""
        if self._resampler is None:
            return np.zeros(0, np.float32)
        return np.asarray(
            self._resampler.resample_chunk(np.zeros(0, np.float32), last=True), dtype=np.float32
        )

    def _to_float(self, data: bytes) -> Samples:
        if self.encoding == "pcm_s16le":
            samples = np.frombuffer(data, dtype="<i2").astype(np.float32) / 32768.0
        elif self.encoding in ("mulaw", "alaw"):
            codes = np.frombuffer(data, dtype=np.uint8)
            samples = g711_table(self.encoding)[codes].astype(np.float32) / 32768.0
        else:
            samples = np.frombuffer(data, dtype="<f4").astype(np.float32)
            samples = np.nan_to_num(np.clip(samples, -1.0, 1.0))
        if self.channels > 1:
            samples = samples.reshape(-1, self.channels).mean(axis=1, dtype=np.float32)
        return samples
