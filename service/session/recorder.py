"""`StoreHooks`: a session's `SessionHooks` backed by the store actor (DESIGN §5).

One per session, owned by the route that runs it. `final` returns once the utterance is
committed, and the writer calls it before sending the final, so a crash never loses text a
client has seen. The recording is closed before the session row is ended (start-up repair
looks for unended rows), and kept where the store keeps recordings then (an object store
uploads it: `StoreHandle.close_recording`), so a session that has ended can be read from any
replica; the upload is never on the audio path, even for a recording that stopped early.

Whether a session is recorded is the server's `RecordingPolicy` (the store's, so every route
follows it) applied to the client's `record`: `deny` answers a request with a non-fatal
`recording_disabled` and the session goes on unrecorded; `always` records every session.

A full disk never ends a session (issue 11 M1). A recording that reaches its limit, finds the
disk below the free-space floor or fails to write stops with a playable file and one non-fatal
`recording_stopped` for the client; so does one whose object store cannot be reached when the
session starts (`RecordingsUnreachable`: wrong credentials, no bucket), and the session goes on
unrecorded. A store that cannot commit (`StoreError`) costs the session its stored transcript,
not its live one: the client gets one non-fatal `not_stored`, finals keep coming (and keep
being offered to the store), and `/health` says `degraded`.
Reasons in detail go to the log, not to the client.

Resuming (`service/session/resume.py`): a new session's row gets its first connection's
token (hashed) in the same transaction (a stored session is resumable); a resumed one has its
row already (the claim took it), and its recording goes on in the same WAV file at the
session's audio time when that file is on this replica's disk
(else it stops where the earlier connection left it: `recording_stopped`; so it does when the
recordings are in an object store and the file is in another replica's spool). A session
`RELEASED` (its client vanished and may come back) is let go, not ended: its recording closed
but not kept yet (it may go on here), its row open for the lease (`LeaseKeeper.release`, which
keeps the recording once something has ended the session).
"""

from __future__ import annotations

import contextlib
import logging

import trio

from actors.model.port import Samples
from actors.store.actor import AlreadyStored, StoreClosed, StoreError, StoreHandle
from actors.store.leases import hash_token
from actors.store.recording import (
    LowDiskSpace,
    RecordingBusy,
    RecordingPolicy,
    RecordingWriter,
    reopen_recording,
)
from actors.store.schema import SessionRecord, StoredUtterance
from protocol.native import Error, Final
from service.session.ports import SessionInfo
from service.session.resume import RELEASED, Resume

log = logging.getLogger("chorus.recorder")

SAMPLE_RATE = 16000
_UNRECORDED = "the session goes on unrecorded"
_STOPPED = {
    "limit": "the recording reached the server's limit of {seconds:g} s of audio",
    "low_disk": "the server is low on disk space",
    "write_error": "the server could not write the recording",
    "resumed": "its recording is not on the replica that resumed the session",
}


class StoreHooks:
    def __init__(
        self,
        store: StoreHandle,
        *,
        record: bool,
        policy: RecordingPolicy | None = None,
        resume: Resume | None = None,
    ) -> None:
        self._store = store
        self._resume = resume or Resume()
        self._policy = policy or store.recording_policy
        self._requested = record
        self._record = self._policy.records(record)
        self._recording: RecordingWriter | None = None
        self._session_id = ""
        self._stored = True  # the session row exists
        self._store_failed = False  # a write was lost; the client has been told

    async def started(self, session: SessionInfo) -> Error | None:
        self._session_id = session.session_id
        if self._resume.resumed:
            return await self._reopen() if self._record else None
        token = self._resume.token
        try:  # the row and its resume token: one transaction
            await self._store.begin_session(
                SessionRecord(
                    id=session.session_id,
                    route=session.route,
                    client=session.client,
                    model=session.model,
                    language=session.config.language,
                ),
                token_hash=None if token is None else hash_token(token),
            )
        except StoreError as error:
            self._stored = False  # nothing to record into, nothing to end
            return self._not_stored(error)
        if self._requested and not self._record:
            return Error(
                code="recording_disabled",
                message=f"this server does not record sessions; {_UNRECORDED}",
            )
        if self._record:
            try:
                self._recording = await self._store.open_recording(session.session_id, SAMPLE_RATE)
            except LowDiskSpace as error:
                return self._recording_stopped("low_disk", str(error))
            except (OSError, StoreError) as error:
                return self._recording_stopped("write_error", str(error))
        return None

    async def _reopen(self) -> Error | None:
        """A resumed session's recording goes on in its WAV file at the session's audio time,
        when the file is on this replica's disk; else it stops (the gap is the client's)."""
        path = self._store.audio_path(self._session_id)
        at = round(self._resume.audio_start * SAMPLE_RATE) * 2
        try:
            self._recording = await reopen_recording(path, SAMPLE_RATE, at, policy=self._policy)
        except (FileNotFoundError, RecordingBusy, ValueError) as error:
            return self._recording_stopped("resumed", str(error))
        except LowDiskSpace as error:
            return self._recording_stopped("low_disk", str(error))
        except OSError as error:
            return self._recording_stopped("write_error", str(error))
        return None

    async def audio(self, samples: Samples) -> Error | None:
        recording = self._recording
        if recording is None or recording.stopped or await recording.append_samples(samples):
            return None
        # closed by its stop already; kept when the session ends
        return self._recording_stopped(recording.stopped or "write_error", recording.stop_detail)

    async def final(self, frame: Final) -> Error | None:
        if not self._stored:
            return None
        try:
            await self._store.add_utterance(
                self._session_id, StoredUtterance.from_final(frame), seq=frame.seq or None
            )
        except (StoreError, AlreadyStored) as error:  # AlreadyStored: another replica took
            if not self._store_failed:  # the session over and stored this final's index
                return self._not_stored(error)
        return None

    async def ended(self, reason: str, duration_s: float) -> None:
        with trio.CancelScope(shield=True):
            recording = self._recording
            if recording is not None:
                await self._close(recording, keep=reason != RELEASED)
            if not self._stored:
                return
            # a server that is stopping has closed its store: start-up repair ends the row
            with contextlib.suppress(StoreClosed):
                try:
                    if reason == RELEASED:
                        await self._store.leases.release(
                            self._session_id, duration_s, recorded=recording is not None
                        )
                    else:
                        await self._store.end_session(self._session_id, reason, duration_s)
                except StoreError as error:  # the row stays open; start-up repair ends it
                    log.error("session %s: could not end its row: %s", self._session_id, error)

    async def _close(self, recording: RecordingWriter, *, keep: bool) -> None:
        try:
            if keep:
                await self._store.close_recording(recording)
            else:  # a released session's: kept once it ends (`LeaseKeeper.release`)
                await recording.aclose()
        except OSError as error:  # the file stays; an object store's start-up recovery keeps it
            log.error("session %s: closing the recording: %s", self._session_id, error)

    def _recording_stopped(self, reason: str, detail: str) -> Error:
        level = logging.ERROR if reason == "write_error" else logging.WARNING  # the operator's
        log.log(level, "session %s: recording stopped (%s): %s", self._session_id, reason, detail)
        why = _STOPPED[reason].format(seconds=self._policy.max_bytes / (2 * SAMPLE_RATE))
        return Error(code="recording_stopped", message=f"recording stopped: {why}; {_UNRECORDED}")

    def _not_stored(self, error: Exception) -> Error:
        log.error("session %s: not stored: %s", self._session_id, error)
        self._store_failed = True
        return Error(
            code="not_stored",
            message="the server could not store this session's transcript; "
            "finals go on but the stored transcript may miss some",
        )
