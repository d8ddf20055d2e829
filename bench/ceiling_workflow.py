"""The dev server's ceiling: a workflow of trivial activities, as many in flight as asked; and
one of short timers, to time them.

Its own module, importing only temporalio, so the workflow sandbox loads it cheaply.
"""

from __future__ import annotations

import asyncio
from datetime import timedelta

from temporalio import activity, workflow
from temporalio.common import RetryPolicy
from temporalio.exceptions import ApplicationError, ApplicationErrorCategory

CEILING_ACTIVITY_TIMEOUT = timedelta(seconds=30)


@activity.defn(name="bench_trivial")
async def trivial(index: int) -> int:
    """Does nothing but round-trip through the server: a step with no work in it."""
    return index


@workflow.defn(name="BenchCeiling")
class CeilingWorkflow:
    @workflow.run
    async def run(self, activities: int, in_flight: int) -> int:
        slots = asyncio.Semaphore(in_flight)

        async def one(index: int) -> int:
            async with slots:
                return await workflow.execute_activity(
                    trivial, index, start_to_close_timeout=CEILING_ACTIVITY_TIMEOUT
                )

        done = await asyncio.gather(*(one(i) for i in range(activities)))
        return len(done)


@activity.defn(name="bench_fails_first")
async def fails_first(retries: int) -> None:
    """Fails its first ``retries`` attempts: each retry waits on the server's retry timer."""
    if activity.info().attempt <= retries:
        raise ApplicationError("fails on purpose", category=ApplicationErrorCategory.BENIGN)


@workflow.defn(name="BenchTimers")
class TimersWorkflow:
    """Short timers, one after another, then an activity retried on a short interval."""

    @workflow.run
    async def run(self, timers: int, seconds: float, retries: int) -> None:
        for _ in range(timers):
            await asyncio.sleep(seconds)
        if not retries:
            return
        await workflow.execute_activity(
            fails_first,
            retries,
            start_to_close_timeout=CEILING_ACTIVITY_TIMEOUT,
            retry_policy=RetryPolicy(
                initial_interval=timedelta(seconds=seconds), backoff_coefficient=1.0
            ),
        )
