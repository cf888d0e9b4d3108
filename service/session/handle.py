"""`SessionHandle`: what the rest of the server holds of a live session.

`serve_session` (`service/session/admission.py`) makes one from the session's record
(`SessionHandle.of`) before the pipeline starts and keeps it in `LiveSessions` until the
session ends, however it ends. Admission, `/health`, `/metrics` and the shutdown drain
(`service.app.drain_sessions`) read `statistics()` and call `stop(reason, code)`; none of them
touches the session's state or its tasks. The `/ws` recordings route
(`service/routes/recordings.py`) holds one too (`streaming=False`), so a drain stops it the
same way, but admission's capacity and lag checks leave it out.
"""

from __future__ import annotations

import attrs

from service.session.record import Session
from service.session.state import AudioMeter, Ending, FinalsMeter, SessionStatistics


@attrs.frozen
class SessionHandle:
    session_id: str
    _ending: Ending
    _audio: AudioMeter
    _finals: FinalsMeter = attrs.field(factory=FinalsMeter)
    # a live stream (priced by admission's capacity meter); a `/ws` recordings connection is
    # not: its recordings are uploads, run behind live work
    streaming: bool = attrs.field(default=True, kw_only=True)

    @classmethod
    def of(cls, session: Session) -> SessionHandle:
        return cls(session.session_id, session.ending, session.audio, session.finals)

    def stop(self, reason: str, code: int) -> None:
        """End the session cleanly: it stops taking input, finishes the finals it owes, sends
        `stopped` and closes with `code` (e.g. `server_shutdown`, 1012). Returns at once; the
        session leaves `LiveSessions` when it has ended."""
        self._ending.stop(reason, code)

    def statistics(self) -> SessionStatistics:
        audio, finals, ending = self._audio, self._finals, self._ending
        return SessionStatistics(
            session_id=self.session_id,
            received_s=audio.received_s,
            speech_s=audio.speech_s,
            lag_s=finals.lag_s,
            queue=finals.queue,
            caption_delay_s=round(finals.captions.delay_s(audio.received_s), 3),
            stop_reason=ending.reason,
            close_code=ending.close_code,
            client_gone=ending.client_gone,
        )
