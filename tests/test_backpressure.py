"""Back-pressure on provider calls: a new call waits while the event loop runs late."""

from __future__ import annotations

import asyncio
import time

from activities.backpressure import LoopPressure


async def test_a_new_call_waits_while_the_loop_runs_late_and_starts_once_it_keeps_time() -> None:
    pressure = LoopPressure(max_lag_seconds=0.2, always_admitted=1)
    release = asyncio.Event()
    busy = True

    async def running_call() -> None:
        async with pressure.slot():
            await release.wait()

    def hold_the_loop() -> None:
        # CPU-bound work on the loop: every probe wakes 0.5 s late while it lasts.
        if busy:
            time.sleep(0.5)
            asyncio.get_running_loop().call_soon(hold_the_loop)

    first = asyncio.create_task(running_call())
    await asyncio.sleep(0)
    asyncio.get_running_loop().call_soon(hold_the_loop)
    # Wait (bounded) until the probe has seen the loop run late.
    for _ in range(50):
        if pressure.lag_seconds > 0.2:
            break
        await asyncio.sleep(0.05)
    assert pressure.lag_seconds > 0.2

    started_while_busy: list[bool] = []

    async def new_call() -> None:
        async with pressure.slot():
            started_while_busy.append(busy)

    second = asyncio.create_task(new_call())
    for _ in range(3):
        await asyncio.sleep(0.05)
    assert started_while_busy == [] and pressure.waits == 1
    busy = False  # the loop keeps time again
    await asyncio.wait_for(second, timeout=30)
    assert started_while_busy == [False]
    release.set()
    await first


async def test_calls_up_to_the_always_admitted_count_never_wait() -> None:
    pressure = LoopPressure(max_lag_seconds=0.0001, always_admitted=3)
    inside = 0
    peak = 0
    gate = asyncio.Event()

    async def call() -> None:
        nonlocal inside, peak
        async with pressure.slot():
            inside += 1
            peak = max(peak, inside)
            await gate.wait()
            inside -= 1

    calls = [asyncio.create_task(call()) for _ in range(3)]
    for _ in range(3):
        await asyncio.sleep(0)
    assert peak == 3 and pressure.waits == 0
    gate.set()
    await asyncio.gather(*calls)
