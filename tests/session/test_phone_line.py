"""Phone-line audio in the segmenter: the band meter tells it apart from wideband audio, and
the segmenter then opens utterances at the lower speech bars Silero needs on it.

No model: the probabilities are given (as the shared VAD actor gives them), so what is checked
is the rule, on noise whose band is known."""

from __future__ import annotations

import numpy as np
import soxr

from actors.speech.band import JUDGED_S, BandMeter
from actors.speech.segmenter import (
    NARROW_SPEECH_ON,
    SPEECH_ON,
    Segment,
    Segmenter,
    SegmenterConfig,
)
from actors.speech.vad import FRAME

RATE = 16000
STEP = 4096


def noise(seconds: float, level: float = 0.1, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return (rng.standard_normal(int(seconds * RATE)) * level).astype(np.float32)


def phone_line(audio: np.ndarray) -> np.ndarray:
    """`audio` through 8 kHz sampling and back, as a phone bridge's upsampled PCM is."""
    narrow = soxr.resample(audio, RATE, 8000)
    return np.asarray(soxr.resample(narrow, 8000, RATE), dtype=np.float32)[: len(audio)]


def metered(audio: np.ndarray) -> BandMeter:
    meter = BandMeter()
    for offset in range(0, len(audio), STEP):
        meter.feed(audio[offset : offset + STEP])
    return meter


def test_wideband_audio_is_not_a_phone_line() -> None:
    meter = metered(noise(3.0))
    assert meter.ratio is not None and meter.ratio > 0.5  # white noise: as much above 4 kHz
    assert not meter.narrowband


def test_audio_resampled_from_8_khz_is_a_phone_line() -> None:
    meter = metered(phone_line(noise(3.0)))
    assert meter.ratio is not None and meter.ratio < 1e-6
    assert meter.narrowband


def test_the_meter_says_nothing_before_a_second_of_sound() -> None:
    assert metered(np.zeros(5 * RATE, np.float32)).ratio is None  # silence is not judged
    assert metered(phone_line(noise(JUDGED_S / 2))).ratio is None
    assert not metered(phone_line(noise(JUDGED_S / 2))).narrowband


def test_a_soft_wideband_tail_after_a_phone_line_is_wideband_again() -> None:
    """The sums forget: a stream that turns wideband (a call handed to a desk microphone)
    is judged by what it is now."""
    meter = metered(np.concatenate([phone_line(noise(3.0)), noise(20.0, level=0.01)]))
    assert not meter.narrowband


def opened(audio: np.ndarray, probability: float) -> list[Segment]:
    """The finals of `audio` fed with the same speech probability for every frame, after a
    second of silence at probability 0."""
    segmenter = Segmenter(SegmenterConfig())
    lead = np.zeros(RATE, np.float32)
    stream = np.concatenate([lead, audio, np.zeros(RATE, np.float32)])
    events: list[object] = []
    judged = 0
    for offset in range(0, len(stream), 1600):
        piece = stream[offset : offset + 1600]
        frames = (offset + len(piece)) // FRAME - judged
        first = judged
        judged += frames
        scores = np.array(
            [
                probability if len(lead) <= index * FRAME < len(lead) + len(audio) else 0.0
                for index in range(first, first + frames)
            ],
            dtype=np.float32,
        )
        events += segmenter.feed(piece, scores)
    events += segmenter.close()
    return [event for event in events if isinstance(event, Segment) and event.final]


def test_a_phone_line_opens_utterances_at_the_lower_bar() -> None:
    between = (NARROW_SPEECH_ON + SPEECH_ON) / 2  # what Silero scores speech over a phone line
    wide, narrow = noise(4.0), phone_line(noise(4.0))
    assert opened(wide, between) == []  # wideband: not speech at this score
    (final,) = opened(narrow, between)
    assert final.narrowband
    assert final.end - final.start > 2.5  # opened within the meter's first second or so
    (loud,) = opened(wide, SPEECH_ON + 0.1)
    assert not loud.narrowband
