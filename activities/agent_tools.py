"""Runs a long task's tools: each registered tool is an activity named ``tool.NAME``."""

from __future__ import annotations

import asyncio
import inspect
from collections.abc import Callable
from pathlib import Path
from typing import Any

import openai
from pydantic import BaseModel, ValidationError
from redis.asyncio import Redis
from redis.exceptions import RedisError
from temporalio import activity
from temporalio.exceptions import ApplicationError

from activities.agent_calls import CallHeartbeat, heartbeating, limits_for
from activities.errors import provider_message
from activities.provider import embed
from longtask.agent import INVALID_TOOL_ARGUMENTS, Tool, ToolAnswer, ToolRequest
from longtask.checkpoints import CHECKPOINT_TTL_SECONDS
from longtask.cost import CostLedger, TokenUsage
from longtask.policies import TaskType

# Outside readers (and tests) see how often each tool call ran: field "TOOL|CALL_ID".
TOOL_RUNS_WRITE_SECONDS = 2.0


def tool_runs_key(task_id: str) -> str:
    return f"ltm:agent:{task_id}:tool_runs"


class WorkerToolEnv:
    """What a tool gets from its worker: the task, the call, and an embedding model whose
    tokens are booked with the tool's answer."""

    def __init__(
        self, tool: Tool, request: ToolRequest, llm: openai.AsyncOpenAI, workdir: Path
    ) -> None:
        self.task_id = request.task_id
        self.call_id = request.call_id
        self.context = request.context
        self.workdir = workdir
        self._tool = tool
        self._request = request
        self._llm = llm
        self.usage = TokenUsage()
        self.ledger = CostLedger()

    async def embed(self, texts: list[str]) -> list[list[float]]:
        model = self._request.models.get(TaskType.EMBEDDING.value, "")
        policy = self._request.policy
        attempt = activity.info().attempt - 1
        multiplier = policy.multipliers.get(TaskType.EMBEDDING, 1.0)
        limits = limits_for(policy, multiplier, attempt, TaskType.EMBEDDING.value, model)
        vectors, tokens = await embed(self._llm, model, texts, limits)
        self.usage.add(model, tokens, 0)
        self.ledger.record(self._tool.activity_name, model, attempt + 1, "success", tokens)
        return vectors


async def _call(tool: Tool, args: BaseModel, env: WorkerToolEnv) -> Any:
    """Run the tool's function; a plain function runs in a thread, off the event loop that
    heartbeats every activity of this worker."""
    given = (args, env) if tool.wants_env else (args,)
    if inspect.iscoroutinefunction(tool.function):
        return await tool.function(*given)
    return await asyncio.to_thread(tool.function, *given)


class ToolRunner:
    """Builds the activity of each tool, sharing the worker's LLM client and Redis."""

    def __init__(
        self, llm: openai.AsyncOpenAI, api_key: str, state_dir: Path, redis: Redis | None = None
    ) -> None:
        self._llm = llm
        self._api_key = api_key
        self._state_dir = state_dir
        self._redis = redis

    def activities(self, tools: list[Tool]) -> list[Callable[..., Any]]:
        return [self._activity_of(tool) for tool in tools]

    async def _count_run(self, tool: Tool, request: ToolRequest) -> None:
        """Count this run of the call in Redis; advisory, so Redis trouble is ignored."""
        if self._redis is None:
            return
        key = tool_runs_key(request.task_id)
        try:
            async with asyncio.timeout(TOOL_RUNS_WRITE_SECONDS):
                await self._redis.hincrby(key, f"{tool.name}|{request.call_id}", 1)
                await self._redis.expire(key, CHECKPOINT_TTL_SECONDS)
        except (RedisError, OSError, TimeoutError) as problem:
            activity.logger.debug("tool run not counted: %s", problem)

    def _activity_of(self, tool: Tool) -> Callable[..., Any]:
        async def run_tool(request: ToolRequest) -> ToolAnswer:
            await self._count_run(tool, request)
            try:
                args = tool.args_model.model_validate(request.arguments)
            except ValidationError as error:
                raise ApplicationError(
                    f"{tool.name}: arguments refused: {error}",
                    type=INVALID_TOOL_ARGUMENTS,
                    non_retryable=True,
                ) from None
            # Task ids are letters, digits, '.', '_' and '-' (longtask/task_ids.py): a safe name.
            workdir = self._state_dir / "agents" / request.task_id
            env = WorkerToolEnv(tool, request, self._llm, workdir)
            try:
                async with heartbeating(CallHeartbeat(), str):
                    output = await _call(tool, args, env)
            except ApplicationError:
                raise  # the tool said itself how it fails
            except Exception as error:
                # Typed by the exception's class, as the tool's retry policy names them; the
                # text is blanked of the API key should an echoed request carry it.
                name = type(error).__name__
                raise ApplicationError(
                    f"{tool.name}: {provider_message(error, self._api_key)}",
                    type=name,
                    non_retryable=name in tool.non_retryable,
                ) from None
            if isinstance(output, BaseModel):
                output = output.model_dump(mode="json")
            return ToolAnswer(output=output, usage=env.usage, ledger=env.ledger)

        return activity.defn(name=tool.activity_name)(run_tool)
