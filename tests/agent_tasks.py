"""A long task of the tests' own, loaded by module path like a user's: its tools fail on
purpose, to show each tool's own retry policy and non-retryable errors at work."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel
from temporalio import workflow
from temporalio.exceptions import ActivityError

with workflow.unsafe.imports_passed_through():
    from longtask.agent import (
        LongTask,
        LongTaskInput,
        TaskContext,
        ToolCall,
        ToolEnv,
        long_task,
        tool,
    )


class Attempt(BaseModel):
    name: str


class RefusedError(Exception):
    """An error no retry can change."""


def count_run(env: ToolEnv, name: str) -> int:
    """How many times a tool ran for ``name``, this run included (kept in the task's folder)."""
    env.workdir.mkdir(parents=True, exist_ok=True)
    marker = env.workdir / f"{name}.runs"
    runs = int(marker.read_text()) + 1 if marker.exists() else 1
    marker.write_text(str(runs))
    return runs


@tool("flaky_count", timeout=10, max_attempts=3, retry_seconds=0.2)
def flaky_count(args: Attempt, env: ToolEnv) -> int:
    """Fails twice, then answers how many times it ran."""
    runs = count_run(env, args.name)
    if runs < 3:
        raise ConnectionError(f"run {runs} of {args.name} fails")
    return runs


@tool("refusing", timeout=10, max_attempts=5, retry_seconds=0.2, non_retryable=[RefusedError])
def refusing(args: Attempt, env: ToolEnv) -> int:
    """Refuses every time: a non-retryable error."""
    count_run(env, args.name)
    raise RefusedError(f"{args.name} is refused")


class ToolCheck(BaseModel):
    flaky_runs: int
    refused: str
    conversation: list[dict[str, Any]]


@long_task(name="ToolCheck")
class ToolCheckTask(LongTask):
    async def work(self, ctx: TaskContext, request: LongTaskInput) -> ToolCheck:
        runs = await ctx.call_tool(flaky_count, Attempt(name="a"))
        try:
            await ctx.call_tool(refusing, Attempt(name="b"))
            refused = ""
        except ActivityError as error:
            refused = str(error.cause)
        # Tools a model asked for that fail for good, or do not exist, answer with the error.
        asked = [
            ToolCall(id="c1", name="refusing", arguments='{"name": "c"}'),
            ToolCall(id="c2", name="missing"),
        ]
        await ctx.run_tool_calls(asked, [refusing])
        return ToolCheck(flaky_runs=runs, refused=refused, conversation=ctx.messages)


class Square(BaseModel):
    number: int


@tool("square", timeout=10, max_attempts=2)
async def square(args: Square) -> int:
    """The number squared."""
    return args.number * args.number


class FanOut(LongTaskInput):
    numbers: list[int]
    concurrency: int = 3


@long_task(name="FanOutCheck")
class FanOutTask(LongTask):
    async def work(self, ctx: TaskContext, request: FanOut) -> list[int]:
        progress = ctx.progress.total(len(request.numbers))

        async def one(number: int) -> int:
            squared: int = await ctx.call_tool(square, Square(number=number))
            progress.advance()
            return squared

        return await ctx.map(request.numbers, one, concurrency=request.concurrency)
