"""What a multichannel session answers once for all its channels, though every channel answers.

A multichannel session (`service/session/multichannel.py`) hands a `finalize` to the channels
it targets and a `configure` to every channel; each channel's pipeline answers as a
single-channel session does. The client asked once, so it gets one answer (`ChannelAnswers`,
owned by the session: its demux asks, its writer reads the channels' answers):

* `finalized {id}` once every targeted channel has answered, so after every targeted channel's
  final. The channels see the session's own token as the `id` (`ask`), never the client's, so
  two `finalize`s with one `id` still wait each for their own channels. A channel that stops
  (`stopped`) answers nothing more: it no longer holds anyone up.
* the first `configured` (or `invalid_vocabulary` error) of each `configure`: every channel
  gets the same `configure` on top of the same config, so all answer alike.
"""

from __future__ import annotations

import attrs

from protocol.native import Configured, Error, Finalized, ServerFrame

FinalizeId = str | int | None


@attrs.define
class _Waiting:
    id: FinalizeId  # the client's
    channels: set[int]  # those still to answer


class ChannelAnswers:
    """The session's answers to `finalize` and `configure` (see the module docstring)."""

    def __init__(self, channels: int) -> None:
        self._waiting: dict[int, _Waiting] = {}  # by token
        self._next_token = 0
        self._configured = [0] * channels  # how many `configure`s each channel has answered

    def ask(self, client_id: FinalizeId, channels: set[int]) -> int:
        """A `finalize` with `client_id` for `channels`: the token the channels see."""
        token, self._next_token = self._next_token, self._next_token + 1
        self._waiting[token] = _Waiting(client_id, set(channels))
        return token

    def answered(self, channel: int, frame: ServerFrame) -> list[ServerFrame] | None:
        """What the client gets for `channel`'s `frame`; None: not one of these answers."""
        match frame:
            case Finalized(id=int(token)) if token in self._waiting:
                return self._done(channel, [token])
            case Configured() | Error(code="invalid_vocabulary"):
                return [frame] if self._first_configured(channel) else []
        return None

    def stopped(self, channel: int) -> list[ServerFrame]:
        """`channel` has stopped: the `finalized` that waited only on it."""
        return self._done(channel, list(self._waiting))

    def _done(self, channel: int, tokens: list[int]) -> list[ServerFrame]:
        done: list[ServerFrame] = []
        for token in tokens:
            waiting = self._waiting[token]
            waiting.channels.discard(channel)
            if not waiting.channels:
                del self._waiting[token]
                done.append(Finalized(id=waiting.id))
        return done

    def _first_configured(self, channel: int) -> bool:
        counts = self._configured
        first = all(counts[channel] >= count for count in counts)
        counts[channel] += 1
        return first
