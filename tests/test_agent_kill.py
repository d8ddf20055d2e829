"""A worker SIGKILLed in the middle of the research agent's conversation: another worker
finishes it, and no model call, embedding or tool call that had finished is made again."""

from __future__ import annotations

import asyncio
import json
import signal
import uuid
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from redis.asyncio import Redis
from temporalio.client import Client

from activities.agent_tools import tool_runs_key
from longtask.agent import AgentStatus
from longtask.research import start_research
from longtask.settings import Settings
from longtask.states import TaskState
from longtask.tooling.servers import LlmServer
from longtask.tooling.worker_process import WorkerProcess
from tests.agents import FAST_POLICY, latest_checkpoint, wait_for
from tests.conftest import EXAMPLES


@pytest.fixture(scope="module")
def slow_tool_llm() -> Iterator[LlmServer]:
    with LlmServer("--tool-mode", "auto", "--latency-ms", "0") as server:
        yield server


def bodies(requests: list[dict[str, Any]], finished_only: bool = False) -> list[str]:
    """Each request as its path and canonical body; ``finished_only``: answered in full."""
    return [
        f"{r['path']} {json.dumps(r['body'], sort_keys=True)}"
        for r in requests
        if not finished_only or (r.get("completed") and r.get("status") == 200)
    ]


async def test_a_killed_worker_repeats_no_finished_call(
    client: Client,
    settings: Settings,
    slow_tool_llm: LlmServer,
    redis: Redis,
    workers: list[WorkerProcess],
    tmp_path: Path,
) -> None:
    slow_tool_llm.reset()
    # Every answer takes a second: time to kill the worker in the middle of the conversation.
    slow_tool_llm.add({"type": "delay", "seconds": 1.0, "times": None})
    ours = settings.model_copy(
        update={
            "llm_base_url": slow_tool_llm.base_url,
            "task_queue": f"agent-kill-{uuid.uuid4().hex[:8]}",
        }
    )
    env = {"LTM_STATE_DIR": str(tmp_path / "state")}
    first = WorkerProcess(ours, tmp_path / "first.log", extra_env=env)
    workers.append(first)
    policy = {**ours.timeout_policy().model_dump(), **FAST_POLICY}
    handle = await start_research(
        client, ours, "What was decided after the incident?", [str(EXAMPLES)], policy=policy
    )

    # System, question, the model's tool call and the tool's result: the next turn is asked.
    await wait_for(handle, lambda s: s.messages >= 4, seconds=90)
    first.process.send_signal(signal.SIGKILL)
    assert first.process.wait(timeout=10) == -signal.SIGKILL
    finished_before_kill = bodies(slow_tool_llm.requests(), finished_only=True)
    assert any("/chat/completions" in body for body in finished_before_kill)
    assert any("/embeddings" in body for body in finished_before_kill)

    workers.append(WorkerProcess(ours, tmp_path / "second.log", extra_env=env))
    outcome = await handle.result()
    status = await handle.query("status", result_type=AgentStatus)
    assert outcome.state is TaskState.COMPLETED, outcome.reason
    # A lost worker is no provider failure: the task never went retrying.
    assert TaskState.RETRYING not in [t.target for t in status.transitions]
    assert outcome.result is not None and outcome.result.sources

    made = Counter(bodies(slow_tool_llm.requests()))
    for body in finished_before_kill:
        assert made[body] == 1, f"made again after the kill: {body[:200]}"
    # Only the call in flight at the kill may have been asked twice.
    assert sum(count - 1 for count in made.values()) <= 1
    # Each tool call ran once: the index and the search finished before the kill.
    runs = {str(k): int(v) for k, v in (await redis.hgetall(tool_runs_key(handle.id))).items()}
    assert any(name.startswith("index_corpus|") for name in runs)
    assert any(name.startswith("search_corpus|") for name in runs)
    assert all(count == 1 for count in runs.values()), runs
    # The conversation went on where it was: one tool turn, then the answer and the report.
    checkpoint = await latest_checkpoint(redis, handle.id)
    assert checkpoint is not None
    roles = [m["role"] for m in checkpoint.state.messages]
    assert roles == ["system", "user", "assistant", "tool", "assistant", "assistant"]


@pytest.fixture(scope="module")
def streaming_llm() -> Iterator[LlmServer]:
    # Chunks paced like real generation: a long report streams for several seconds.
    with LlmServer(
        "--tool-mode", "auto", "--latency-ms", "0", "--stream-chunk-delay-ms", "20"
    ) as s:
        yield s


async def test_a_worker_killed_mid_report_leaves_its_text_to_the_next(
    client: Client,
    settings: Settings,
    streaming_llm: LlmServer,
    redis: Redis,
    workers: list[WorkerProcess],
    tmp_path: Path,
) -> None:
    streaming_llm.reset()
    words = " ".join(f"finding-{i:03d}" for i in range(400))
    streaming_llm.add({"type": "reply", "text": words, "match": {"model": settings.model_final}})
    ours = settings.model_copy(
        update={
            "llm_base_url": streaming_llm.base_url,
            "task_queue": f"agent-stream-{uuid.uuid4().hex[:8]}",
        }
    )
    env = {"LTM_STATE_DIR": str(tmp_path / "state")}
    first = WorkerProcess(ours, tmp_path / "first.log", extra_env=env)
    workers.append(first)
    policy = {**ours.timeout_policy().model_dump(), **FAST_POLICY}
    handle = await start_research(client, ours, "What was decided?", [str(EXAMPLES)], policy=policy)

    async def partial_of_report() -> str:
        checkpoint = await latest_checkpoint(redis, handle.id)
        return (checkpoint.partial_response or "") if checkpoint is not None else ""

    # Kill once the mirror shows part of the report (bounded: 90 s at most).
    for _ in range(900):
        if len(await partial_of_report()) >= 1500:
            break
        await asyncio.sleep(0.1)
    assert len(await partial_of_report()) >= 1500, "the report never streamed far enough"
    first.process.send_signal(signal.SIGKILL)
    assert first.process.wait(timeout=10) == -signal.SIGKILL

    workers.append(WorkerProcess(ours, tmp_path / "second.log", extra_env=env))
    outcome = await handle.result()
    assert outcome.state is TaskState.COMPLETED, outcome.reason
    assert outcome.result is not None
    report = outcome.result.report
    assert report.startswith("finding-000 finding-001") and report.count("finding-050 ") == 1
    asked = [r["body"] for r in streaming_llm.requests() if r["model"] == ours.model_final]
    assert len(asked) == 2
    cut = asked[1]["messages"][-2]
    assert cut["role"] == "assistant" and len(cut["content"]) >= 1500
    saved = [row for row in outcome.ledger.rows() if row.status == "saved"]
    assert saved and saved[0].saved_tokens > 0
