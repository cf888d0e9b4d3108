"""Cut a session's audio into utterances: ring buffer + streaming VAD + endpointing.

`Segmenter` is sans-IO and owned by one session's segmenter task (`service/session/segmenting.py`).
Audio goes in as 16 kHz float32; out come records: `SpeechStart`, `Segment`s (partials of the open
utterance while speech goes on, and exactly one final per utterance), and `UtteranceEnded`.
The speech probabilities come in beside the audio (live sessions: from the shared VAD actor,
`actors/speech/vad_actor.py`), or the segmenter runs its own `StreamingVad` inline (offline uses).

Memory bound: the ring buffer holds at most `max_utterance_s + MAX_ONSET_S + PRE_ROLL_S +
STEP_S + 1` seconds of float32 audio (about 1.2 MB at the 15 s default); `feed` works in steps
of at most `STEP_S`, so one large client frame cannot grow it. An utterance that reaches
`max_utterance_s` is cut at its quietest frame in the last 40% (lowest speech probability), and
the audio after the cut opens the next utterance: no sample is lost or used twice.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterator

import attrs
import numpy as np

from actors.model.port import SAMPLE_RATE, Samples
from actors.speech.band import BandMeter
from actors.speech.vad import FRAME, StreamingVad

PRE_ROLL_S = 0.5  # audio kept before the first speech frame: VAD starts late on soft onsets
ONSET = 0.05  # before the first speech frame, earlier frames this likely count as its onset
MAX_ONSET_S = 1.0  # how far back the onset may reach
POST_ROLL_S = 0.2  # audio kept after the last speech frame
STEP_S = 0.256
SPEECH_ON = 0.5
SPEECH_OFF = 0.35
# on a phone line (`BandMeter.narrowband`) Silero scores speech 0.3-0.5: lower bars, so that
# its sentences open at all (telephone WER 11.49% -> 8.89%, base; docs/accuracy.md)
NARROW_SPEECH_ON = 0.3
NARROW_SPEECH_OFF = 0.2
MIN_SPEECH_FRAMES = 3  # ~96 ms of speech before an utterance opens: clicks do not count


@attrs.frozen
class SegmenterConfig:
    endpointing_ms: int = 500
    max_utterance_s: float = 15.0
    partial_interval_s: float = 0.6
    interim: bool = True


@attrs.frozen
class SpeechStart:
    at: float


@attrs.frozen(eq=False)
class Segment:
    utterance: int
    final: bool
    audio: Samples = attrs.field(repr=lambda audio: f"<{len(audio) / SAMPLE_RATE:.2f} s>")
    start: float
    end: float
    revision: int = 0
    from_finalize: bool = False
    silence_s: float = 0.0  # a draft's: the silence at its end, since the last speech frame
    narrowband: bool = False  # the session's audio is a phone line's (`BandMeter`)


@attrs.frozen
class UtteranceEnded:
    utterance: int
    at: float


Event = SpeechStart | Segment | UtteranceEnded


class Segmenter:
    """Voice activity → utterances, for one session."""

    def __init__(self, config: SegmenterConfig, vad: StreamingVad | None = None) -> None:
        self.config = config
        self._vad = vad  # the inline VAD, made on first use: none when probabilities come in
        self.capacity = int(
            (config.max_utterance_s + MAX_ONSET_S + PRE_ROLL_S + STEP_S + 1.0) * SAMPLE_RATE
        )
        self._ring = np.zeros(self.capacity, dtype=np.float32)
        self._base = 0  # absolute sample index of _ring[0]
        self._size = 0
        self._probabilities: list[float] = []  # per VAD frame of the open utterance
        self._recent: deque[float] = deque(maxlen=int(MAX_ONSET_S * SAMPLE_RATE) // FRAME)
        self._analysed = 0  # absolute samples the VAD has judged
        self._open: int | None = None  # absolute start of the open utterance
        self._last_speech = 0  # absolute end of the last speech frame
        self._run = 0  # consecutive speech frames while closed
        self._last_cut = 0
        self._last_partial = 0
        self.utterance = 0
        self._revision = 0
        self._spoken = 0  # samples of the utterances already cut
        self._origin = 0  # where this segmenter's audio starts (a resumed session's clock)
        self.band = BandMeter()  # phone-line audio gets lower speech thresholds
        self._narrow = False  # what the meter said after the last step

    def resume_at(self, samples: int, utterance: int) -> None:
        """Start the clock at `samples` and the utterances at `utterance`, before any audio:
        a resumed session goes on where its earlier connections stopped."""
        if self.samples != self._origin:
            raise ValueError("a segmenter resumes before it has any audio")
        self._origin = self._base = self._analysed = samples
        self._last_speech = self._last_cut = self._last_partial = samples
        self.utterance = utterance

    @property
    def samples(self) -> int:
        """Audio time so far, in samples."""
        return self._base + self._size

    @property
    def speech_samples(self) -> int:
        """Audio judged speech so far: the utterances cut, and the open one up to now."""
        return self._spoken + (self.samples - self._open if self._open is not None else 0)

    def feed(self, audio: Samples, probabilities: Samples | None = None) -> Iterator[Event]:
        """Take `audio`; with `probabilities`, one speech probability for each 512-sample frame
        that `audio` completes (`VadStream.probabilities`), else the inline VAD judges it.
        A segmenter is fed one way or the other, not both."""
        if probabilities is not None:
            if self._vad is not None:
                raise ValueError("this segmenter runs its own VAD: feed it audio alone")
            frames = (self.samples + len(audio) - self._analysed) // FRAME
            if len(probabilities) != frames:
                raise ValueError(
                    f"{len(probabilities)} probabilities for the {frames} frames "
                    "this audio completes"
                )
        elif self._vad is None:
            if self.samples != self._origin:
                raise ValueError("this segmenter is fed probabilities: it has no VAD of its own")
            self._vad = StreamingVad()
        step = int(STEP_S * SAMPLE_RATE)
        judged = 0
        for offset in range(0, len(audio), step):
            piece = audio[offset : offset + step]
            if probabilities is None:
                assert self._vad is not None
                scores = self._vad.probabilities(piece)
            else:  # the frames this step completes
                count = (self.samples + len(piece) - self._analysed) // FRAME
                scores, judged = probabilities[judged : judged + count], judged + count
            yield from self._feed_step(piece, scores)

    def finalize(self) -> Iterator[Event]:
        """Close the open utterance now (client `finalize`): all audio so far belongs to it."""
        if self._open is not None:
            yield from self._cut(self.samples, from_finalize=True)

    def close(self) -> Iterator[Event]:
        """End of stream: the open utterance, if any, becomes final."""
        if self._open is not None:
            yield from self._cut(self.samples, from_finalize=False)

    # -- internals -------------------------------------------------------------------------

    def _feed_step(self, audio: Samples, probabilities: Samples) -> Iterator[Event]:
        self._append(audio)
        self.band.feed(audio)
        self._narrow = self.band.narrowband  # judged once a step, not once a frame
        for probability in probabilities:
            frame_end = self._analysed + FRAME
            self._analysed = frame_end
            yield from self._judge(float(probability), frame_end)
        if self._open is not None and self.config.interim:
            interval = int(self.config.partial_interval_s * SAMPLE_RATE)
            if self.samples - self._last_partial >= interval:
                self._last_partial = self.samples
                self._revision += 1
                yield Segment(
                    self.utterance,
                    False,
                    self._slice(self._open, self.samples),
                    _seconds(self._open),
                    _seconds(self.samples),
                    self._revision,
                    silence_s=_seconds(max(0, self._analysed - self._last_speech)),
                )

    def _judge(self, probability: float, frame_end: int) -> Iterator[Event]:
        config, narrow = self.config, self._narrow
        if self._open is None:
            bar = NARROW_SPEECH_ON if narrow else SPEECH_ON
            self._run = self._run + 1 if probability >= bar else 0
            self._recent.append(probability)
            if self._run >= MIN_SPEECH_FRAMES:
                first = frame_end - MIN_SPEECH_FRAMES * FRAME
                onset = first - self._onset_frames() * FRAME
                self._open = max(self._last_cut, self._base, onset - int(PRE_ROLL_S * SAMPLE_RATE))
                self._last_speech = frame_end
                self._last_partial = self._open
                self._probabilities = [probability] * ((frame_end - self._open) // FRAME)
                self._revision = 0
                yield SpeechStart(_seconds(first))
            return
        self._probabilities.append(probability)
        if probability >= (NARROW_SPEECH_OFF if narrow else SPEECH_OFF):
            self._last_speech = frame_end
        silence = frame_end - self._last_speech
        if silence >= config.endpointing_ms * SAMPLE_RATE // 1000:
            end = min(self._last_speech + int(POST_ROLL_S * SAMPLE_RATE), frame_end)
            yield from self._cut(end, from_finalize=False)
        elif frame_end - self._open >= config.max_utterance_s * SAMPLE_RATE:
            yield from self._cut(self._quietest(frame_end), from_finalize=False, reopen=True)

    def _onset_frames(self) -> int:
        """Frames before the first speech frame that still look like its soft start.

        Band-limited audio (telephone, 300-3400 Hz) starts Silero late: the first word's
        onset scores 0.1-0.5 and was cut off ("in being comparatively modern" read
        "comparatively modern"). Keeping those frames lowers the word error rate on telephone
        speech and leaves clean speech unchanged (measured: docs/benchmarks.md).
        """
        earlier = list(self._recent)[:-MIN_SPEECH_FRAMES]
        count = 0
        for probability in reversed(earlier):
            if probability < ONSET:
                break
            count += 1
        return count

    def _quietest(self, frame_end: int) -> int:
        """Absolute sample index at the end of the least speech-like frame in the last 40%."""
        count = len(self._probabilities)
        first = int(count * 0.6)
        window = self._probabilities[first:]
        index = first + int(np.argmin(window)) if window else count - 1
        return max(self._open or 0, frame_end - (count - 1 - index) * FRAME)

    def _cut(self, end: int, *, from_finalize: bool, reopen: bool = False) -> Iterator[Event]:
        assert self._open is not None
        start = self._open
        self._spoken += end - start
        yield Segment(
            self.utterance,
            True,
            self._slice(start, end),
            _seconds(start),
            _seconds(end),
            from_finalize=from_finalize,
            narrowband=self._narrow,
        )
        yield UtteranceEnded(self.utterance, _seconds(end))
        self.utterance += 1
        self._last_cut = end
        self._run = 0
        self._recent.clear()
        if reopen:
            kept = (self.samples - end) // FRAME
            self._probabilities = self._probabilities[len(self._probabilities) - kept :]
            self._open = end
            self._last_partial = end
            self._revision = 0
            yield SpeechStart(_seconds(end))
        else:
            self._open = None
            self._probabilities = []

    def _append(self, audio: Samples) -> None:
        if self._size + len(audio) > self.capacity:
            keep_from = self._open if self._open is not None else self.samples
            keep_from = min(keep_from, self.samples - int((MAX_ONSET_S + PRE_ROLL_S) * SAMPLE_RATE))
            keep_from = max(keep_from, self._base)
            drop = keep_from - self._base
            self._ring[: self._size - drop] = self._ring[drop : self._size]
            self._base += drop
            self._size -= drop
            if self._size + len(audio) > self.capacity:
                raise RuntimeError("segmenter ring buffer overflow: utterance longer than bound")
        self._ring[self._size : self._size + len(audio)] = audio
        self._size += len(audio)

    def _slice(self, start: int, end: int) -> Samples:
        start = max(start, self._base)
        return self._ring[start - self._base : end - self._base].copy()


def _seconds(samples: int) -> float:
    return round(samples / SAMPLE_RATE, 3)
