"""`StoreHooks`: a session's `SessionHooks` backed by the store actor (DESIGN §5).

One per session, owned by the route that runs it. `final` returns once the utterance is
committed, and the writer calls it before sending the final, so a crash never loses text a
client has seen. With `record` on, audio is appended to the session's WAV as it arrives; the
recording is closed before the session row is ended (start-up repair looks for unended rows).
"""

from __future__ import annotations

import contextlib

import trio

from actors.model_api import Samples
from actors.recording import RecordingWriter
from actors.store import StoreClosed, StoreHandle
from actors.store_schema import SessionRecord, StoredUtterance
from protocol.native import Final
from service.pipeline import SessionInfo


class StoreHooks:
    def __init__(self, store: StoreHandle, *, record: bool) -> None:
        self._store = store
        self._record = record
        self._recording: RecordingWriter | None = None
        self._session_id = ""

    async def started(self, session: SessionInfo) -> None:
        self._session_id = session.session_id
        await self._store.begin_session(
            SessionRecord(
                id=session.session_id,
                route=session.route,
                client=session.client,
                model=session.model,
                language=session.config.language,
            )
        )
        if self._record:
            self._recording = await self._store.open_recording(session.session_id, 16000)

    async def audio(self, samples: Samples) -> None:
        if self._recording is not None:
            await self._recording.append_samples(samples)

    async def final(self, frame: Final) -> None:
        await self._store.add_utterance(self._session_id, StoredUtterance.from_final(frame))

    async def ended(self, reason: str, duration_s: float) -> None:
        with trio.CancelScope(shield=True):
            if self._recording is not None:
                await self._recording.aclose()
            # a server that is stopping has closed its store: start-up repair ends the row
            with contextlib.suppress(StoreClosed):
                await self._store.end_session(self._session_id, reason, duration_s)
