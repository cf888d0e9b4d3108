"""Shared shapes of the per-connection pipeline: the small protocols the stages depend on.

The supervisor (`service/session/supervisor.py`) and its four stages (`reader`, `segmenting`,
`transcribing`, `writer`) see a `FrameSocket`, a `Transcriber`, a `Vad` and `SessionHooks`,
never Starlette or the actors themselves, so tests drive them with fakes (`tests/support/fakes.py`).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Protocol

import attrs
import trio

from actors.model.port import Samples
from actors.transcriber.actor import Transcriber as Transcriber
from protocol.native import Config, Error, Final
from service.session.lead_in import LeadInMode


class ClientGone(Exception):
    """The client closed the connection or vanished; a normal end of a session. `code`: the
    close code the client sent, when the transport knows it (1006: it vanished)."""

    def __init__(self, message: str = "", code: int | None = None) -> None:
        super().__init__(message)
        self.code = code


class FrameSocket(Protocol):
    async def receive(self) -> str | bytes:
        """Next client message; raises `ClientGone` when the client has left."""
        ...

    async def send(self, message: str | bytes) -> None:
        """Send one message; raises `ClientGone` when the client has left."""
        ...

    async def close(self, code: int = 1000, reason: str = "") -> None: ...

    async def wait_gone(self) -> None:
        """Return once the transport knows the client has left, without reading its messages
        (the reader waits on this while its pacer holds it); may never return."""
        ...


class SpeechDetector(Protocol):
    """One session's stream of the VAD actor (`actors.speech.vad_actor.VadStream`)."""

    async def probabilities(self, samples: Samples) -> Samples:
        """One speech probability per 512-sample frame that `samples` completes."""
        ...

    def close(self) -> None:
        """Free the stream's state in the actor."""
        ...


class Vad(Protocol):
    """The shared VAD actor (`actors.speech.vad_actor.VadHandle`): one stream per session."""

    def open_stream(self) -> SpeechDetector: ...


class FinalWaitLog(Protocol):
    """Where a session tells how long each of its finals took: the app's `FinalWaits`
    (`service/policy/latency.py`), one for every session, which admission reads."""

    def record(self, now: float, wait_s: float) -> None: ...


class SessionHooks(Protocol):
    """What a session tells the rest of the server: the store and recorder implement this.

    `started`, `audio` and `final` may answer with a non-fatal `Error` for the client (the
    recording stopped, the transcript could not be stored); the session sends it and goes on.
    """

    async def started(self, session: SessionInfo) -> Error | None: ...

    async def audio(self, samples: Samples) -> Error | None:
        """16 kHz audio as it arrives (for recordings); must not block for long."""
        ...

    async def final(self, frame: Final) -> Error | None:
        """Called before a final is sent; returns once it is durable (or says it is not)."""
        ...

    async def ended(self, reason: str, duration_s: float) -> None: ...


class NoHooks:
    async def started(self, session: SessionInfo) -> None:
        return None

    async def audio(self, samples: Samples) -> None:
        return None

    async def final(self, frame: Final) -> None:
        return None

    async def ended(self, reason: str, duration_s: float) -> None:
        return None


@attrs.frozen
class SessionInfo:
    session_id: str
    route: str
    client: str
    model: str
    config: Config


@attrs.frozen
class SessionLimits:
    max_frame_bytes: int = 1 << 20
    max_message_bytes: int = 64 << 10
    idle_timeout_s: float = 30.0  # no audio and no keepalive for this long: closed
    audio_idle_timeout_s: float = 600.0  # no audio for this long, keepalives or not: closed
    max_session_s: float = 4 * 3600.0  # of audio received, or of wall time, whichever first
    send_timeout_s: float = 30.0  # a client that reads nothing for this long is dropped
    queue_size: int = 16  # items per inter-stage channel


@attrs.frozen
class StreamOptions:
    """Server-side knobs for one session (from `Settings`), beside the client's `Config`."""

    model: str = "tiny.en"
    multilingual: bool = False
    languages: tuple[str, ...] = ("en",)
    final_beam_size: int = 5
    partial_interval_s: float = 0.8
    commit_partials: bool = True  # words two drafts agree on are committed (LocalAgreement-2)
    # how far the text may fall behind the speech before a session's draft is overdue
    caption_target_s: float = 1.0
    # finals reuse the drafts' committed words that end this long before the utterance (0: off)
    final_reuse_s: float = 0.0
    # which finals are decoded after the previous one's audio and text (`lead_in.py`)
    final_lead_in: LeadInMode = "narrowband"
    # audio is read no faster than `pace` x real time once `pace_burst_s` ahead (0: no limit)
    pace: float = 1.5
    pace_burst_s: float = 10.0
    limits: SessionLimits = SessionLimits()
    # a route's: `speech_stopped` when the segmenter cuts an utterance, before its final
    speech_stopped: bool = False


async def unless(
    stop: Callable[[], Awaitable[object]], work: Callable[[], Awaitable[object]]
) -> bool:
    """Await `work()` unless `stop()` returns first (a client that leaves): True when `work`
    finished, False when `stop` cancelled it. The caller's task owns both, in one nursery; an
    exception from `work` comes out as itself, not wrapped in the nursery's group."""
    finished = False
    error: Exception | None = None
    async with trio.open_nursery() as nursery:

        async def watch() -> None:
            await stop()
            nursery.cancel_scope.cancel()

        nursery.start_soon(watch)
        try:
            await work()
            finished = True
        except Exception as raised:
            error = raised
        nursery.cancel_scope.cancel()
    if error is not None:
        raise error
    return finished
