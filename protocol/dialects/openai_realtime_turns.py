"""The turns (conversation items) of an OpenAI Realtime transcription session. Sans-IO.

`Turns` is owned by one connection's `RealtimeCodec` (`protocol/dialects/openai_realtime.py`)
and made at the session's first audio, when its turn mode is fixed. It maps the native
session's utterances onto items and says which events each native frame makes:

* **Server VAD** (`manual=False`): one utterance is one item. `speech_started` opens it (its
  `audio_start_ms` is the utterance's start in the buffer's audio time); the native
  `speech_stopped` (the segmenter cut it, before its final is decoded: the realtime route asks
  for it) makes `speech_stopped` (at the utterance's end) and `committed`; its final makes
  `completed`. Without the native `speech_stopped`, the final makes all three, in that order.
  An utterance the model found empty (noise) has no final: its item ends, with an empty
  transcript, when a later one does. A `commit` cuts the open utterance (its final commits
  its item); one that cut no speech is an empty item. With an idle timeout, a silence that
  long after the last speech is an item of its own (`timed_out`): `timeout_triggered`,
  `committed`, and `completed` with an empty transcript.
* **Manual** (`manual=True`, `turn_detection: null`): an item is all the audio appended
  between two commits (or clears); the utterances that start inside it are its own.
  `commit` is answered with `committed` at once (the codec's ping comes back) and with
  `completed` once the native `finalized` says every final of its audio is out.

Deltas, in both modes, while the user speaks: the item's text so far (its finals, then the
committed words of its open utterance's newest partial: words two drafts agreed on, which no
later partial or final of that utterance takes back) whenever it extends, word by word, what
was sent; so the deltas never take text back. When the final does not start with what was
sent (the final decode differs from the drafts), `completed` carries the final's text, as
OpenAI's does. A cleared item sends nothing more.
"""

from __future__ import annotations

from collections.abc import Callable

import attrs

from protocol.dialects.openai_realtime_messages import (
    Committed,
    Completed,
    Delta,
    Failed,
    Language,
    Problem,
    ServerEvent,
    SpeechStartedOut,
    SpeechStoppedOut,
    TimeoutTriggered,
    Usage,
)
from protocol.native import Final, Partial


class Ids:
    """Event and item ids, unique per connection (`prefix`) and increasing."""

    def __init__(self, prefix: str) -> None:
        self.prefix = prefix
        self._events = 0
        self._items = 0

    def event(self) -> str:
        self._events += 1
        return f"event_{self.prefix}{self._events:06d}"

    def item(self) -> str:
        self._items += 1
        return f"item_{self.prefix}{self._items:04d}"


@attrs.define
class Turn:
    item_id: str
    start_s: float
    end_s: float | None = None  # manual: where its commit (or clear) cut the buffer
    finals: dict[int, Final] = attrs.Factory(dict)
    stable: str = ""  # the committed words of its open utterance's newest partial
    emitted: str = ""  # what its deltas have sent
    stopped: bool = False  # its `speech_stopped` is out
    committed: bool = False
    cleared: bool = False
    done: bool = False

    def text(self) -> str:
        said = [self.finals[u].text.strip() for u in sorted(self.finals)]
        return " ".join(part for part in [*said, self.stable] if part)


def _extends(text: str, emitted: str) -> bool:
    """Does `text` go on from `emitted` at a word boundary?"""
    if not emitted:
        return True
    return text.startswith(emitted) and text[len(emitted) : len(emitted) + 1] in ("", " ")


VAD_COMMIT = "vad commit "
# where an utterance's speech starts may read up to this much before the commit or clear that
# cut the one before it (the resampler's delay, the VAD's onset frames)
BOUNDARY_SLACK_S = 0.1


def _ms(seconds: float) -> int:
    return round(seconds * 1000)


class Turns:
    """One session's items, in order (see the module docstring)."""

    def __init__(self, ids: Ids, *, manual: bool) -> None:
        self.ids, self.manual = ids, manual
        self._turns: list[Turn] = []
        self._by_utterance: dict[int, Turn] = {}
        self._next_utterance = 0
        self._current: Turn | None = None  # manual: the item audio is appended to
        self._cleared_before = 0.0  # server VAD: speech that started before a clear is dropped
        self._unclaimed: dict[int, Final] = {}  # manual: finals since the last commit or clear
        self._completions = 0
        self._vad_commits: dict[str, tuple[int, float]] = {}  # completions then, seconds
        self._last_committed: str | None = None
        self._speaking: set[int] = set()  # server VAD: utterances started and not yet cut
        self._quiet_since = 0.0  # ... the end of the last (or the last idle timeout)
        self._idle_asked = False  # an idle timeout is on its way to the session and back

    # what the client did

    def appended(self, at_s: float) -> None:
        """Audio from `at_s` on was appended (manual: it opens an item if none is open)."""
        if self.manual and self._current is None:
            self._current = Turn(self.ids.item(), start_s=at_s)
            self._turns.append(self._current)

    def commit(self, at_s: float) -> str:
        """Manual: the open item ends at `at_s`; its id."""
        self.appended(at_s)
        turn = self._current
        assert turn is not None
        turn.end_s, self._current = at_s, None
        return turn.item_id

    def vad_commit(self, seconds: float) -> str:
        """Server VAD: a commit of `seconds` of audio; the id of its `finalize`."""
        key = f"{VAD_COMMIT}{self.ids.event()}"
        self._vad_commits[key] = (self._completions, seconds)
        return key

    def vad_committed(self, key: str) -> list[ServerEvent]:
        """Server VAD: the commit `key` has cut what was open. With no item completed since,
        there was no speech in it: an item of its own, with an empty transcript, as OpenAI
        commits one."""
        completions, seconds = self._vad_commits.pop(key, (-1, 0.0))
        if completions != self._completions:
            return []
        turn = Turn(self.ids.item(), start_s=0.0)
        self._turns.append(turn)
        return self._complete(turn, seconds, stopped_at=None)

    def clear(self, at_s: float) -> None:
        """Drop what was not committed: the open item (manual), or the speech so far."""
        if self._current is not None:
            self._current.end_s, self._current.cleared = at_s, True
            self._current = None
        if not self.manual:
            self._cleared_before = at_s
            for turn in self._turns:
                turn.cleared = True  # every item still here has not completed
            self._forget(lambda turn: turn.cleared)

    def _forget(self, gone: Callable[[Turn], bool]) -> None:
        self._turns = [turn for turn in self._turns if not gone(turn)]
        self._by_utterance = {u: t for u, t in self._by_utterance.items() if not gone(t)}

    # what the session said

    def speech_started(self, at_s: float) -> list[ServerEvent]:
        utterance, self._next_utterance = self._next_utterance, self._next_utterance + 1
        if self.manual:  # for its deltas; its final goes where its commit says (`finalized`)
            place = at_s + BOUNDARY_SLACK_S
            turn = next((t for t in self._turns if t.end_s is None or place < t.end_s), None)
            if turn is None:
                self.appended(at_s)
                turn = self._current
            if turn is not None and not turn.cleared:
                self._by_utterance[utterance] = turn
            return []
        if at_s + BOUNDARY_SLACK_S < self._cleared_before:
            return []
        self._speaking.add(utterance)
        turn = Turn(self.ids.item(), start_s=at_s)
        self._turns.append(turn)
        self._by_utterance[utterance] = turn
        return [
            SpeechStartedOut(
                event_id=self.ids.event(), audio_start_ms=_ms(at_s), item_id=turn.item_id
            )
        ]

    def speech_stopped(self, utterance: int, at_s: float) -> list[ServerEvent]:
        """Server VAD: the segmenter cut `utterance` at `at_s` (its final is on its way)."""
        if self.manual:
            return []
        self._stopped(utterance, at_s)
        turn = self._live(utterance)
        if turn is None or turn.stopped:
            return []
        turn.stopped = True
        return [
            SpeechStoppedOut(
                event_id=self.ids.event(), audio_end_ms=_ms(at_s), item_id=turn.item_id
            ),
            *self._commit(turn),
        ]

    def _stopped(self, utterance: int, at_s: float) -> None:
        if utterance in self._speaking:
            self._speaking.discard(utterance)
            self._quiet_since = max(self._quiet_since, at_s)

    def idle_since(self, now_s: float, idle_s: float | None) -> float | None:
        """Server VAD: where the silence began if, at `now_s` of audio, it has lasted `idle_s`
        with no speech open (an idle timeout is due; once until it is answered), else None."""
        if self.manual or idle_s is None or self._speaking or self._idle_asked:
            return None
        if now_s - self._quiet_since < idle_s:
            return None
        self._idle_asked = True
        return self._quiet_since

    def timed_out(self, start_s: float, end_s: float) -> list[ServerEvent]:
        """The idle timeout from `idle_since` is back from the session: unless speech has
        started since, the silence from `start_s` to `end_s` is committed as an empty item."""
        self._idle_asked = False
        if self._speaking or self._quiet_since != start_s:
            return []
        self._quiet_since = end_s
        turn = Turn(self.ids.item(), start_s=start_s)
        self._turns.append(turn)
        triggered = TimeoutTriggered(
            event_id=self.ids.event(),
            audio_start_ms=_ms(start_s),
            audio_end_ms=_ms(end_s),
            item_id=turn.item_id,
        )
        return [triggered, *self._complete(turn, end_s - start_s, stopped_at=None)]

    def partial(self, frame: Partial) -> list[ServerEvent]:
        turn = self._live(frame.utterance)
        if turn is None:
            return []
        turn.stable = frame.text[: frame.committed].strip()
        return self._deltas(turn)

    def final(self, frame: Final) -> list[ServerEvent]:
        events: list[ServerEvent] = []
        if not self.manual:  # earlier items with no final were found empty
            for empty in list(self._turns):
                cut = [u for u, t in self._by_utterance.items() if t is empty]
                if cut and max(cut) < frame.utterance:
                    events += self._complete(empty, 0.0, stopped_at=empty.start_s)
        if self.manual:
            self._unclaimed[frame.utterance] = frame
        turn = self._live(frame.utterance)
        if turn is None:
            return events
        turn.finals[frame.utterance] = frame
        turn.stable = ""
        if self.manual:
            return events + self._deltas(turn)
        return events + self._complete(turn, frame.end - frame.start, stopped_at=frame.end)

    def committed(self, item_id: str) -> list[ServerEvent]:
        """Manual: the commit of `item_id` has reached the session."""
        turn = self._find(item_id)
        return [] if turn is None else self._commit(turn)

    def finalized(self, item_id: str | None) -> list[ServerEvent]:
        """Manual: every final of the audio before the commit of `item_id` (None: a clear)
        has been sent; those since the last commit or clear are its own."""
        finals, self._unclaimed = self._unclaimed, {}
        turn = None if item_id is None else self._find(item_id)
        if turn is None or turn.done or turn.cleared:
            return []
        turn.finals = finals
        seconds = (turn.end_s or turn.start_s) - turn.start_s
        return self._complete(turn, seconds, stopped_at=None)

    # the events

    def _live(self, utterance: int) -> Turn | None:
        turn = self._by_utterance.get(utterance)
        return None if turn is None or turn.cleared or turn.done else turn

    def _find(self, item_id: str) -> Turn | None:
        return next((turn for turn in self._turns if turn.item_id == item_id), None)

    def _deltas(self, turn: Turn) -> list[ServerEvent]:
        text = turn.text()
        if len(text) <= len(turn.emitted) or not _extends(text, turn.emitted):
            return []
        delta, turn.emitted = text[len(turn.emitted) :], text
        return [Delta(event_id=self.ids.event(), item_id=turn.item_id, delta=delta)]

    def _commit(self, turn: Turn) -> list[ServerEvent]:
        if turn.committed:
            return []
        turn.committed = True
        previous, self._last_committed = self._last_committed, turn.item_id
        return [
            Committed(event_id=self.ids.event(), item_id=turn.item_id, previous_item_id=previous)
        ]

    def _complete(
        self, turn: Turn, seconds: float, *, stopped_at: float | None
    ) -> list[ServerEvent]:
        events: list[ServerEvent] = []
        if stopped_at is not None and not turn.stopped:
            for utterance in [u for u, t in self._by_utterance.items() if t is turn]:
                self._stopped(utterance, stopped_at)
            events.append(
                SpeechStoppedOut(
                    event_id=self.ids.event(), audio_end_ms=_ms(stopped_at), item_id=turn.item_id
                )
            )
        events += self._commit(turn)
        events += self._deltas(turn)
        turn.done = True
        self._completions += 1
        # it, and the cleared items before it (kept to place late `speech_started`s), go
        place = self._turns.index(turn)
        done = {id(t) for t in self._turns[:place] if t.cleared} | {id(turn)}
        self._forget(lambda t: id(t) in done)
        finals = [turn.finals[u] for u in sorted(turn.finals)]
        failed = next(
            (f for f in finals if any(x.startswith("model_error") for x in f.flags)), None
        )
        if failed is not None:
            problem = Problem(
                type="server_error", code="model_error", message=failed.flags[0], param=None
            )
            return [*events, Failed(event_id=self.ids.event(), item_id=turn.item_id, error=problem)]
        languages = sorted({f.language for f in finals if f.language})
        completed = Completed(
            event_id=self.ids.event(),
            item_id=turn.item_id,
            transcript=turn.text(),
            usage=Usage(seconds=round(max(0.0, seconds), 3)),
            languages=[Language(code=code) for code in languages] or None,
        )
        return [*events, completed]
