"""Helpers of the long-task tests: an LLM server in tool mode, a worker on it, waits."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

from redis.asyncio import Redis
from temporalio.client import Client, WorkflowHandle
from temporalio.worker import Worker

from activities.provider import make_client
from longtask.agent import AgentStatus
from longtask.checkpoints import Checkpoint, checkpoint_key, latest_key
from longtask.settings import Settings
from worker import build_worker

# Retries in seconds, not a minute (the numbers themselves are pinned in test_policies.py).
FAST_POLICY = {"backoff_first_seconds": 1.0, "backoff_max_seconds": 4.0}


@asynccontextmanager
async def running_worker(client: Client, settings: Settings, redis: Redis) -> AsyncIterator[Worker]:
    """A worker of every workflow and activity, in this process, on ``settings``."""
    llm = make_client(settings.llm_base_url, settings.llm_api_key.get_secret_value())
    worker = build_worker(client, settings, llm, redis)
    async with worker:
        yield worker
    await llm.close()


async def wait_for(
    handle: WorkflowHandle[Any, Any],
    condition: Callable[[AgentStatus], bool],
    seconds: float = 60,
) -> AgentStatus:
    """Poll the task's ``status`` query until ``condition`` holds (bounded)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + seconds
    last: AgentStatus | None = None
    problem: Exception | None = None
    while loop.time() < deadline:
        try:
            last = await handle.query("status", result_type=AgentStatus)
        except Exception as error:
            last, problem = None, error  # not started yet, or between workers
        if last is not None and condition(last):
            return last
        await asyncio.sleep(0.2)
    raise TimeoutError(
        f"condition not met within {seconds} s; last status: {last}; last error: {problem!r}"
    )


async def latest_checkpoint(redis: Redis, task_id: str) -> Checkpoint | None:
    latest = await redis.get(latest_key(task_id))
    if latest is None:
        return None
    raw = await redis.get(checkpoint_key(str(latest)))
    return Checkpoint.model_validate_json(raw) if raw else None
