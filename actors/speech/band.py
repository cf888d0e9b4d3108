"""Is a session's audio a phone line? A running measure of how much of it lies above 4 kHz.

Silero VAD is trained on wideband speech: on audio that went through a phone line (8 kHz
sampling, so nothing above 4 kHz; μ-law; 300-3400 Hz) it scores speech 0.3-0.5 where it
scores the same words 0.97 clean, so at the usual threshold (0.5) whole sentences were never
opened as utterances (measured: docs/accuracy.md). Whether the audio is narrowband is a fact
of the audio, not of what the client declared: a phone bridge may send 16 kHz PCM upsampled
from 8 kHz μ-law. So the segmenter asks this meter, which it feeds every step of audio.

`BandMeter` is plain state owned by one `Segmenter` (one session's segmenter task): for each
step loud enough to judge (above -60 dBFS) it adds the step's spectral energy above 4.2 kHz
and between 200 Hz and 4 kHz to two sums that forget with a 10 s time constant. The audio is
narrowband once at least 1 s has been judged and the high band holds less than a millionth
(-60 dB) of the low band's energy. Measured on the shared English set: 8 kHz μ-law decoded and
resampled to 16 kHz sits at -138 to -141 dB (nothing there but rounding); the clips as
recorded at -6 to -44 dB (the lowest is a 1961 broadcast, jfk.flac); under babble or pink
noise -6 to -30 dB. The threshold keeps every recorded clip wideband, so nothing changes for
them.
"""

from __future__ import annotations

import functools
from typing import Any

import numpy as np

from actors.model.port import SAMPLE_RATE, Samples

HIGH_HZ = 4200.0  # above a phone line's Nyquist frequency (4 kHz) with soxr's transition band
LOW_HZ = (200.0, 4000.0)
NARROW_RATIO = 1e-6  # high-band over low-band energy below this: narrowband (-60 dB)
LOUD = 1e-6  # mean square of a step worth judging (-60 dBFS)
MEMORY_S = 10.0  # the sums forget with this time constant
JUDGED_S = 1.0  # audio judged before the meter says anything


class BandMeter:
    """High-band over low-band energy of a stream's loud audio, and whether it is narrowband."""

    def __init__(self) -> None:
        self._high = 0.0
        self._low = 0.0
        self._judged = 0.0  # seconds of loud audio judged (decayed like the sums)

    def feed(self, audio: Samples) -> None:
        """Take one step of 16 kHz audio (the segmenter's steps are 0.256 s)."""
        count = len(audio)
        if count < 64:
            return
        if float(np.mean(np.square(audio, dtype=np.float64))) < LOUD:
            return
        seconds = count / SAMPLE_RATE
        keep = float(np.exp(-seconds / MEMORY_S))
        window, high, low = _bands(count)
        power = np.abs(np.fft.rfft(audio * window)) ** 2
        self._high = self._high * keep + float(power[high].sum())
        self._low = self._low * keep + float(power[low].sum())
        self._judged = self._judged * keep + seconds

    @property
    def ratio(self) -> float | None:
        """High-band over low-band energy, or None before enough loud audio was judged."""
        if self._judged < JUDGED_S * np.exp(-JUDGED_S / MEMORY_S) or self._low <= 0:
            return None
        return self._high / self._low

    @property
    def narrowband(self) -> bool:
        ratio = self.ratio
        return ratio is not None and ratio < NARROW_RATIO


@functools.lru_cache(maxsize=8)
def _bands(count: int) -> tuple[np.ndarray[Any, Any], np.ndarray[Any, Any], np.ndarray[Any, Any]]:
    """For a step of `count` samples: its Hann window, and the spectrum's high and low bands."""
    frequencies = np.fft.rfftfreq(count, 1 / SAMPLE_RATE)
    low, top = LOW_HZ
    return (
        np.hanning(count).astype(np.float32),
        frequencies >= HIGH_HZ,
        (frequencies >= low) & (frequencies < top),
    )
