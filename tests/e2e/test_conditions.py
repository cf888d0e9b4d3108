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
    CAFE_TALKERS,
    PEAK,
    babble,
    babble_talkers,
    babble_version,
    cafe_version,
    condition_audio,
    mix_at_snr,
    pink_noise,
    power,
    quiet_phone_version,
    snr_db,
    speaker,
    telephone_version,
)
from bench.noisy import conversation_groups, parse_arguments, parse_conditions, pieces, stream_clip


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


def test_the_held_out_phone_is_narrower_and_quieter() -> None:
    speech = load(DATA / "weather.wav")
    quiet, phone = quiet_phone_version(speech), telephone_version(speech)
    assert abs(len(quiet) - len(speech)) <= 2
    assert _share(quiet, 4000, 8000) < 1e-6  # 8 kHz μ-law: nothing above 4 kHz
    # soft slopes where the tests' line has brick walls: less just inside the old band's
    # edges, a little leaking past them
    assert _share(quiet, 3000, 3400) < _share(phone, 3000, 3400) / 2
    assert _share(quiet, 300, 400) < _share(phone, 300, 400) / 2
    assert _share(quiet, 3400, 4000) > 10 * _share(phone, 3400, 4000)
    level = 10 * np.log10(power(quiet) / power(phone))
    assert -20.5 < level < -17.0  # the caller 18 dB quieter (and a narrower band)


def test_the_held_out_cafe_is_other_voices_and_pink_noise() -> None:
    clips = load_set(SPEECH / "en_wer.tsv")
    same = 0
    for clip in clips:
        talkers = babble_talkers(clip, clips, CAFE_TALKERS, seed="cafe:")
        voices = {speaker(t.name) for t in talkers}
        assert 2 <= len(voices) <= 3 and speaker(clip.name) not in voices
        same += set(talkers) <= set(babble_talkers(clip, clips))
    assert same <= len(clips) // 2  # other seeds: mostly not the tests' babble talkers
    clip = clips[0]
    noise = cafe_version(clip, clips) - clip.samples
    snr = snr_db(clip.samples, noise.astype(np.float32))
    assert snr == pytest.approx(-10 * np.log10(10 ** (-1.0) + 10 ** (-1.5)), abs=0.5)
    pink = pink_noise(SAMPLE_RATE * 4, "a")
    assert _share(pink, 100, 200) > 3 * _share(pink, 3100, 3200)  # 1/f: more below than above


def test_conversations_lay_each_clip_once_with_the_noise_through_the_pauses() -> None:
    clips = load_set(SPEECH / "en_wer.tsv")
    assert conversation_groups(10, 4) == [[0, 1, 2], [3, 4, 5], [6, 7], [8, 9]]
    settings = parse_arguments(["--conversations", "2", "--limit", "3", "--conditions", "babble"])
    items, audio = pieces(settings, clips[:3], clips)
    assert [item.clips for item in items] == [clips[:2], clips[2:3]]
    assert items[0].reference == f"{clips[0].reference} {clips[1].reference}"
    first, second = audio["babble"]
    lead, pause = SAMPLE_RATE // 2, SAMPLE_RATE
    assert len(second) == lead + len(clips[2].samples) + pause  # each conversation has a lead
    assert len(first) == lead + len(clips[0].samples) + pause + len(clips[1].samples) + pause
    gap = first[lead + len(clips[0].samples) : lead + len(clips[0].samples) + pause]
    assert power(gap) > 1e-6  # the babble goes on through the pause
    live = parse_arguments(["--live", "4"])
    assert (live.live, live.conversations) == (4, 4)


def test_an_offset_moves_the_same_speech_later() -> None:
    clips = load_set(SPEECH / "en_wer.tsv")[:2]
    arguments = ["--conversations", "1", "--conditions", "clean,telephone"]
    _, plain = pieces(parse_arguments(arguments), clips, clips)
    _, later = pieces(parse_arguments([*arguments, "--offset-ms", "8"]), clips, clips)
    shift = 8 * SAMPLE_RATE // 1000
    assert len(later["clean"][0]) == len(plain["clean"][0]) + shift
    assert np.array_equal(later["clean"][0][shift:], plain["clean"][0])
    assert not later["clean"][0][:shift].any()
    assert len(later["telephone"][0]) == len(plain["telephone"][0]) + shift
    _, single = pieces(parse_arguments(["--offset-ms", "8", "--conditions", "clean"]), clips, clips)
    assert len(single["clean"][0]) == len(clips[0].samples) + shift
