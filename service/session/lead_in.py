"""Lead-in: a final decoded after the audio and text of the final before it.

A live session's utterances are cut at pauses of half a second, often inside a sentence
("it was natural therefore | that the forms…"). Whisper decoding such a piece alone hears a
sentence start where there is none, and on a phone line, where every word is harder, that
costs words: laid end to end with one-second pauses, the shared English set over a phone line
read 9.36% streamed against 7.11% offline (base, beam 5). Given the previous utterance's
audio before it and that utterance's final text forced as the decoder's first words (the
adapter then leaves them out of the result: `DecodeOptions.lead_in`), the model hears the
piece in its sentence, as offline decoding does with its 30 s windows: measured in
docs/accuracy.md.

It costs: the window holds both utterances, so such a final takes about twice the model time.
So it is used where the gap was measured (`mode`): on phone-line audio only by default
(`Segment.narrowband`), everywhere with `always`, nowhere with `never`
(`CHORUS_FINAL_LEAD_IN`). And only when it can help at that price: the pause between the two
was short (`MAX_GAP_S`: a longer one ends a thought), the earlier utterance was not long
(`MAX_LEAD_S`), and the two fit in one Whisper window (`MAX_TOTAL_S`).

`LeadIn` is plain state owned by one session's finals worker (`service/session/transcribing.py`);
`python -m bench.noisy` uses it the same way.
"""

from __future__ import annotations

from typing import Literal

import attrs
import numpy as np

from actors.model.port import SAMPLE_RATE, DecodeOptions, Request, Samples
from actors.speech.segmenter import Segment

LeadInMode = Literal["narrowband", "always", "never"]
LEAD_IN_MODES: tuple[LeadInMode, ...] = ("narrowband", "always", "never")

MAX_GAP_S = 1.5  # a longer pause before the utterance: no lead-in
MAX_LEAD_S = 12.0  # a longer utterance before it is not heard again
GAP_FILL_S = 1.0  # the silence between the two, at most this long
MAX_TOTAL_S = 28.0  # all of it within Whisper's 30 s window, with room for its padding


@attrs.define
class _Previous:
    audio: Samples = attrs.field(repr=False)
    text: str
    end: float


@attrs.define
class LeadIn:
    """The session's previous final, and whether the next final is decoded after it."""

    mode: LeadInMode = "narrowband"
    _previous: _Previous | None = None

    def request(self, segment: Segment, options: DecodeOptions, context: str | None) -> Request:
        """The request for `segment`'s final: with a lead-in, the previous utterance's audio,
        the pause (at most `GAP_FILL_S`) and this one's, its text as `lead_in` and `context`
        (the finals before it) as context; else its own audio with `options` as they are."""
        previous = self._previous
        wanted = self.mode == "always" or (self.mode == "narrowband" and segment.narrowband)
        if previous is None or not wanted or options.committed or not segment.final:
            return Request(segment.audio, options)
        gap = segment.start - previous.end
        if gap > MAX_GAP_S or gap < 0 or len(previous.audio) > MAX_LEAD_S * SAMPLE_RATE:
            return Request(segment.audio, options)
        pause = np.zeros(round(min(gap, GAP_FILL_S) * SAMPLE_RATE), dtype=np.float32)
        total = len(previous.audio) + len(pause) + len(segment.audio)
        if total > MAX_TOTAL_S * SAMPLE_RATE:  # the window would cut this utterance's end off
            return Request(segment.audio, options)
        audio = np.concatenate([previous.audio, pause, segment.audio]).astype(np.float32)
        lead_in_s = (len(previous.audio) + len(pause)) / SAMPLE_RATE
        lead = attrs.evolve(options, lead_in=previous.text, lead_in_s=lead_in_s, context=context)
        return Request(audio, lead)

    def remember(self, segment: Segment, text: str) -> None:
        """`segment`'s final read `text`: the lead-in of the next one (none after an empty
        final, or a final the client forced with `finalize`)."""
        if text.strip() and not segment.from_finalize:
            self._previous = _Previous(segment.audio, text.strip(), segment.end)
        else:
            self._previous = None
