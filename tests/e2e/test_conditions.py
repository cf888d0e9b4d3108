"""The bench's listening conditions (`bench/conditions.py`): babble mixed at its SNR, made the
same way every time from other speakers, and telephone audio that keeps nothing above 4 kHz.

No model: these check the audio that `python -m bench.noisy` scores, not the scores, and that
its streaming simulation asks for finals as the server does (with a fake model).
"""

from __future__ import annotations

import numpy as np
import pytest
from support.audio_files import DATA, SPEECH, load
from support.fakes import FakeModel

from bench.audio import SAMPLE_RATE, Clip, load_set, make_clip
from bench.conditions import (
    PEAK,
    babble,
    babble_talkers,
    babble_version,
    condition_audio,
    mix_at_snr,
    snr_db,
    speaker,
    telephone_version,
)
from bench.noisy import parse_conditions, stream_clip


def talker(name: str, seed: int, seconds: float, level: float = 0.1) -> Clip:
    """Speech-like noise: syllable-rate bursts with silence before and after."""
    rng = np.random.default_rng(seed)
    count = int(seconds * SAMPLE_RATE)
    envelope = np.abs(np.sin(np.arange(count) * 2 * np.pi * (3 + seed % 4) / SAMPLE_RATE))
    voiced = rng.standard_normal(count) * envelope
    gap = np.zeros(SAMPLE_RATE // 4)
    samples = np.concatenate([gap, voiced, gap]) * level
    return make_clip(name, samples.astype(np.float32), "words")


def synthetic_set(level: float = 0.1) -> list[Clip]:
    return [
        talker(f"voice{voice}/clip{index}.wav", 10 * voice + index, 1.5 + voice * 0.7, level)
        for voice in range(8)
        for index in range(2)
    ]


def measured_snr(mixed: np.ndarray, target: Clip, clips: list[Clip]) -> tuple[float, float]:
    """(SNR in dB, gain on the speech) of `mixed`, fitted as a * speech + b * babble by least
    squares: exact for a mixture of the two, whatever one gain was applied to it afterwards."""
    noise = babble(target, babble_talkers(target, clips)).astype(np.float64)
    speech = target.samples.astype(np.float64)
    (a, b), *_ = np.linalg.lstsq(np.stack([speech, noise], axis=1), mixed, rcond=None)
    return snr_db((a * speech).astype(np.float32), (b * noise).astype(np.float32)), float(a)


@pytest.mark.parametrize("snr", [10.0, 0.0, 20.0])
def test_the_mixer_hits_the_snr(snr: float) -> None:
    clips = synthetic_set()
    target = clips[0]
    noise = babble(target, babble_talkers(target, clips))
    mixed = mix_at_snr(target.samples, noise, snr)
    assert snr_db(target.samples, mixed - target.samples) == pytest.approx(snr, abs=0.1)


def test_babble_is_four_to_six_other_speakers_at_10_db_every_time() -> None:
    clips = synthetic_set()
    for target in clips:
        talkers = babble_talkers(target, clips)
        voices = [speaker(t.name) for t in talkers]
        assert 4 <= len(talkers) <= 6
        assert len(set(voices)) == len(voices)  # different speakers
        assert speaker(target.name) not in voices
        mixed = babble_version(target, clips, 10.0)
        assert len(mixed) == len(target.samples)
        snr, gain = measured_snr(mixed, target, clips)
        assert snr == pytest.approx(10.0, abs=0.1)
        assert gain == pytest.approx(1.0, abs=1e-4)  # quiet clips: nothing was scaled
        again = babble_version(target, list(reversed(clips)), 10.0)  # the order does not matter
        np.testing.assert_array_equal(mixed, again)
    chosen = {tuple(t.name for t in babble_talkers(c, clips)) for c in clips}
    assert len(chosen) > 1  # seeded by each clip's name, not one babble for all


def test_a_loud_mixture_is_scaled_down_whole_and_keeps_its_snr() -> None:
    clips = synthetic_set(level=0.9)
    mixed = babble_version(clips[3], clips, 10.0)
    assert float(np.max(np.abs(mixed))) <= PEAK + 1e-6
    snr, gain = measured_snr(mixed, clips[3], clips)
    assert gain < 0.9
    assert snr == pytest.approx(10.0, abs=0.1)


def test_too_few_other_speakers_is_an_error() -> None:
    clips = [c for c in synthetic_set() if speaker(c.name) in {"voice0", "voice1", "voice2"}]
    with pytest.raises(ValueError, match="needs 4 other speakers"):
        babble_talkers(clips[0], clips)


def test_telephone_keeps_nothing_above_4_khz() -> None:
    speech = load(DATA / "weather.wav")
    assert _share(speech, 4000, 8000) > 1e-3  # the clean clip has energy up there
    phone = telephone_version(speech)
    assert abs(len(phone) - len(speech)) <= 2  # back at 16 kHz, nothing lost
    assert _share(phone, 4000, 8000) < 1e-6
    assert _share(phone, 300, 3400) > 0.99
    assert _share(phone, 0, 250) < 1e-3  # μ-law's quantization noise is all that is left there


def test_the_speech_sets_babble_is_10_db_and_other_voices() -> None:
    clips = load_set(SPEECH / "en_wer.tsv")
    for clip in clips:
        voices = {speaker(t.name) for t in babble_talkers(clip, clips)}
        assert 4 <= len(voices) <= 6 and speaker(clip.name) not in voices
        heard = condition_audio("babble", clip, clips)  # as 16-bit PCM
        assert measured_snr(heard, clip, clips)[0] == pytest.approx(10.0, abs=0.1), clip.name


def _share(samples: np.ndarray, low: float, high: float) -> float:
    power = np.abs(np.fft.rfft(samples)) ** 2
    frequencies = np.fft.rfftfreq(len(samples), 1 / SAMPLE_RATE)
    return float(power[(frequencies >= low) & (frequencies < high)].sum() / power.sum())


def test_the_streaming_simulation_decodes_finals_as_the_server_does() -> None:
    gap = np.zeros(SAMPLE_RATE, np.float32)
    audio = np.concatenate([load(DATA / "weather.wav"), gap, load(DATA / "library.wav")])
    model = FakeModel(lambda request: f"final {len(model.seen)}")
    finals = stream_clip(model, audio, beam_size=5, language="en")
    assert [final.text for final in finals] == ["final 1", "final 2"]
    first, second = (request.options for request in model.seen)
    assert (first.beam_size, first.language, first.partial, first.context) == (5, "en", False, None)
    assert second.context == "final 1"  # the session's earlier finals, as the server gives them
    assert finals[0].end <= finals[1].start
    assert parse_conditions("telephone,clean") == ("clean", "telephone")
