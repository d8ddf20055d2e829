"""A long task that maps one model call over many items: through ``map_calls`` (many calls per
activity) or ``map`` (an activity per call). ``bench/agent_map.py`` times both; a worker loads
it like a user's task (``LTM_TASK_MODULES=bench.map_task``)."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, Field
from temporalio import workflow

with workflow.unsafe.imports_passed_through():
    from longtask.agent import LongTask, LongTaskInput, ModelAnswer, TaskContext, long_task

MAP_TASK = "BenchMap"
BATCH_CALLS = 32


class MapInput(LongTaskInput):
    items: int = Field(ge=1)
    # Many calls per activity (map_calls), or one activity per call (map).
    batched: bool = True
    calls_in_flight: int = Field(64, ge=1)
    # Calls at a time within one batch (map_calls).
    call_concurrency: int = Field(BATCH_CALLS, ge=1)


class MapOutcome(BaseModel):
    answered: int
    characters: int


def prompt(item: int) -> list[dict[str, Any]]:
    return [{"role": "user", "content": f"Summarize item {item} in one line."}]


@long_task(name=MAP_TASK)
class BenchMap(LongTask):
    async def work(self, ctx: TaskContext, request: MapInput) -> MapOutcome:
        prompts = [prompt(item) for item in range(request.items)]
        progress = ctx.progress.total(request.items)
        if request.batched:
            answers = await ctx.map_calls(
                prompts,
                batch_size=BATCH_CALLS,
                batches_in_flight=max(request.calls_in_flight // BATCH_CALLS, 1),
                call_concurrency=request.call_concurrency,
                progress=progress,
            )
        else:

            async def one(messages: list[dict[str, Any]]) -> ModelAnswer:
                answer = await ctx.call_model(messages, step="map")
                progress.advance()
                return answer

            answers = await ctx.map(prompts, one, concurrency=request.calls_in_flight)
        return MapOutcome(
            answered=sum(1 for answer in answers if answer.text),
            characters=sum(len(answer.text) for answer in answers),
        )
