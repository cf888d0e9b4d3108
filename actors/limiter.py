"""The rate limiter actor: recordings (new sessions and uploads) per client per minute/hour/day.

Ownership: `open_limiter()` yields a `LimiterHandle`; with a `REDIS_URL` it also owns one task,
`_probe`, that pings Redis every `probe_every_s` so that health follows Redis even without
traffic. Leaving the `async with` cancels the probe and closes the Redis connections.

Counting is a sliding log: each allowed recording is a timestamp; a client is refused when a
window already holds its limit, and `retry_after` is when the oldest of those leaves the window.
Refused attempts are not counted. In memory (the default) the log is a sorted list per client,
at most `max(limit)` entries each; clients idle for a day are swept. With Redis, one sorted set
per client is updated by one Lua script (atomic, timed by Redis's own clock), so every replica
shares one count. Redis runs through the sync client in worker threads (`trio.to_thread`, own
`CapacityLimiter`), never on the trio loop.

When Redis fails the limiter keeps answering and says so (`healthy`, `statistics()`, a log line
on each change). `CHORUS_LIMITS_FAIL=open` (default) counts in this replica's memory until
Redis is back (every decision is also recorded locally, so the fallback starts warm);
`closed` refuses new recordings with 503 until Redis answers again.
"""

from __future__ import annotations

import logging
import uuid
from bisect import bisect_right
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING, Any, Literal

import attrs
import trio

if TYPE_CHECKING:
    import redis

log = logging.getLogger("chorus.limiter")
FailPolicy = Literal["open", "closed"]
WINDOWS = (("minute", 60.0), ("hour", 3600.0), ("day", 86400.0))
_SWEEP_EVERY = 1024

# KEYS[1]: the client's sorted set; ARGV[1]: a unique member; then (window_s, limit) pairs.
# Returns {allowed, seconds to wait as a string, index of the refusing window (1-based) or 0}.
_SCRIPT = """
local now = redis.call('TIME')
now = tonumber(now[1]) + tonumber(now[2]) / 1000000
local longest = 0
for i = 2, #ARGV, 2 do longest = math.max(longest, tonumber(ARGV[i])) end
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now - longest)
local wait, refusing = 0, 0
for i = 2, #ARGV, 2 do
  local window, limit = tonumber(ARGV[i]), tonumber(ARGV[i + 1])
  local since = '(' .. string.format('%.6f', now - window)
  local count = redis.call('ZCOUNT', KEYS[1], since, '+inf')
  if count >= limit then
    local oldest = redis.call('ZRANGEBYSCORE', KEYS[1], since, '+inf', 'WITHSCORES',
                              'LIMIT', count - limit, 1)
    local this_wait = tonumber(oldest[2]) + window - now
    if this_wait >= wait then wait, refusing = this_wait, i / 2 end
  end
end
if refusing > 0 then return {0, string.format('%.6f', wait), refusing} end
redis.call('ZADD', KEYS[1], now, ARGV[1])
redis.call('PEXPIRE', KEYS[1], math.ceil(longest * 1000))
return {1, '0', 0}
"""


def _count(environ: Mapping[str, str], name: str) -> int:
    text = environ.get(name, "").strip()
    if not text:
        return 0
    try:
        value = int(text)
    except ValueError:
        raise ValueError(f"{name} must be a whole number, not {text!r}") from None
    if value < 0:
        raise ValueError(f"{name} must not be negative")
    return value


@attrs.frozen
class RateLimits:
    """Allowed recordings per client; 0 means no limit for that window."""

    per_minute: int = 0
    per_hour: int = 0
    per_day: int = 0

    @property
    def windows(self) -> tuple[tuple[str, float, int], ...]:
        limits = (self.per_minute, self.per_hour, self.per_day)
        return tuple((name, s, n) for (name, s), n in zip(WINDOWS, limits, strict=True) if n)


@attrs.frozen
class LimiterConfig:
    limits: RateLimits = attrs.field(factory=RateLimits)
    redis_url: str | None = None
    fail: FailPolicy = "open"
    probe_every_s: float = 5.0
    key_prefix: str = "chorus:recordings:"

    @classmethod
    def from_env(cls, environ: Mapping[str, str]) -> LimiterConfig:
        """`MAX_RECORDINGS_PER_{MINUTE,HOUR,DAY}`, `REDIS_URL`, `CHORUS_LIMITS_FAIL`."""
        fail = environ.get("CHORUS_LIMITS_FAIL", "open").strip().lower() or "open"
        if fail not in ("open", "closed"):
            raise ValueError(f"CHORUS_LIMITS_FAIL must be open or closed, not {fail!r}")
        limits = RateLimits(
            per_minute=_count(environ, "MAX_RECORDINGS_PER_MINUTE"),
            per_hour=_count(environ, "MAX_RECORDINGS_PER_HOUR"),
            per_day=_count(environ, "MAX_RECORDINGS_PER_DAY"),
        )
        redis_url = environ.get("REDIS_URL", "").strip() or None
        return cls(limits=limits, redis_url=redis_url, fail="open" if fail == "open" else "closed")


@attrs.frozen
class Decision:
    """Whether a client may start one more recording; refused ones say when to come back."""

    allowed: bool
    retry_after: int = 0
    window: str | None = None
    reason: Literal["ok", "limit", "unavailable"] = "ok"
    degraded: bool = False  # decided without the shared count (Redis is down)

    @property
    def status_code(self) -> int:
        """What the HTTP answer should be: 200, 429 (over the limit) or 503 (fail closed)."""
        return {"ok": 200, "limit": 429, "unavailable": 503}[self.reason]


ALLOWED = Decision(allowed=True)


@attrs.frozen
class LimiterStatistics:
    backend: Literal["memory", "redis"]
    healthy: bool
    fail_policy: FailPolicy
    allowed: int
    refused: int
    degraded: int
    errors: int
    last_error: str | None
    clients: int


class _LocalLog:
    """The sliding log in this process (monotonic trio time)."""

    def __init__(self, windows: tuple[tuple[str, float, int], ...]) -> None:
        self._windows = windows
        self._longest = max((seconds for _, seconds, _ in windows), default=0.0)
        self._hits: dict[str, list[float]] = {}
        self._since_sweep = 0

    def __len__(self) -> int:
        return len(self._hits)

    def check(self, client: str, now: float) -> Decision:
        times = self._hits.get(client, [])
        del times[: bisect_right(times, now - self._longest)]
        wait, refusing = 0.0, None
        for name, seconds, limit in self._windows:
            inside = len(times) - bisect_right(times, now - seconds)
            if inside >= limit and times[len(times) - limit] + seconds - now >= wait:
                wait, refusing = times[len(times) - limit] + seconds - now, name
        if refusing is not None:
            return Decision(False, _whole_seconds(wait), refusing, "limit")
        return ALLOWED

    def record(self, client: str, now: float) -> None:
        self._hits.setdefault(client, []).append(now)
        self._since_sweep += 1
        if self._since_sweep >= _SWEEP_EVERY:
            self._since_sweep = 0
            cutoff = now - self._longest
            idle = [name for name, times in self._hits.items() if not times or times[-1] <= cutoff]
            for name in idle:
                del self._hits[name]


def _whole_seconds(wait: float) -> int:
    return max(1, int(wait) + (wait > int(wait)))


class _RedisLog:
    """The shared sliding log; every method blocks (call from a worker thread)."""

    def __init__(self, config: LimiterConfig) -> None:
        import redis  # only needed with REDIS_URL
        from redis.backoff import NoBackoff
        from redis.retry import Retry

        assert config.redis_url is not None
        self.errors: tuple[type[Exception], ...] = (redis.RedisError, OSError)
        self._client: redis.Redis = redis.Redis.from_url(
            config.redis_url,
            socket_timeout=2.0,
            socket_connect_timeout=2.0,
            retry=Retry(NoBackoff(), 1),  # one retry: a pooled connection may predate a restart
        )
        self._script = self._client.register_script(_SCRIPT)
        self._prefix = config.key_prefix
        self._windows = config.limits.windows
        self._args = [str(x) for _, seconds, limit in self._windows for x in (seconds, limit)]

    def check_and_record(self, client: str) -> Decision:
        member = uuid.uuid4().hex
        reply: Any = self._script(keys=[self._prefix + client], args=[member, *self._args])
        allowed, wait, refusing = int(reply[0]), float(reply[1]), int(reply[2])
        if allowed:
            return ALLOWED
        return Decision(False, _whole_seconds(wait), self._windows[refusing - 1][0], "limit")

    def ping(self) -> None:
        self._client.ping()

    def close(self) -> None:
        self._client.close()


class LimiterHandle:
    """What callers hold: `await limiter.hit(client)` before starting a recording."""

    def __init__(self, config: LimiterConfig, shared: _RedisLog | None) -> None:
        self.config = config
        self._local = _LocalLog(config.limits.windows)
        self._shared = shared
        self._threads = trio.CapacityLimiter(8)
        self._healthy = True
        self._counts = {"allowed": 0, "refused": 0, "degraded": 0, "errors": 0}
        self._last_error: str | None = None

    @property
    def healthy(self) -> bool:
        """False while the shared backend (Redis) is unreachable."""
        return self._healthy

    async def hit(self, client: str) -> Decision:
        """Count one recording for `client` if a window has room; otherwise say why not."""
        if not self.config.limits.windows:
            return ALLOWED
        decision = None
        if self._shared is not None and self._healthy:
            try:
                decision = await trio.to_thread.run_sync(
                    self._shared.check_and_record, client, limiter=self._threads
                )
            except self._shared.errors as error:
                self._set_health(False, error)
        if decision is None and self._shared is not None:
            self._counts["degraded"] += 1
            if self.config.fail == "closed":
                retry = _whole_seconds(self.config.probe_every_s)
                decision = Decision(False, retry, None, "unavailable", degraded=True)
        now = trio.current_time()
        if decision is None:
            decision = attrs.evolve(
                self._local.check(client, now), degraded=self._shared is not None
            )
        if decision.allowed:
            self._local.record(client, now)  # kept warm for a fallback when Redis is in use
        self._counts["allowed" if decision.allowed else "refused"] += 1
        return decision

    async def probe(self) -> bool:
        """Ping Redis now; updates and returns `healthy` (always True without Redis)."""
        if self._shared is None:
            return True
        try:
            await trio.to_thread.run_sync(self._shared.ping, limiter=self._threads)
        except self._shared.errors as error:
            self._set_health(False, error)
        else:
            self._set_health(True)
        return self._healthy

    def _set_health(self, healthy: bool, error: Exception | None = None) -> None:
        if error is not None:
            self._counts["errors"] += 1
            self._last_error = f"{type(error).__name__}: {error}"
        if healthy != self._healthy:
            if healthy:
                log.warning("rate limits: Redis is reachable again; counts are shared again")
            else:
                policy = "counting locally" if self.config.fail == "open" else "refusing"
                log.error("rate limits: Redis unreachable (%s); %s", self._last_error, policy)
        self._healthy = healthy

    def statistics(self) -> LimiterStatistics:
        return LimiterStatistics(
            backend="memory" if self._shared is None else "redis",
            healthy=self._healthy,
            fail_policy=self.config.fail,
            last_error=self._last_error,
            clients=len(self._local),
            **self._counts,
        )


@asynccontextmanager
async def open_limiter(config: LimiterConfig) -> AsyncIterator[LimiterHandle]:
    """Start the limiter; with a Redis URL, check it once and keep probing it."""
    shared = _RedisLog(config) if config.redis_url and config.limits.windows else None
    handle = LimiterHandle(config, shared)
    try:
        async with trio.open_nursery() as nursery:
            if shared is not None:
                await handle.probe()
                nursery.start_soon(_probe, handle, config.probe_every_s)
            yield handle
            nursery.cancel_scope.cancel()
    finally:
        if shared is not None:
            with trio.CancelScope(shield=True):
                await trio.to_thread.run_sync(shared.close)


async def _probe(handle: LimiterHandle, every_s: float) -> None:
    while True:
        await trio.sleep(every_s)
        await handle.probe()
