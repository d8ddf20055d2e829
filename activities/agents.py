"""The activities of long tasks a worker runs: model and embedding calls, and every tool."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import openai
from redis.asyncio import Redis
from temporalio.client import Client

import activities.research_tools  # noqa: F401 - registers the research agent's tools
from activities.agent_batch import ModelBatches
from activities.agent_calls import AgentCalls
from activities.agent_tools import ToolRunner
from activities.latency import LatencyBook
from activities.rate_limits import SharedRateLimiter
from longtask.agent import registered_tools
from longtask.agent._loading import load_task_modules, module_names
from longtask.agent._settings import AgentSettings
from longtask.settings import Settings


def agent_activities(
    client: Client, settings: Settings, llm: openai.AsyncOpenAI, redis: Redis | None
) -> list[Callable[..., Any]]:
    """Model and embedding calls, and one activity per registered tool (``tool.NAME``).

    The task modules are imported first, so their tools are registered here too.
    """
    load_task_modules(module_names(AgentSettings().task_modules))
    limiter = (
        SharedRateLimiter(redis, settings.rate_limits) if redis and settings.rate_limits else None
    )
    api_key = settings.llm_api_key.get_secret_value()
    # Limits learned from each model's pace, shared with the document task's through Redis.
    latency = LatencyBook(redis)
    calls = AgentCalls(llm, api_key, redis, limiter, settings.mirror_messages, client, latency)
    batches = ModelBatches(llm, api_key, latency, limiter)
    tools = ToolRunner(llm, api_key, settings.state_dir.resolve(), redis)
    return [
        calls.call_model,
        calls.embed_texts,
        batches.call_models,
        *tools.activities(registered_tools()),
    ]
