"""PCM decoding and resampling in front of the segmenter."""

from __future__ import annotations

import numpy as np

from actors.audio.pcm import PcmDecoder


def sine(rate: int, seconds: float, hz: float) -> np.ndarray:
    t = np.arange(int(rate * seconds)) / rate
    return (0.5 * np.sin(2 * np.pi * hz * t)).astype(np.float32)


def dominant_hz(samples: np.ndarray, rate: int = 16000) -> float:
    spectrum = np.abs(np.fft.rfft(samples))
    return float(np.argmax(spectrum) * rate / len(samples))


def test_s16_odd_bytes_are_carried_to_the_next_frame() -> None:
    pcm = (sine(16000, 0.1, 440) * 32767).astype("<i2").tobytes()
    decoder = PcmDecoder("pcm_s16le", 16000)
    first = decoder.feed(pcm[:101])
    second = decoder.feed(pcm[101:])
    assert len(first) == 50 and len(second) == 1550
    assert decoder.misaligned_frames == 1
    whole = np.concatenate([first, second])
    assert np.allclose(whole, np.frombuffer(pcm, "<i2") / 32768.0)


def test_f32_is_clipped_and_cleaned() -> None:
    data = np.array([0.5, 2.0, np.nan, -3.0], dtype="<f4").tobytes()
    assert PcmDecoder("pcm_f32le", 16000).feed(data).tolist() == [0.5, 1.0, 0.0, -1.0]


def test_other_rates_are_resampled_not_decimated() -> None:
    for rate in (8000, 22050, 44100, 48000):
        decoder = PcmDecoder("pcm_s16le", rate)
        pcm = (sine(rate, 2.0, 1000) * 32767).astype("<i2").tobytes()
        chunks = [decoder.feed(pcm[i : i + 2000]) for i in range(0, len(pcm), 2000)]
        out = np.concatenate([*chunks, decoder.flush()])
        assert abs(len(out) - 32000) <= 2, rate
        assert abs(dominant_hz(out[1000:-1000]) - 1000) < 5, rate


def test_stereo_is_mixed_down() -> None:
    left = (sine(16000, 0.1, 440) * 32767).astype("<i2")
    frames = np.stack([left, left], axis=1).reshape(-1).tobytes()
    out = PcmDecoder("pcm_s16le", 16000, channels=2).feed(frames)
    assert len(out) == 1600 and np.allclose(out, left / 32768.0)
