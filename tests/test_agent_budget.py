"""A research task whose budget runs out mid-conversation ends ``budget_exceeded``; a new run
with a larger budget goes on from its checkpoint's messages and calls nothing twice."""

from __future__ import annotations

import json
import uuid
from collections import Counter
from datetime import datetime
from pathlib import Path

from redis.asyncio import Redis
from temporalio.client import Client

from longtask.cost import TaskBudget
from longtask.research import resume_research, start_research
from longtask.settings import Settings
from longtask.states import TaskState
from longtask.tooling.servers import LlmServer
from tests.agents import FAST_POLICY, latest_checkpoint, running_worker
from tests.conftest import EXAMPLES

# Embeddings free, the tool loop's model dear: the first turn spends the whole budget.
PRICES = {"deepseek-v3.2": 0.0, "gpt-4.1-mini": 1000.0, "gpt-4.1": 8.0}
MODELS = {
    "embedding": "deepseek-v3.2",
    "default": "gpt-4.1-mini",
    "reasoning": "gpt-4.1",
    "final": "gpt-4.1",
}


async def test_a_budget_reached_mid_conversation_then_a_resume_with_more(
    client: Client, settings: Settings, llm: LlmServer, redis: Redis, tmp_path: Path
) -> None:
    ours = settings.model_copy(
        update={"task_queue": f"budget-{uuid.uuid4().hex[:8]}", "state_dir": tmp_path}
    )
    policy = {**ours.timeout_policy().model_dump(), **FAST_POLICY}
    async with running_worker(client, ours, redis):
        first = await start_research(
            client,
            ours,
            "What did the field study measure?",
            [str(EXAMPLES)],
            policy=policy,
            prices=PRICES,
            models=MODELS,
            budget={"max_cost_usd": 0.001},
        )
        stopped = await first.result()
        assert stopped.state is TaskState.BUDGET_EXCEEDED, stopped.reason
        assert "reached the budget" in stopped.reason
        checkpoint = await latest_checkpoint(redis, first.id)
        assert checkpoint is not None and checkpoint.metadata.state == "budget_exceeded"
        # The model asked for a tool; the budget stopped the task before it ran.
        roles = [m["role"] for m in checkpoint.state.messages]
        assert roles == ["system", "user", "assistant"]
        assert checkpoint.state.messages[-1]["tool_calls"]

        again = await resume_research(client, ours, redis, first.id, budget=TaskBudget())
        finished = await again.result()
        last = await latest_checkpoint(redis, first.id)

    # Progress and elapsed time go on from the checkpoint resumed from.
    before = checkpoint.metadata.elapsed_seconds
    assert before is not None and before > 0
    assert last is not None and last.metadata.elapsed_seconds is not None
    started = (await again.describe()).start_time
    own = (datetime.fromisoformat(last.timestamp) - started).total_seconds()
    assert last.metadata.elapsed_seconds >= before + own - 0.05
    assert last.progress == 100.0

    assert finished.state is TaskState.COMPLETED, finished.reason
    assert finished.result is not None and finished.result.sources
    # What the first run paid is carried, and nothing it asked is asked again.
    assert finished.cost_so_far > stopped.cost_so_far
    chats = [
        json.dumps(r["body"], sort_keys=True)
        for r in llm.requests()
        if r["path"].endswith("/chat/completions")
    ]
    assert all(count == 1 for count in Counter(chats).values())
    resumed_first = json.loads(chats[1])["messages"]
    assert [m["role"] for m in resumed_first] == ["system", "user", "assistant", "tool"]
    assert resumed_first[2]["tool_calls"] == checkpoint.state.messages[-1]["tool_calls"]
