"""A step's wait before it may call its provider again, kept in Redis the moment it fails.

The wait (the provider's Retry-After, or the backoff) also goes into the step's ledger in the
heartbeat details, but those leave the worker a beat later; a worker killed in between hands
the step to one that would call at once, sooner than the provider asked. A key written before
the failure is raised closes that gap; a new attempt reads it before its first call. Best
effort: with Redis away, the heartbeat details are all there is.

Key: ``ltm:hold:{task}:{document}:{step}`` -> the wall-clock time (epoch seconds) before which
the step makes no call; it expires a second after that time. No secret goes in it.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import time

from redis.asyncio import Redis
from redis.exceptions import RedisError

HOLD_PREFIX = "ltm:hold"
# Never hold a failing step or a starting one up for long on a slow Redis.
HOLD_IO_SECONDS = 0.5


def hold_key(task_id: str, document: int, step: str) -> str:
    return f"{HOLD_PREFIX}:{task_id}:{document}:{step}"


async def keep_hold(redis: Redis, key: str, not_before: float) -> None:
    ttl = max(1, math.ceil(not_before - time.time()) + 1)
    with contextlib.suppress(RedisError, OSError, TimeoutError):
        await asyncio.wait_for(redis.set(key, f"{not_before:.3f}", ex=ttl), HOLD_IO_SECONDS)


async def held_until(redis: Redis, key: str) -> float:
    """The time a hold names, or 0.0 when there is none (or Redis cannot say)."""
    try:
        value = await asyncio.wait_for(redis.get(key), HOLD_IO_SECONDS)
    except (RedisError, OSError, TimeoutError):
        return 0.0
    try:
        return float(value) if value else 0.0
    except ValueError:
        return 0.0
