"""Recording limits per client: in memory (virtual time) and shared through a real redis-server."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import trio
from support.redis_server import RedisServer, start_redis_server

from actors.limiter import Decision, LimiterConfig, RateLimits, open_limiter


@pytest.fixture
def redis_server(tmp_path: Path) -> Iterator[RedisServer]:
    with start_redis_server(tmp_path) as server:
        yield server


def test_limits_come_from_the_seed_environment_names() -> None:
    assert LimiterConfig.from_env({}) == LimiterConfig()
    assert LimiterConfig.from_env({}).limits.windows == ()
    config = LimiterConfig.from_env(
        {
            "MAX_RECORDINGS_PER_MINUTE": "5",
            "MAX_RECORDINGS_PER_HOUR": "0",
            "MAX_RECORDINGS_PER_DAY": " 100 ",
            "REDIS_URL": "redis://10.0.0.1:6379/2",
            "CHORUS_LIMITS_FAIL": "Closed",
        }
    )
    assert config.limits == RateLimits(per_minute=5, per_hour=0, per_day=100)
    assert config.limits.windows == (("minute", 60.0, 5), ("day", 86400.0, 100))
    assert (config.redis_url, config.fail) == ("redis://10.0.0.1:6379/2", "closed")
    for bad in ({"MAX_RECORDINGS_PER_DAY": "lots"}, {"MAX_RECORDINGS_PER_HOUR": "-1"}):
        with pytest.raises(ValueError, match="MAX_RECORDINGS_PER"):
            LimiterConfig.from_env(bad)
    with pytest.raises(ValueError, match="CHORUS_LIMITS_FAIL"):
        LimiterConfig.from_env({"CHORUS_LIMITS_FAIL": "maybe"})


async def test_in_memory_windows_slide(autojump_clock: trio.testing.MockClock) -> None:
    config = LimiterConfig(limits=RateLimits(per_minute=2, per_hour=3))
    async with open_limiter(config) as limiter:
        assert (await limiter.hit("ip:a")).allowed
        await trio.sleep(10)
        assert (await limiter.hit("ip:a")).allowed
        refused = await limiter.hit("ip:a")
        assert refused == Decision(False, retry_after=50, window="minute", reason="limit")
        assert refused.status_code == 429
        assert (await limiter.hit("ip:b")).allowed  # one client's count is its own
        await trio.sleep(50)
        assert (await limiter.hit("ip:a")).allowed  # the first one left the minute
        refused = await limiter.hit("ip:a")
        assert (refused.window, refused.retry_after) == ("hour", 3600 - 60)
        await trio.sleep(3600)
        assert (await limiter.hit("ip:a")).allowed
        stats = limiter.statistics()
    assert (stats.backend, stats.healthy, stats.allowed, stats.refused) == ("memory", True, 5, 2)
    assert stats.clients == 2


async def test_idle_clients_are_swept(autojump_clock: trio.testing.MockClock) -> None:
    async with open_limiter(LimiterConfig(limits=RateLimits(per_day=5))) as limiter:
        for number in range(1100):
            await limiter.hit(f"ip:old-{number}")
        assert limiter.statistics().clients == 1100
        await trio.sleep(86400)
        for number in range(1024):
            await limiter.hit(f"ip:new-{number}")
        assert limiter.statistics().clients <= 1024  # memory follows the clients of one day


async def test_no_limits_means_no_counting() -> None:
    async with open_limiter(LimiterConfig(redis_url="redis://127.0.0.1:1/0")) as limiter:
        for _ in range(100):
            assert await limiter.hit("ip:a") == Decision(allowed=True)
        assert limiter.statistics().backend == "memory"  # Redis is not even needed


async def test_two_replicas_share_one_count_in_redis(redis_server: RedisServer) -> None:
    config = LimiterConfig(
        limits=RateLimits(per_minute=3, per_day=1000), redis_url=redis_server.url
    )
    async with open_limiter(config) as first, open_limiter(config) as second:
        assert [(await replica.hit("key:k")).allowed for replica in (first, second, first)] == [
            True,
            True,
            True,
        ]
        for replica in (second, first):
            refused = await replica.hit("key:k")
            assert (refused.allowed, refused.window, refused.degraded) == (False, "minute", False)
            assert 1 <= refused.retry_after <= 60
        assert (await second.hit("key:other")).allowed
        assert first.healthy and second.healthy
        assert first.statistics().backend == "redis"


async def test_redis_killed_fail_open_counts_locally_and_health_says_so(
    redis_server: RedisServer,
) -> None:
    config = LimiterConfig(limits=RateLimits(per_minute=3), redis_url=redis_server.url)
    async with open_limiter(config) as limiter:
        assert (await limiter.hit("ip:a")).allowed
        assert (await limiter.hit("ip:a")).allowed
        await trio.to_thread.run_sync(redis_server.kill)
        third = await limiter.hit("ip:a")
        assert (third.allowed, third.degraded) == (True, True)  # served, counted locally
        assert not limiter.healthy
        fourth = await limiter.hit("ip:a")
        assert (fourth.allowed, fourth.reason, fourth.degraded) == (False, "limit", True)
        stats = limiter.statistics()
        assert not stats.healthy and stats.errors >= 1 and stats.degraded == 2
        assert stats.last_error is not None and "Connection" in stats.last_error
        await trio.to_thread.run_sync(redis_server.start)  # back, empty (no persistence)
        assert await limiter.probe()
        decision = await limiter.hit("ip:a")
        assert (decision.allowed, decision.degraded) == (True, False)


async def test_redis_killed_fail_closed_refuses_with_503(redis_server: RedisServer) -> None:
    config = LimiterConfig(
        limits=RateLimits(per_hour=100), redis_url=redis_server.url, fail="closed"
    )
    async with open_limiter(config) as limiter:
        assert (await limiter.hit("ip:a")).allowed
        await trio.to_thread.run_sync(redis_server.kill)
        refused = await limiter.hit("ip:a")
        assert (refused.allowed, refused.reason, refused.status_code) == (False, "unavailable", 503)
        assert refused.retry_after == 5
        assert not (await limiter.hit("ip:new")).allowed


async def test_the_probe_notices_redis_going_away_without_traffic(
    redis_server: RedisServer,
) -> None:
    config = LimiterConfig(
        limits=RateLimits(per_day=10), redis_url=redis_server.url, probe_every_s=0.02
    )
    async with open_limiter(config) as limiter:
        assert limiter.healthy
        await trio.to_thread.run_sync(redis_server.kill)
        with trio.fail_after(20):
            while limiter.healthy:  # noqa: ASYNC110 - the probe runs on a timer
                await trio.sleep(0.01)
        await trio.to_thread.run_sync(redis_server.start)
        with trio.fail_after(20):
            while not limiter.healthy:  # noqa: ASYNC110
                await trio.sleep(0.01)


async def test_redis_down_at_start_up_is_reported_not_fatal(tmp_path: Path) -> None:
    with start_redis_server(tmp_path) as server:
        url = server.url
    config = LimiterConfig(limits=RateLimits(per_minute=1), redis_url=url)  # nobody listens
    async with open_limiter(config) as limiter:
        assert not limiter.healthy
        assert (await limiter.hit("ip:a")).allowed
        assert not (await limiter.hit("ip:a")).allowed
