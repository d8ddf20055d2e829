"""A user's map over many items: model calls per second through ``map_calls`` (many calls
per activity), through ``map`` (an activity per call), and in a bare asyncio loop.

All three make the same calls to the same local LLM server at zero latency, in one run, with
the same number of calls in flight; the figures are calls per second and their ratios.

    python -m bench.agent_map [--items 2000] [--json docs/bench/agent_map.json]
"""

from __future__ import annotations

import asyncio
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any, cast

from pydantic import BaseModel

from activities.provider import CallLimits, chat, make_client
from bench.harness import Workers, bench_parser, measure_on_stack, publish, stack_settings
from bench.map_task import MAP_TASK, MapInput, MapOutcome, prompt
from longtask.agent import TaskOutcome, start_long_task, task_defaults
from longtask.connections import connect_temporal
from longtask.settings import Settings
from longtask.states import TaskState

CALLS_IN_FLIGHT = 64
# The bare loop's calls get the product's first-attempt limits, generous for a local server.
BARE_LIMITS = CallLimits(total=60.0, first_chunk=30.0, stall=30.0)


class MapFigures(BaseModel):
    items: int
    calls_in_flight: int
    bare_calls_per_second: float
    batched_calls_per_second: float
    per_activity_calls_per_second: float
    # map_calls' call rate over the bare loop's (1.0 = as fast).
    batched_over_bare: float
    # map's (an activity per call) over the bare loop's.
    per_activity_over_bare: float
    # map_calls' over map's: what carrying many calls per activity buys.
    batched_over_per_activity: float


async def bare_rate(settings: Settings, items: int) -> float:
    """Calls per second of a plain asyncio loop making the same calls."""
    client = make_client(settings.llm_base_url, settings.llm_api_key.get_secret_value())
    gate = asyncio.Semaphore(CALLS_IN_FLIGHT)
    model = settings.model_intermediate

    async def one(item: int) -> None:
        async with gate:
            await chat(client, model, cast(Any, prompt(item)), BARE_LIMITS)

    started = time.monotonic()
    await asyncio.gather(*(one(item) for item in range(items)))
    seconds = time.monotonic() - started
    await client.close()
    return items / seconds


async def task_rate(settings: Settings, items: int, batched: bool) -> float:
    """Calls per second of the map task, from its start to its outcome."""
    client = await connect_temporal(settings)
    request = MapInput(
        **task_defaults(settings),
        task_id=f"map-{'batched' if batched else 'activities'}-{uuid.uuid4().hex[:8]}",
        items=items,
        batched=batched,
        calls_in_flight=CALLS_IN_FLIGHT,
    )
    started = time.monotonic()
    handle = await start_long_task(client, settings, MAP_TASK, request, MapOutcome)
    outcome: TaskOutcome[MapOutcome] = await handle.result()
    seconds = time.monotonic() - started
    if outcome.state is not TaskState.COMPLETED or outcome.result is None:
        raise RuntimeError(f"the map task ended {outcome.state}: {outcome.reason}")
    if outcome.result.answered != items:
        raise RuntimeError(f"{outcome.result.answered} of {items} items answered")
    return items / seconds


async def measure(settings: Settings, items: int) -> MapFigures:
    bare = await bare_rate(settings, items)
    with Workers(settings, {"LTM_TASK_MODULES": "bench.map_task"}) as workers:
        workers.start()
        # A few calls first, so no figure pays for the worker's start.
        await task_rate(settings, 16, batched=True)
        batched = await task_rate(settings, items, batched=True)
        per_activity = await task_rate(settings, items, batched=False)
    return MapFigures(
        items=items,
        calls_in_flight=CALLS_IN_FLIGHT,
        bare_calls_per_second=round(bare, 1),
        batched_calls_per_second=round(batched, 1),
        per_activity_calls_per_second=round(per_activity, 1),
        batched_over_bare=round(batched / bare, 3),
        per_activity_over_bare=round(per_activity / bare, 3),
        batched_over_per_activity=round(batched / per_activity, 3),
    )


def report(figures: MapFigures) -> str:
    return (
        f"{figures.items} calls, {figures.calls_in_flight} in flight, zero latency:\n"
        f"  bare asyncio loop        {figures.bare_calls_per_second:8.1f} calls/s\n"
        f"  map_calls (batched)      {figures.batched_calls_per_second:8.1f} calls/s"
        f"  = {figures.batched_over_bare:.2f}x bare\n"
        f"  map (activity per call)  {figures.per_activity_calls_per_second:8.1f} calls/s"
        f"  = {figures.per_activity_over_bare:.2f}x bare\n"
        f"  map_calls / map          {figures.batched_over_per_activity:.2f}x"
    )


def main(argv: list[str]) -> int:
    parser = bench_parser("agent_map", __doc__)
    parser.add_argument("--items", type=int, default=2000, help="calls in each job")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="ltm-map-") as folder:
        settings = stack_settings(Path(folder), latency_ms=0, chunk_delay_ms=0)
        figures = measure_on_stack("agent_map", settings, lambda: measure(settings, args.items))
    if figures is None:
        return 1
    return publish(figures, report(figures), args.json)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
