"""Parts of a session for the pipeline's tests: speech with pauses between two clips, and
hooks that record what the session told them."""

from __future__ import annotations

from typing import Any

import msgspec
import numpy as np
from support.audio_files import DATA, load
from support.fakes import FakeSocket, FakeTranscriber

from actors.model.port import Samples
from protocol.codec import NativeCodec
from protocol.native import Config, Final
from service.policy.latency import FinalWaits
from service.session.admission import LiveSessions
from service.session.channels import ChannelCodec, ChannelSocket
from service.session.multichannel import Multichannel, MuxCodec
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


def fake_multichannel(
    socket: FakeSocket,
    hooks: SessionHooks,
    live: LiveSessions,
    *,
    codec: MuxCodec,
    config: Config,
    options: StreamOptions,
    **extra: Any,
) -> Multichannel:
    """A multichannel session on `socket` whose channels (mono `config`s, session ids
    `call.N`) share one fake transcriber that reads every utterance as "words"; `extra` goes
    to `Multichannel` (`interleaved`, `route`)."""
    transcriber = FakeTranscriber(text=lambda request: "words")
    mono = msgspec.structs.replace(config, channels=1, multichannel=False)

    def make_channel(channel: int, channel_socket: ChannelSocket, hooks: SessionHooks) -> Session:
        return Session(
            socket=channel_socket,
            codec=ChannelCodec(),
            transcriber=transcriber,
            config=mono,
            options=options,
            session_id=f"call.{channel}",
            hooks=hooks,
        )

    return Multichannel(
        socket=socket,
        codec=codec,
        config=config,
        options=options,
        hooks=hooks,
        make_channel=make_channel,
        hold=live.holding,
        session_id="call",
        **extra,
    )
