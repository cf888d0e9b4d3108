"""The per-connection supervisor: one nursery, one line per stage.

`run_session` owns the session's nursery and its four stages (`service/session/stages.py`,
`service/session/transcribing.py`), joined by bounded channels sized from
`SessionLimits.queue_size`. A clean end (client `stop`, a client that leaves, an idle or length
limit) closes the first channel and the close ripples down; an error in any stage cancels its
siblings and propagates to the route, which closes the socket with 1011. The route owns the socket;
the app owns the transcriber, the VAD actor and the hooks; the segmenter stage owns the session's
VAD stream.

Memory bound per session (defaults): commands `queue_size` (16) × `max_frame_bytes` (1 MiB) =
16 MiB of raw client audio at worst (typical frames are 3–32 KiB, so < 0.5 MiB); segmenter ring
≈ 1.2 MB; VAD: one request out at a time, ≤ `VadConfig.max_frames` (64) × 2 KB of frames,
and 1.3 KB of state in the actor until the stream closes; segment events 16 × one utterance
(≤ 15 s × 64 KB/s ≈ 1 MB) = ≤ 16 MB; frames 16 × < 4 KB. `tests/test_session.py`,
`tests/test_segmenter.py` and `tests/test_vad_actor.py` pin these numbers.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable

import trio

from actors.speech.segmenter import Event
from protocol.codec import Codec
from protocol.native import Config, Error, Final, Ready, ServerFrame
from service.session.ports import (
    FrameSocket,
    NoHooks,
    SessionHooks,
    SessionInfo,
    StreamOptions,
    Transcriber,
    Vad,
)
from service.session.stages import (
    Command,
    SessionState,
    read_frames,
    segment_audio,
    write_frames,
)
from service.session.transcribing import transcribe_segments


def new_session_id() -> str:
    return uuid.uuid4().hex


async def run_session(
    socket: FrameSocket,
    codec: Codec,
    transcriber: Transcriber,
    config: Config,
    options: StreamOptions,
    *,
    route: str = "/v1/stream",
    client: str = "anonymous",
    hooks: SessionHooks | None = None,
    annotate: Callable[[Final], Final] = lambda frame: frame,
    session_id: str | None = None,
    on_start: Callable[[SessionState], object] = lambda state: None,
    vad: Vad | None = None,
) -> SessionState:
    """Serve one connection until it ends; returns the session's final state.

    `vad` is the shared VAD actor; without it the segmenter runs its own VAD inline."""
    hooks = hooks or NoHooks()
    state = SessionState(session_id=session_id or new_session_id(), config=config)
    on_start(state)
    size = options.limits.queue_size
    commands_send, commands_recv = trio.open_memory_channel[Command](size)
    events_send, events_recv = trio.open_memory_channel[Event](size)
    frames_send, frames_recv = trio.open_memory_channel[ServerFrame](size)

    def reconfigure(update: Config) -> ServerFrame | None:
        if state.audio_started:
            return Error(
                code="config_after_audio",
                message="`config` must come before any audio; it was ignored",
            )
        problem = check_config(update, options)
        if problem is not None:
            return problem
        state.config = update
        return ready_frame(state, options)

    notice = await hooks.started(
        SessionInfo(state.session_id, route, client, options.model, config)
    )
    try:  # a session cancelled from outside (server shutdown) still closes its recording
        await frames_send.send(ready_frame(state, options))
        if notice is not None:  # e.g. `recording_disabled`: after `ready`, which comes first
            await frames_send.send(notice)
        async with trio.open_nursery() as nursery:
            nursery.start_soon(
                read_frames,
                socket,
                codec,
                commands_send,
                frames_send.clone(),
                state,
                options,
                reconfigure,
            )
            nursery.start_soon(
                segment_audio,
                commands_recv,
                events_send,
                frames_send.clone(),
                state,
                options,
                hooks,
                vad,
            )
            nursery.start_soon(
                transcribe_segments, transcriber, events_recv, frames_send, state, options, annotate
            )
            nursery.start_soon(
                write_frames,
                socket,
                codec,
                frames_recv,
                state,
                hooks,
                options.limits.send_timeout_s,
            )
    finally:
        await hooks.ended(state.stop_reason, round(state.received_s, 3))
    return state


def ready_frame(state: SessionState, options: StreamOptions) -> Ready:
    return Ready(
        session_id=state.session_id,
        model=options.model,
        sample_rate=state.config.sample_rate,
        language=state.config.language,
    )


def check_config(config: Config, options: StreamOptions) -> Error | None:
    """What the model cannot do with this config, as an error frame (None when fine)."""
    if not options.multilingual:
        if config.task == "translate":
            return Error(
                code="unsupported_task",
                message=f"model {options.model} is English-only: it cannot translate",
            )
        if config.language not in ("auto", "en") and not config.language.startswith("en-"):
            return Error(
                code="unsupported_language",
                message=f"model {options.model} is English-only; "
                f"language {config.language!r} is not supported",
            )
    else:
        base = config.language.split("-")[0]
        if config.language != "auto" and base not in options.languages:
            return Error(
                code="unsupported_language",
                message=f"language {config.language!r} is not one of the model's",
            )
    return None
