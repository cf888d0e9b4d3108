"""Raw PCM in, 16 kHz mono float32 out: the front of every raw session's audio path.

`PcmDecoder` is an `actors.audio.decoder.AudioDecoder`, sans-IO and owned by one session's
segmenter task. It reads 16-bit and float PCM, and 8-bit G.711 μ-law / A-law (telephony) with
the standard ITU-T G.711 expansion. Interleaved channels are averaged to mono (16-bit and
G.711 in integers, as the 16-bit samples they are). It carries a partial sample frame over to
the next chunk rather than dropping it, so chunk boundaries never shift the channels, and
resamples other rates with soxr's streaming resampler, which keeps its filter state across
chunks so chunk boundaries leave no clicks and no samples are lost.
"""

from __future__ import annotations

from typing import Literal

import numpy as np
import numpy.typing as npt
import soxr

from actors.audio.decoder import DecoderStatistics
from actors.model.port import SAMPLE_RATE, Samples

PcmEncoding = Literal["pcm_s16le", "pcm_f32le", "mulaw", "alaw"]
_WIDTH = {"pcm_s16le": 2, "pcm_f32le": 4, "mulaw": 1, "alaw": 1}


def _mulaw_table() -> npt.NDArray[np.int16]:
    codes = ~np.arange(256, dtype=np.int32) & 0xFF
    exponent = (codes >> 4) & 0x07
    mantissa = codes & 0x0F
    magnitude = (((mantissa << 3) + 0x84) << exponent) - 0x84
    return np.where(codes & 0x80, -magnitude, magnitude).astype(np.int16)


def _alaw_table() -> npt.NDArray[np.int16]:
    codes = np.arange(256, dtype=np.int32) ^ 0x55
    exponent = (codes >> 4) & 0x07
    mantissa = codes & 0x0F
    magnitude = np.where(
        exponent == 0, (mantissa << 4) + 8, ((mantissa << 4) + 0x108) << np.maximum(exponent - 1, 0)
    )
    return np.where(codes & 0x80, magnitude, -magnitude).astype(np.int16)


_TABLES = {"mulaw": _mulaw_table(), "alaw": _alaw_table()}


def g711_table(law: Literal["mulaw", "alaw"]) -> npt.NDArray[np.int16]:
    """The 256 linear 16-bit values of one G.711 law, indexed by the coded byte."""
    return _TABLES[law]


class PcmDecoder:
    """Decode little-endian PCM frames and resample them to 16 kHz mono."""

    blocking = False  # microseconds a chunk: decoded on the event loop
    # PCM decodes to a fixed multiple of its input, which the frame size limit bounds: a chunk
    # is never refused for what it decodes to, so this is not checked
    max_chunk_s = float("inf")

    def __init__(self, encoding: PcmEncoding, sample_rate: int, channels: int = 1) -> None:
        self.encoding = encoding
        self.sample_rate = sample_rate
        self.channels = channels
        self._width = _WIDTH[encoding]
        self._frame_bytes = self._width * channels
        self._carry = b""
        self.misaligned_frames = 0
        self.bytes_in = 0
        self.samples_out = 0
        self._resampler = (
            soxr.ResampleStream(sample_rate, SAMPLE_RATE, 1, dtype="float32", quality="HQ")
            if sample_rate != SAMPLE_RATE
            else None
        )

    def statistics(self) -> DecoderStatistics:
        return DecoderStatistics(
            bytes_in=self.bytes_in,
            samples_out=self.samples_out,
            decoded_s=self.samples_out / SAMPLE_RATE,
            buffered_bytes=len(self._carry),
            misaligned_frames=self.misaligned_frames,
            codec=self.encoding,
        )

    def feed(self, data: bytes) -> Samples:
        """Return the 16 kHz samples that `data` completes; keep any partial frame for later.
        A chunk that leaves a partial *sample* counts in `misaligned_frames` (a partial frame
        of whole samples is only a chunk boundary between channels)."""
        self.bytes_in += len(data)
        data = self._carry + data
        if len(data) % self._width:
            self.misaligned_frames += 1
        usable = len(data) - len(data) % self._frame_bytes
        self._carry = data[usable:]
        samples = self._to_float(data[:usable])
        if self._resampler is not None:
            samples = np.asarray(self._resampler.resample_chunk(samples), dtype=np.float32)
        self.samples_out += len(samples)
        return samples

    def flush(self) -> Samples:
        """End of stream: drain the resampler (a dangling partial sample is dropped)."""
        self._carry = b""
        if self._resampler is None:
            return np.zeros(0, np.float32)
        samples = np.asarray(
            self._resampler.resample_chunk(np.zeros(0, np.float32), last=True), dtype=np.float32
        )
        self.samples_out += len(samples)
        return samples

    def _to_float(self, data: bytes) -> Samples:
        if self.encoding == "pcm_f32le":
            samples = np.frombuffer(data, dtype="<f4").astype(np.float32)
            samples = np.nan_to_num(np.clip(samples, -1.0, 1.0))
            if self.channels > 1:
                samples = samples.reshape(-1, self.channels).mean(axis=1, dtype=np.float32)
            return samples
        if self.encoding == "pcm_s16le":
            linear = np.frombuffer(data, dtype="<i2")
        else:
            linear = g711_table(self.encoding)[np.frombuffer(data, dtype=np.uint8)]
        if self.channels > 1:
            mixed = linear.reshape(-1, self.channels).astype(np.int32).sum(axis=1)
            linear = mixed // self.channels
        return np.asarray(linear, dtype=np.float32) / np.float32(32768.0)
