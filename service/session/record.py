"""`Session`: one session as every stage sees it, built once before it runs.

`serve_session` (`service/session/admission.py`) builds it after admission, from the route's
checked config and codec and the app's services; tests build it around fakes. Each stage of
`run_session` (`service/session/supervisor.py`) takes it with its own channel ends and keeps
its own working state; none writes a field of it. Its live parts (`Ending`, `AudioMeter`,
`FinalsMeter`, `service/session/state.py`) are handles to state that one owner writes and the
rest read; the session's `SessionHandle` (`SessionHandle.of(session)`) is built from it too.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable

import attrs

from protocol.codec import Codec
from protocol.native import Config, Final
from service.policy.latency import FinalWaits
from service.session.ports import (
    FinalWaitLog,
    FrameSocket,
    NoHooks,
    SessionHooks,
    SessionInfo,
    SessionLimits,
    StreamOptions,
    Transcriber,
    Vad,
)
from service.session.state import AudioMeter, Ending, FinalsMeter
from service.session.vocabulary import SessionVocabulary


def new_session_id() -> str:
    return uuid.uuid4().hex


def as_is(frame: Final) -> Final:
    return frame


@attrs.frozen(kw_only=True)
class Session:
    """One session, as its stages see it; no stage writes a field of it."""

    socket: FrameSocket  # the route owns the connection; the reader and the writer use it
    codec: Codec  # the route's dialect: the reader decodes with it, the writer encodes
    transcriber: Transcriber
    config: Config  # the route's, checked (`check_config`); a `config` frame may replace it
    options: StreamOptions  # the server's knobs for this session
    session_id: str = attrs.field(factory=new_session_id)
    route: str = "/v1/stream"
    client: str = "anonymous"
    hooks: SessionHooks = attrs.field(factory=NoHooks)  # the store: audio, finals, the end
    annotate: Callable[[Final], Final] = as_is  # e.g. sentiment, added to each final
    vad: Vad | None = None  # the shared VAD actor; None: the segmenter runs its own inline
    # the app's record of how long finals take, across sessions (the transcriber client adds
    # each of this session's); a test's session has its own
    final_waits: FinalWaitLog = attrs.field(factory=FinalWaits)
    # the live parts, one owner each (`service/session/state.py`)
    ending: Ending = attrs.field(factory=Ending)  # the reader's
    audio: AudioMeter = attrs.field(factory=AudioMeter)  # the segmenter's
    finals: FinalsMeter = attrs.field(factory=FinalsMeter)  # the transcriber client's
    vocabulary: SessionVocabulary = attrs.field(factory=SessionVocabulary)  # the reader's

    @property
    def limits(self) -> SessionLimits:
        return self.options.limits

    def info(self) -> SessionInfo:
        return SessionInfo(
            self.session_id, self.route, self.client, self.options.model, self.config
        )
