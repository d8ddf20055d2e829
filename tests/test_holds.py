"""A failed step's wait, kept in Redis at once: read back by a new attempt, gone once past."""

from __future__ import annotations

import asyncio
import time

from redis.asyncio import Redis

from activities.holds import held_until, hold_key, keep_hold
from longtask.tooling.servers import RedisServer


async def test_a_hold_is_read_back_until_it_expires(redis: Redis) -> None:
    key = hold_key("task-holds", 3, "summarize")
    assert key == "ltm:hold:task-holds:3:summarize"
    assert await held_until(redis, key) == 0.0
    not_before = time.time() + 0.5
    await keep_hold(redis, key, not_before)
    assert abs(await held_until(redis, key) - not_before) < 0.01
    # It expires a second after the time it names: no key outlives its use.
    assert 0 < await redis.ttl(key) <= 2
    await asyncio.sleep(2.2)
    assert await held_until(redis, key) == 0.0


async def test_a_redis_that_is_away_costs_a_step_half_a_second_at_most(
    own_redis: RedisServer,
) -> None:
    away = Redis.from_url(own_redis.url)
    own_redis.stop()
    started = time.monotonic()
    key = hold_key("task-holds", 1, "reason")
    await keep_hold(away, key, time.time() + 5)
    assert await held_until(away, key) == 0.0
    assert time.monotonic() - started < 1.5
    await away.aclose()
