"""`SessionHandle`: what the rest of the server holds of a live session.

`run_session` (`service/session/supervisor.py`) makes one for each session and hands it to its
caller before the pipeline starts (`on_start`); `serve_session` keeps it in `LiveSessions`
(`service/session/admission.py`) until the session ends, however it ends. Admission, `/health`,
`/metrics` and the shutdown drain (`service.app.drain_sessions`) read `statistics()` and call
`stop(reason, code)`; none of them touches the session's state or its tasks. The `/ws`
recordings route (`service/routes/recordings.py`) holds one too (`streaming=False`), so a drain
stops it the same way, but admission's capacity and lag checks leave it out.
"""

from __future__ import annotations

import attrs

from service.session.state import SessionState, SessionStatistics


@attrs.frozen
class SessionHandle:
    _state: SessionState
    # a live stream (priced by admission's capacity meter); a `/ws` recordings connection is
    # not: its recordings are uploads, run behind live work
    streaming: bool = attrs.field(default=True, kw_only=True)

    @property
    def session_id(self) -> str:
        return self._state.session_id

    def stop(self, reason: str, code: int) -> None:
        """End the session cleanly: it stops taking input, finishes the finals it owes, sends
        `stopped` and closes with `code` (e.g. `server_shutdown`, 1012). Returns at once; the
        session leaves `LiveSessions` when it has ended."""
        self._state.stop(reason, code)

    def statistics(self) -> SessionStatistics:
        return self._state.statistics()
