"""The segmenter on the project's own speech clips: utterances, cuts, finalize, bounds."""

from __future__ import annotations

from collections.abc import Sequence
from itertools import pairwise

import numpy as np
from support.audio_files import DATA, load

from actors.speech.segmenter import (
    PRE_ROLL_S,
    Segment,
    Segmenter,
    SegmenterConfig,
    SpeechStart,
    UtteranceEnded,
)

RATE = 16000


def silence(seconds: float) -> np.ndarray:
    return np.zeros(int(seconds * RATE), np.float32)


def run(segmenter: Segmenter, audio: np.ndarray, chunk: int = 1600) -> list[object]:
    events: list[object] = []
    for offset in range(0, len(audio), chunk):
        events += segmenter.feed(audio[offset : offset + chunk])
    events += segmenter.close()
    return events


def finals(events: Sequence[object]) -> list[Segment]:
    return [event for event in events if isinstance(event, Segment) and event.final]


def test_pauses_cut_utterances_inside_the_audio() -> None:
    weather, library = load(DATA / "weather.wav"), load(DATA / "library.wav")
    audio = np.concatenate([silence(0.5), weather, silence(1.2), library, silence(1.0)])
    events = run(Segmenter(SegmenterConfig(endpointing_ms=500)), audio)
    cut = finals(events)
    assert len(cut) == 2
    first_end = 0.5 + len(weather) / RATE
    assert 0.0 <= cut[0].start < 0.7 and first_end - 0.3 < cut[0].end <= first_end + 0.6
    assert cut[1].start >= cut[0].end
    assert [e.utterance for e in events if isinstance(e, UtteranceEnded)] == [0, 1]
    assert sum(isinstance(e, SpeechStart) for e in events) == 2
    for segment in cut:
        assert len(segment.audio) == round((segment.end - segment.start) * RATE)


def test_an_utterance_opens_before_its_soft_onset_but_not_into_silence() -> None:
    weather = load(DATA / "weather.wav")
    audio = np.concatenate([silence(3.0), weather, silence(1.0)])
    (cut,) = finals(run(Segmenter(SegmenterConfig()), audio))
    # the pre-roll (0.5 s) before the first frame judged speech, and no further: digital
    # silence scores under the onset threshold, so the look-back stops at once
    assert 3.0 - PRE_ROLL_S - 0.15 <= cut.start <= 3.0


def test_partials_grow_while_speech_goes_on() -> None:
    audio = np.concatenate([load(DATA / "garden.wav"), silence(1.0)])
    events = run(Segmenter(SegmenterConfig(partial_interval_s=0.5)), audio)
    partials = [e for e in events if isinstance(e, Segment) and not e.final]
    assert len(partials) >= 4
    assert [p.revision for p in partials] == list(range(1, len(partials) + 1))
    assert all(b.end > a.end for a, b in pairwise(partials))
    assert events.index(partials[-1]) < events.index(finals(events)[0])
    quiet = run(Segmenter(SegmenterConfig(interim=False)), audio)
    assert not [e for e in quiet if isinstance(e, Segment) and not e.final]
    assert len(finals(quiet)) == 1


def test_long_speech_is_cut_at_max_length_without_losing_samples() -> None:
    speech = np.concatenate(
        [load(DATA / name) for name in ("weather.wav", "library.wav", "garden.wav")] * 2
    )
    config = SegmenterConfig(max_utterance_s=4.0, endpointing_ms=2000)
    cut = finals(run(Segmenter(config), speech))
    assert len(cut) >= 4
    assert all(segment.end - segment.start <= 4.0 + 0.001 for segment in cut)
    forced = [(a, b) for a, b in pairwise(cut) if b.start == a.end]
    assert forced, "a forced cut continues exactly where the previous utterance ended"


def test_a_forced_cut_falls_in_the_pause_not_at_the_limit() -> None:
    """Speech longer than `max_utterance_s` is cut at its quietest frame in the last 40%: here
    the short pause between two sentences, not the middle of a word at the limit."""
    weather, library = load(DATA / "weather.wav"), load(DATA / "library.wav")
    pause = silence(0.25)  # shorter than endpointing: no ordinary cut
    speech = np.concatenate([weather, pause, library, silence(1.0)])
    config = SegmenterConfig(max_utterance_s=len(weather) / RATE + 1.0, endpointing_ms=800)
    first, *rest = finals(run(Segmenter(config), speech))
    assert rest and rest[0].start == first.end  # forced: the next one goes on from there
    pause_start, pause_end = len(weather) / RATE, (len(weather) + len(pause)) / RATE
    assert pause_start - 0.1 <= first.end <= pause_end + 0.1, (first.end, pause_start)
    assert first.end < config.max_utterance_s - 0.3  # well before the limit


def test_finalize_closes_the_open_utterance_and_the_stream_goes_on() -> None:
    garden = load(DATA / "garden.wav")
    segmenter = Segmenter(SegmenterConfig())
    half = len(garden) // 2
    events = list(segmenter.feed(garden[:half]))
    open_speech = segmenter.speech_samples  # what admission counts: speech heard so far
    assert not finals(events) and 0.5 * half < open_speech <= half
    flushed = list(segmenter.finalize())
    assert segmenter.speech_samples == open_speech  # cut: the same audio, now closed
    assert len(finals(flushed)) == 1 and finals(flushed)[0].from_finalize
    assert finals(flushed)[0].end == round(half / RATE, 3)
    later = run(segmenter, np.concatenate([garden[half:], silence(1.0)]))
    assert finals(later) and finals(later)[0].start >= finals(flushed)[0].end
    assert not list(Segmenter(SegmenterConfig()).finalize())  # nothing open: nothing to flush
    del events


def test_silence_and_low_noise_open_no_utterance() -> None:
    rng = np.random.default_rng(7)
    noise = (rng.standard_normal(60 * RATE) * 0.003).astype(np.float32)
    assert run(Segmenter(SegmenterConfig()), silence(60.0)) == []
    assert run(Segmenter(SegmenterConfig()), noise) == []


def test_ring_buffer_memory_is_fixed() -> None:
    """The bound in the module docstring: (max_utterance + 2.756 s) of float32 at 16 kHz."""
    segmenter = Segmenter(SegmenterConfig(max_utterance_s=15.0))
    assert segmenter.capacity == int((15.0 + 1.0 + 0.5 + 0.256 + 1.0) * RATE)
    assert segmenter._ring.nbytes <= 1_200_000
    speech = np.concatenate([load(DATA / "weather.wav"), silence(0.3)] * 20)
    run(segmenter, speech, chunk=RATE * 5)  # large frames too
    assert segmenter._ring.nbytes <= 1_200_000
