"""Hang limits that learn each model's pace from the answers every worker observes.

A model that answers in 0.3 s should have a stall caught in seconds; a thinking model needs
its minute. Each worker keeps the times it saw (to the first chunk, and the longest gap between
chunks of one answer) and, at most every ``REFRESH_SECONDS`` per model and task type, pushes
them to a Redis list shared by all workers and reads the newest ``SAMPLES_KEPT`` back. Once
``LEARN_AFTER`` are known, the limit is the policy's ``learned_limit`` of their p99. Only
answers that arrived are observed, so a stall never widens a limit. Redis down: the configured
limits, and the call goes on.
"""

from __future__ import annotations

import asyncio
import logging
import math
from dataclasses import dataclass, field
from enum import StrEnum

from redis.asyncio import Redis

from activities.provider import CallLimits
from longtask.policies import TaskType, TimeoutPolicy

log = logging.getLogger(__name__)

SAMPLES_KEPT = 200
LEARN_AFTER = 20
REFRESH_SECONDS = 5.0
# Long enough to outlive a quiet night, short enough that a model no one calls leaves no trace.
KEY_TTL_SECONDS = 7 * 24 * 3600
# A refresh is advisory: it never holds a call up for longer than this.
REDIS_SECONDS = 2.0


class Measure(StrEnum):
    FIRST_CHUNK = "first_chunk"
    SILENCE = "silence"


def latency_key(model: str, task_type: TaskType, measure: Measure) -> str:
    """``ltm:latency:{model}:{task_type}:{measure}``: a list of seconds, newest first."""
    return f"ltm:latency:{model}:{task_type.value}:{measure.value}"


def p99(samples: list[float]) -> float:
    ordered = sorted(samples)
    return ordered[math.ceil(0.99 * len(ordered)) - 1]


@dataclass
class _Series:
    """What this worker saw of one model, task type and measure, and what all workers saw."""

    pending: list[float] = field(default_factory=list)
    shared: list[float] = field(default_factory=list)

    @property
    def observed_p99(self) -> float | None:
        return p99(self.shared) if len(self.shared) >= LEARN_AFTER else None


class LatencyBook:
    """Per worker: the learned limits, refreshed from Redis in the background."""

    def __init__(self, redis: Redis | None) -> None:
        self._redis = redis
        self._series: dict[tuple[str, TaskType, Measure], _Series] = {}
        self._refreshed: dict[tuple[str, TaskType], float] = {}
        self._refreshing: dict[tuple[str, TaskType], asyncio.Task[None]] = {}
        self._redis_down = False
        # Models and task types whose shared figures were read once (or Redis failed to).
        self._learned: set[tuple[str, TaskType]] = set()

    def _of(self, model: str, task_type: TaskType, measure: Measure) -> _Series:
        return self._series.setdefault((model, task_type, measure), _Series())

    async def limits(
        self, policy: TimeoutPolicy, task_type: TaskType, model: str, attempt: int
    ) -> CallLimits:
        """The limits of attempt ``attempt`` (0-based) of a call to ``model``.

        The first call of a model waits for what other workers learned (``REDIS_SECONDS`` at
        most); later ones use what is known and refresh it in the background.
        """
        if policy.learn_hang_limits:
            refreshing = self._refresh_if_due(model, task_type)
            if refreshing is not None and (model, task_type) not in self._learned:
                await asyncio.wait([refreshing], timeout=REDIS_SECONDS)
        configured = policy.configured_hang_limits(task_type, model)
        first = policy.learned_limit(
            configured.first_chunk_seconds,
            self._of(model, task_type, Measure.FIRST_CHUNK).observed_p99,
        )
        silence = policy.learned_limit(
            configured.silence_seconds, self._of(model, task_type, Measure.SILENCE).observed_p99
        )
        return CallLimits(
            total=policy.attempt_timeout(task_type, attempt),
            first_chunk=policy.first_chunk_limit(task_type, attempt, first),
            stall=silence,
        )

    def observe(
        self, model: str, task_type: TaskType, first_chunk: float, longest_gap: float | None
    ) -> None:
        """An answer that arrived: its time to the first chunk (an embedding: to the whole
        answer) and its longest gap between chunks (None when it came in one piece)."""
        self._of(model, task_type, Measure.FIRST_CHUNK).pending.append(first_chunk)
        if longest_gap is not None:
            self._of(model, task_type, Measure.SILENCE).pending.append(longest_gap)

    async def refresh(self, model: str, task_type: TaskType) -> None:
        """Push what this worker saw, read back what every worker saw; Redis down: forget
        what was learned, so the configured limits apply."""
        self._refreshed[(model, task_type)] = asyncio.get_running_loop().time()
        measures = list(Measure)
        series = [self._of(model, task_type, measure) for measure in measures]
        pushed = [list(s.pending) for s in series]
        for s in series:
            s.pending.clear()
        if self._redis is None:
            return
        try:
            async with asyncio.timeout(REDIS_SECONDS):
                async with self._redis.pipeline(transaction=False) as pipe:
                    for measure, samples in zip(measures, pushed, strict=True):
                        key = latency_key(model, task_type, measure)
                        if samples:
                            pipe.lpush(key, *(f"{seconds:.3f}" for seconds in samples))
                            pipe.ltrim(key, 0, SAMPLES_KEPT - 1)
                            pipe.expire(key, KEY_TTL_SECONDS)
                        pipe.lrange(key, 0, SAMPLES_KEPT - 1)
                    replies = await pipe.execute()
        except Exception as error:  # any Redis trouble: advisory data, never a failed call
            if not self._redis_down:
                log.warning("learned limits unavailable, using the configured ones: %s", error)
            self._redis_down = True
            for s in series:
                s.shared = []
            return
        finally:
            self._learned.add((model, task_type))
        if self._redis_down:
            log.info("learned limits available again")
        self._redis_down = False
        ranges = [reply for reply in replies if isinstance(reply, list)]
        for s, values in zip(series, ranges, strict=True):
            s.shared = [float(value) for value in values]

    def _refresh_if_due(self, model: str, task_type: TaskType) -> asyncio.Task[None] | None:
        """The refresh under way for this model and task type, started now if it is due."""
        key = (model, task_type)
        now = asyncio.get_running_loop().time()
        running = self._refreshing.get(key)
        if running is not None and not running.done():
            return running
        if now - self._refreshed.get(key, -math.inf) < REFRESH_SECONDS:
            return None
        self._refreshing[key] = asyncio.create_task(self.refresh(model, task_type))
        return self._refreshing[key]

    async def close(self) -> None:
        """Wait for refreshes under way, so none is left behind at shutdown."""
        running = [task for task in self._refreshing.values() if not task.done()]
        if running:
            await asyncio.gather(*running, return_exceptions=True)
