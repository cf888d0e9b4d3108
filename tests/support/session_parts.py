"""Parts of a session for the pipeline's tests: speech with pauses between two clips, and
hooks that record what the session told them."""

from __future__ import annotations

import numpy as np
from support.audio_files import DATA, load

from actors.model.port import Samples
from protocol.codec import NativeCodec
from protocol.native import Config, Final
from service.policy.latency import FinalWaits
from service.session.ports import (
    FinalWaitLog,
    FrameSocket,
    NoHooks,
    SessionHooks,
    SessionInfo,
    StreamOptions,
    Transcriber,
    Vad,
)
from service.session.record import Session


def speech_with_pauses() -> Samples:
    pause = np.zeros(16000, np.float32)
    return np.concatenate(
        [pause[:8000], load(DATA / "weather.wav"), pause, load(DATA / "library.wav"), pause]
    )


class RecordingHooks:
    def __init__(self) -> None:
        self.events: list[str] = []
        self.audio_samples = 0

    async def started(self, session: SessionInfo) -> None:
        self.events.append(f"started {session.route}")

    async def audio(self, samples: Samples) -> None:
        self.audio_samples += len(samples)

    async def final(self, frame: Final) -> None:
        self.events.append(f"final {frame.utterance}")

    async def ended(self, reason: str, duration_s: float) -> None:
        self.events.append(f"ended {reason} {duration_s}")


def native_session(
    socket: FrameSocket,
    transcriber: Transcriber,
    options: StreamOptions,
    *,
    config: Config | None = None,
    hooks: SessionHooks | None = None,
    vad: Vad | None = None,
    final_waits: FinalWaitLog | None = None,
) -> Session:
    """A native-protocol session on `socket` (a fake's), the route's config `Config()` unless
    given, with a window of final waits of its own unless given one."""
    return Session(
        socket=socket,
        codec=NativeCodec(),
        transcriber=transcriber,
        config=config or Config(),
        options=options,
        hooks=hooks or NoHooks(),
        vad=vad,
        final_waits=final_waits or FinalWaits(),
    )
