"""Back-pressure on a worker's provider calls: new calls start only while its event loop keeps
time, so a busy worker keeps heartbeating instead of looking dead.

Every call in flight costs the event loop work (sending, parsing each chunk); past what the
process gets of the CPU, the loop falls behind and the heartbeats of every activity on the
worker come late. A probe measures how late a short sleep wakes up; while that lag is over
``max_lag_seconds``, calls beyond ``always_admitted`` wait, in order, and are let in a few at a
time once the loop catches up. Calls in flight are never held up.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

PROBE_SECONDS = 0.05
# Calls let in per probe while the loop keeps time: a burst would be measured only after it.
ADMITTED_PER_PROBE = 4


class LoopPressure:
    """A gate for a worker's provider calls, open while its event loop keeps time."""

    def __init__(self, max_lag_seconds: float, always_admitted: int = 8) -> None:
        self._max_lag = max_lag_seconds
        self._always = always_admitted
        self._in_flight = 0
        self._lag = 0.0
        self._waiting: deque[asyncio.Future[None]] = deque()
        self._probe: asyncio.Task[None] | None = None
        self.waits = 0  # calls that had to wait, for tests and metrics

    @property
    def lag_seconds(self) -> float:
        return self._lag

    @asynccontextmanager
    async def slot(self) -> AsyncIterator[None]:
        """Hold a place for one call; wait for the loop to catch up if it is behind."""
        self._start_probe()
        if self._waiting or not self._may_start():
            self.waits += 1
            admitted: asyncio.Future[None] = asyncio.get_running_loop().create_future()
            self._waiting.append(admitted)
            await admitted
        self._in_flight += 1
        try:
            yield
        finally:
            self._in_flight -= 1
            self._admit(1 if self._in_flight < self._always else 0)

    def _may_start(self) -> bool:
        return self._in_flight < self._always or self._lag <= self._max_lag

    def _admit(self, count: int) -> None:
        while count > 0 and self._waiting:
            waiter = self._waiting.popleft()
            if not waiter.done():  # a waiter cancelled meanwhile takes no place
                waiter.set_result(None)
                count -= 1

    def _start_probe(self) -> None:
        if self._probe is None or self._probe.done():
            self._probe = asyncio.create_task(self._measure())

    async def _measure(self) -> None:
        """Measure the lag while calls run or wait; stop when the worker is idle."""
        loop = asyncio.get_running_loop()
        while self._in_flight or self._waiting:
            started = loop.time()
            await asyncio.sleep(PROBE_SECONDS)
            self._lag = max(0.0, loop.time() - started - PROBE_SECONDS)
            if self._lag <= self._max_lag:
                self._admit(ADMITTED_PER_PROBE)
            elif self._in_flight < self._always:
                self._admit(self._always - self._in_flight)
        self._lag = 0.0
