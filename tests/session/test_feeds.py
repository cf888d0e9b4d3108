"""Following live sessions (`service/session/feeds.py`, `service/routes/events.py`): a slow
follower is dropped, never waited on; the others, and the session, go on."""

from __future__ import annotations

import pytest
import trio
import trio.testing
from starlette.requests import ClientDisconnect
from starlette.types import Message

from actors.store.schema import SessionDetail, SessionRecord, StoredUtterance
from protocol.native import Config, Final
from service.routes.events import EventStream, _stream
from service.session.feeds import Feeds, Following, TooManyFollowers
from service.session.ports import NoHooks, SessionInfo


def final(index: int) -> Final:
    return Final(
        utterance=index,
        text=f"final {index}",
        start=index,
        end=index + 1,
        language="en",
        confidence=0.9,
    )


async def test_a_slow_follower_is_dropped_and_the_others_get_every_final() -> None:
    feeds = Feeds(queue_size=2)
    hooks = feeds.hooks(NoHooks())
    await hooks.started(SessionInfo("s1", "/v1/stream", "c", "tiny.en", Config()))
    slow, reader = feeds.follow("s1"), feeds.follow("s1")
    assert slow is not None and reader is not None
    got = []
    for index in range(5):
        with trio.testing.assert_no_checkpoints():  # publishing never waits on a follower
            hooks._feed.publish(_stored(index))
        await hooks.final(final(index + 5))
        got += [reader.receive.receive_nowait().index for _ in range(2)]
    assert got == [0, 5, 1, 6, 2, 7, 3, 8, 4, 9]
    assert slow.dropped and [slow.receive.receive_nowait().index for _ in range(2)] == [0, 5]
    with pytest.raises(trio.EndOfChannel):
        slow.receive.receive_nowait()
    await hooks.ended("stop", 10.0)
    assert feeds.follow("s1") is None  # ended: nothing live to follow
    with pytest.raises(trio.EndOfChannel):
        reader.receive.receive_nowait()


def test_a_session_takes_at_most_its_followers() -> None:
    feeds = Feeds(max_followers=2)
    feeds.open("s1")
    first, second = feeds.follow("s1"), feeds.follow("s1")
    with pytest.raises(TooManyFollowers):
        feeds.follow("s1")
    assert first is not None and second is not None
    first.close()  # one leaves: one more may come
    assert feeds.follow("s1") is not None


async def test_the_event_stream_replays_then_follows_without_duplicates() -> None:
    feeds = Feeds(queue_size=2)
    feed = feeds.open("s1")
    following = feeds.follow("s1")
    assert feed is not None and following is not None
    record = SessionRecord(id="s1", route="/v1/stream", client="c", model="m", language="en")
    detail = SessionDetail(record, (_stored(0), _stored(1)))
    feed.publish(_stored(1))  # stored and published: sent once
    feed.publish(_stored(2))
    feed.publish(_stored(3))  # the queue was full: dropped
    events = [event async for event in _stream(detail, following)]
    assert [event.split("\n")[0] for event in events] == ["event: final"] * 3 + ["event: end"]
    assert '"index":2' in events[2] and '"reason":"dropped"' in events[-1]


def _stored(index: int) -> StoredUtterance:
    return StoredUtterance.from_final(final(index))


async def test_a_feed_is_its_sessions_alone() -> None:
    feeds = Feeds()
    owner = feeds.hooks(NoHooks())
    await owner.started(SessionInfo("s1", "/v1/twilio", "c", "tiny.en", Config()))
    follower = feeds.follow("s1")
    assert feeds.open("s1") is None  # open already: never joined
    other = feeds.hooks(NoHooks())  # a second session under the same id (never stored so)
    await other.started(SessionInfo("s1", "/v1/twilio", "c", "tiny.en", Config()))
    await other.ended("stop", 1.0)
    assert follower is not None and follower in owner._feed.followers  # the owner's goes on
    assert feeds.follow("s1") is not None
    await owner.ended("stop", 1.0)
    assert feeds.follow("s1") is None


def _replaying(feeds: Feeds) -> tuple[SessionDetail, Following]:
    """A live session with two stored finals, and one follower of it."""
    assert feeds.open("s1") is not None
    following = feeds.follow("s1")
    assert following is not None
    record = SessionRecord(id="s1", route="/v1/stream", client="c", model="m", language="en")
    return SessionDetail(record, (_stored(0), _stored(1))), following


async def test_a_follower_that_leaves_during_the_replay_leaves_the_feed() -> None:
    feeds = Feeds(max_followers=1)
    detail, following = _replaying(feeds)
    stream = _stream(detail, following)
    assert "event: final" in await anext(stream)  # the first stored final; then it leaves
    await stream.aclose()
    assert feeds.follow("s1") is not None  # its place is free again


async def test_a_response_never_iterated_still_lets_its_follower_go() -> None:
    feeds = Feeds(max_followers=1)
    detail, following = _replaying(feeds)

    async def receive() -> Message:
        return {"type": "http.disconnect"}  # gone before the first event

    async def send(message: Message) -> None:
        raise OSError("gone")

    with pytest.raises((OSError, ClientDisconnect)):
        await EventStream(detail, following)({"type": "http"}, receive, send)
    assert feeds.follow("s1") is not None
