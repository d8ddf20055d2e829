"""The state machine of a long task from outside: pause and resume (refused when the state
does not allow them), and a cancel that ends it ``cancelled`` and is resumed from its
checkpoint, going on from its messages."""

from __future__ import annotations

import asyncio
import json
import uuid
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest
from redis.asyncio import Redis
from temporalio.client import Client, WorkflowFailureError, WorkflowUpdateFailedError

from longtask.agent import TaskOutcome
from longtask.research import ResearchReport, start_research
from longtask.settings import Settings
from longtask.states import TaskState
from longtask.tooling.servers import LlmServer
from tests.agents import FAST_POLICY, latest_checkpoint, running_worker, wait_for
from tests.conftest import EXAMPLES
from tests.test_cli import run_starter


@pytest.fixture(scope="module")
def slow_llm() -> Iterator[LlmServer]:
    with LlmServer("--tool-mode", "auto", "--latency-ms", "0") as server:
        yield server


@pytest.fixture
def slow_settings(settings: Settings, slow_llm: LlmServer, tmp_path: Path) -> Settings:
    slow_llm.reset()
    # Each answer takes half a second: time to act while the task runs.
    slow_llm.add({"type": "delay", "seconds": 0.5, "times": None})
    return settings.model_copy(
        update={
            "llm_base_url": slow_llm.base_url,
            "task_queue": f"lifecycle-{uuid.uuid4().hex[:8]}",
            "state_dir": tmp_path,
        }
    )


async def test_pause_and_resume_and_what_they_refuse(
    client: Client, slow_settings: Settings, redis: Redis
) -> None:
    policy = {**slow_settings.timeout_policy().model_dump(), **FAST_POLICY}
    async with running_worker(client, slow_settings, redis):
        handle = await start_research(
            client, slow_settings, "What was measured?", [str(EXAMPLES)], policy=policy
        )
        with pytest.raises(WorkflowUpdateFailedError):
            await handle.execute_update("resume", result_type=str)  # running: not paused
        assert await handle.execute_update("pause", result_type=str) == "paused"
        paused = await wait_for(handle, lambda s: s.state is TaskState.PAUSED)
        with pytest.raises(WorkflowUpdateFailedError):
            await handle.execute_update("pause", result_type=str)
        assert await handle.execute_update("resume", result_type=str) == "running"
        outcome = await handle.result()
        final = await wait_for(handle, lambda s: s.state is TaskState.COMPLETED)
    assert outcome.state is TaskState.COMPLETED, outcome.reason
    moves = [(t.source.value, t.target.value) for t in final.transitions]
    assert ("running", "paused") in moves and ("paused", "running") in moves
    assert paused.record.progress < 100.0


async def test_a_cancelled_task_resumes_from_its_messages(
    client: Client, slow_settings: Settings, slow_llm: LlmServer, redis: Redis
) -> None:
    policy = {**slow_settings.timeout_policy().model_dump(), **FAST_POLICY}
    async with running_worker(client, slow_settings, redis):
        handle = await start_research(
            client, slow_settings, "What was decided?", [str(EXAMPLES)], policy=policy
        )
        await wait_for(handle, lambda s: s.messages >= 3)  # the model asked for a tool
        await handle.cancel()
        with pytest.raises(WorkflowFailureError):
            await handle.result()
        stopped = await latest_checkpoint(redis, handle.id)
        assert stopped is not None and stopped.metadata.state == "cancelled"
        assert stopped.error == "cancel requested"
        kept = stopped.state.messages
        assert [m["role"] for m in kept[:3]] == ["system", "user", "assistant"]

        # As a user would: `starter.py resume ID`, a new run from the newest checkpoint.
        resumed = await asyncio.to_thread(run_starter, slow_settings, "resume", handle.id)
        assert resumed.returncode == 0, resumed.stderr
        again = client.get_workflow_handle(handle.id, result_type=TaskOutcome[ResearchReport])
        outcome = await again.result()
    assert outcome.state is TaskState.COMPLETED, outcome.reason
    finished = await latest_checkpoint(redis, handle.id)
    assert finished is not None and finished.state.messages[: len(kept)] == kept
    chats = Counter(
        json.dumps(r["body"], sort_keys=True)
        for r in slow_llm.requests()
        if r["path"].endswith("/chat/completions")
    )
    # At most the call cut by the cancel is asked again; the first turn is not.
    assert sum(count - 1 for count in chats.values()) <= 1
    first_turn = [body for body in chats if len(json.loads(body)["messages"]) == 2]
    assert len(first_turn) == 1 and chats[first_turn[0]] == 1


async def test_a_task_past_its_deadline_ends_timed_out_with_a_checkpoint(
    client: Client, slow_settings: Settings, redis: Redis
) -> None:
    policy = {**slow_settings.timeout_policy().model_dump(), **FAST_POLICY}
    async with running_worker(client, slow_settings, redis):
        handle = await start_research(
            client,
            slow_settings,
            "What was measured?",
            [str(EXAMPLES)],
            policy=policy,
            deadline_seconds=1.0,
        )
        outcome = await handle.result()
    assert outcome.state is TaskState.TIMED_OUT
    assert outcome.result is None and "deadline" in outcome.reason
    checkpoint = await latest_checkpoint(redis, handle.id)
    assert checkpoint is not None and checkpoint.metadata.state == "timed_out"
    assert checkpoint.error == outcome.reason
