"""Byte-level audio conversions that dialects do before the session sees the audio (sans-IO).

`G711Expander` turns 8-bit μ-law or A-law (telephony, Deepgram's `mulaw` / `alaw`) into 16-bit
little-endian PCM with the standard ITU-T G.711 expansion; `Downmixer` averages interleaved
16-bit channels to mono and carries a partial sample frame over to the next chunk, so chunk
boundaries never shift the channels. Both are owned by one connection's codec.
"""

from __future__ import annotations

from typing import Literal

import numpy as np
import numpy.typing as npt


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


class G711Expander:
    def __init__(self, law: Literal["mulaw", "alaw"]) -> None:
        self._table = _TABLES[law]

    def expand(self, data: bytes) -> bytes:
        codes = np.frombuffer(data, dtype=np.uint8)
        return bytes(self._table[codes].astype("<i2").tobytes())


class Downmixer:
    """Interleaved s16le with `channels` channels → mono s16le (the mean of the channels)."""

    def __init__(self, channels: int) -> None:
        self.channels = channels
        self._frame = 2 * channels
        self._carry = b""

    def feed(self, data: bytes) -> bytes:
        if self.channels == 1:
            return data
        data = self._carry + data
        usable = len(data) - len(data) % self._frame
        self._carry = data[usable:]
        samples = np.frombuffer(data[:usable], dtype="<i2").reshape(-1, self.channels)
        mono = samples.astype(np.int32).sum(axis=1) // self.channels
        return bytes(mono.astype("<i2").tobytes())
