"""Following live sessions: each final, as it is stored, to everyone who follows the session.

`Feeds` is the app's one registry (a field of `SessionServices`, so every route's sessions have
it): a session's `FeedHooks` (its store hooks, wrapped by `serve_session` and by multichannel
sessions) opens the session's `Feed` once the session has started (its row inserted: an id that
is another session's is refused by the insert, and opens nothing), publishes each final once the
store has it, and closes its own feed when the session has ended. A feed is its session's alone:
`Feeds.open` refuses an id that is open already, and `close` forgets only the closer's feed.
`GET /v1/sessions/{id}/events` (`service/routes/events.py`) follows a feed.

Publishing never waits: each follower has a bounded queue (`queue_size` finals), and a follower
whose queue is full is dropped (its queue closed, `dropped` set), so a slow follower never slows
the session or the other followers. A session takes at most `max_followers` at once; one more is
refused (`TooManyFollowers`). All of it runs on the trio thread: no locks.
"""

from __future__ import annotations

import attrs
import trio

from actors.model.port import Samples
from actors.store.schema import StoredUtterance
from protocol.native import Error, Final
from service.session.ports import SessionHooks, SessionInfo

MAX_FOLLOWERS = 16  # at once, per session
QUEUE_SIZE = 64  # finals a follower may be behind before it is dropped


class TooManyFollowers(Exception):
    """The session has as many followers as it takes."""


@attrs.define(eq=False)
class Following:
    """One follower of one live session: its queue of finals; closed when the session ends or
    when the follower was dropped (`dropped`). Leave it with `with` (or `close()`)."""

    feed: Feed
    send: trio.MemorySendChannel[StoredUtterance]
    receive: trio.MemoryReceiveChannel[StoredUtterance]
    dropped: bool = False

    def close(self) -> None:
        self.feed.followers.discard(self)
        self.send.close()
        self.receive.close()

    def __enter__(self) -> Following:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


@attrs.define
class Feed:
    """One live session's followers."""

    followers: set[Following] = attrs.field(factory=set)

    def publish(self, utterance: StoredUtterance) -> None:
        for follower in list(self.followers):
            try:
                follower.send.send_nowait(utterance)
            except trio.WouldBlock:  # too slow: dropped, never waited on
                follower.dropped = True
                self.followers.discard(follower)
                follower.send.close()
            except trio.ClosedResourceError:  # gone
                self.followers.discard(follower)

    def end(self) -> None:
        for follower in list(self.followers):
            follower.send.close()
        self.followers.clear()


@attrs.define
class Feeds:
    """The live sessions' feeds, by session id."""

    max_followers: int = MAX_FOLLOWERS
    queue_size: int = QUEUE_SIZE
    _feeds: dict[str, Feed] = attrs.field(factory=dict)

    def open(self, session_id: str) -> Feed | None:
        """A new feed for `session_id`; None where one is open already (another session's: an
        id's feed is its owner's, never joined)."""
        if session_id in self._feeds:
            return None
        feed = self._feeds[session_id] = Feed()
        return feed

    def close(self, session_id: str, feed: Feed) -> None:
        """End `feed`, and forget it if it is `session_id`'s (never another session's)."""
        if self._feeds.get(session_id) is feed:
            del self._feeds[session_id]
        feed.end()

    def follow(self, session_id: str) -> Following | None:
        """Follow a live session (None: it is not live here); `TooManyFollowers`."""
        feed = self._feeds.get(session_id)
        if feed is None:
            return None
        if len(feed.followers) >= self.max_followers:
            raise TooManyFollowers(session_id)
        send, receive = trio.open_memory_channel[StoredUtterance](self.queue_size)
        following = Following(feed, send, receive)
        feed.followers.add(following)
        return following

    def hooks(self, inner: SessionHooks) -> FeedHooks:
        return FeedHooks(inner, self)


class FeedHooks:
    """A session's store hooks that also publish each stored final to its followers."""

    def __init__(self, inner: SessionHooks, feeds: Feeds) -> None:
        self._inner, self._feeds = inner, feeds
        self._session_id = ""
        self._feed = Feed()

    async def started(self, session: SessionInfo) -> Error | None:
        """The inner hooks' `started` first: the feed opens once the session's row is in (an id
        that is another session's raises, `AlreadyStored`, and opens nothing)."""
        notice = await self._inner.started(session)
        self._session_id = session.session_id
        feed = self._feeds.open(session.session_id)
        self._feed = Feed() if feed is None else feed  # an id live here already: unfollowed
        return notice

    async def audio(self, samples: Samples) -> Error | None:
        return await self._inner.audio(samples)

    async def final(self, frame: Final) -> Error | None:
        notice = await self._inner.final(frame)
        self._feed.publish(StoredUtterance.from_final(frame))
        return notice

    async def ended(self, reason: str, duration_s: float) -> None:
        try:
            await self._inner.ended(reason, duration_s)
        finally:
            self._feeds.close(self._session_id, self._feed)
