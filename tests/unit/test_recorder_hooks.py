"""`StoreHooks` (service/session/recorder.py) against a real store (SQLite in `tmp_path`): what
a session's hooks do when the store refuses a write that a live session must survive."""

from __future__ import annotations

from pathlib import Path

from actors.store.actor import StoredUtterance, open_store
from protocol.native import Config, Final
from service.session.ports import SessionInfo
from service.session.record import new_session_id
from service.session.recorder import StoreHooks
from service.session.resume import Resume

ALICE = "key:alice"


def info(session_id: str) -> SessionInfo:
    return SessionInfo(session_id, "/v1/stream", ALICE, "tiny.en", Config())


def final(index: int, seq: int) -> Final:
    return Final(
        seq=seq, utterance=index, text=f"final {index}", start=2.0 * index,
        end=2.0 * index + 1.5, language="en", confidence=0.9,
    )  # fmt: skip


async def test_a_final_another_replica_stored_is_not_stored_twice_and_the_session_goes_on(
    tmp_path: Path,
) -> None:
    """The replica that took the session over stored index 0 first: the late final here is
    `AlreadyStored`, told once as `not_stored`, and the next final is still offered."""
    async with open_store(tmp_path, lease_s=30.0) as store:
        session_id = new_session_id()
        hooks = StoreHooks(store, record=False, resume=Resume(token="t" * 43))
        assert await hooks.started(info(session_id)) is None
        await store.add_utterance(session_id, StoredUtterance.from_final(final(0, 3)), seq=3)
        notice = await hooks.final(final(0, 4))
        again = await hooks.final(final(0, 5))
        assert await hooks.final(final(1, 6)) is None
        stored = await store.get_session(session_id)
    assert notice is not None and notice.code == "not_stored" and again is None
    assert [u.index for u in stored.utterances] == [0, 1]
