"""The dev server's ceiling: a workflow of trivial activities, as many in flight as asked.

Its own module, importing only temporalio, so the workflow sandbox loads it cheaply.
"""

from __future__ import annotations

import asyncio
from datetime import timedelta

from temporalio import activity, workflow

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
