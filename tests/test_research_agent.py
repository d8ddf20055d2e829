"""The research agent over the examples, against a real LLM server that calls the tools it
is offered: it completes, its report cites the tools' passages, its checkpoints hold the
tool turns, and its history replays (on a worker without a cache, too)."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from redis.asyncio import Redis
from temporalio.client import Client
from temporalio.worker import Replayer

from longtask.agent import AgentStatus, TaskOutcome
from longtask.payload_store import data_converter
from longtask.research import ResearchReport, start_research
from longtask.settings import Settings
from longtask.states import TaskState
from longtask.tooling.servers import LlmServer
from tests.agents import FAST_POLICY, latest_checkpoint, running_worker
from tests.conftest import EXAMPLES, PAYLOAD_THRESHOLD, TEST_API_KEY
from tests.record_history import holds_secret
from tests.test_cli import run_starter
from workflows.research import ResearchTask

QUESTION = "What went wrong in the incident, and what was decided?"


@pytest.fixture(scope="module")
def tool_llm() -> Iterator[LlmServer]:
    with LlmServer("--tool-mode", "auto", "--latency-ms", "0") as server:
        yield server


@pytest.fixture
def tool_settings(settings: Settings, tool_llm: LlmServer, tmp_path: Path) -> Settings:
    tool_llm.reset()
    return settings.model_copy(
        update={
            "llm_base_url": tool_llm.base_url,
            "task_queue": f"research-{uuid.uuid4().hex[:8]}",
            "state_dir": tmp_path / "state",
        }
    )


def policy(settings: Settings) -> dict[str, object]:
    return {**settings.timeout_policy().model_dump(), **FAST_POLICY}


async def test_the_research_agent_answers_from_its_tools(
    client: Client, tool_settings: Settings, tool_llm: LlmServer, redis: Redis, payload_dir: Path
) -> None:
    async with running_worker(client, tool_settings, redis):
        handle = await start_research(
            client, tool_settings, QUESTION, [str(EXAMPLES)], policy=policy(tool_settings)
        )
        outcome: TaskOutcome[ResearchReport] = await handle.result()
        status = await handle.query("status", result_type=AgentStatus)

    assert outcome.state is TaskState.COMPLETED, outcome.reason
    report = outcome.result
    assert report is not None
    # The model called the search tool; its passages are the report's sources, cited by name.
    assert report.sources, "no tool returned a passage"
    names = {path.name for path in EXAMPLES.iterdir()}
    assert {source.document for source in report.sources} <= names
    for source in report.sources:
        assert f"[{source.ref}]" in report.report
        assert source.text[:100] in report.report
    # The final request to the model carried the tool results it is asked to cite.
    last = tool_llm.requests()[-1]["body"]
    tool_turns = [m for m in last["messages"] if m["role"] == "tool"]
    assert tool_turns and report.sources[0].text[:60] in tool_turns[0]["content"]
    assert last["stream"] is True and last["model"] == tool_settings.model_final
    # Progress ran to the end; the ledger booked every call, tools' embeddings included.
    assert status.record.progress == 100.0 and status.state is TaskState.COMPLETED
    steps = {row.step for row in outcome.ledger.rows()}
    assert {"turn 1", "report", "tool.index_corpus", "tool.search_corpus"} <= steps
    assert outcome.cost_so_far > 0

    # The last checkpoint in Redis holds the conversation with its tool turns (SPEC 5).
    checkpoint = await latest_checkpoint(redis, handle.id)
    assert checkpoint is not None
    roles = [m["role"] for m in checkpoint.state.messages]
    assert roles[:2] == ["system", "user"] and "tool" in roles and roles[-1] == "assistant"
    assistant_calls = [m for m in checkpoint.state.messages if m.get("tool_calls")]
    assert assistant_calls[0]["tool_calls"][0]["function"]["name"] == "search_corpus"
    assert checkpoint.state.variables["question"] == QUESTION
    assert checkpoint.state.variables["corpus"]["chunks"] > 0
    assert checkpoint.metadata.state == "completed"
    assert checkpoint.metadata.cost_so_far == outcome.cost_so_far

    history = await handle.fetch_history()
    replayer = Replayer(
        workflows=[ResearchTask], data_converter=data_converter(payload_dir, PAYLOAD_THRESHOLD)
    )
    assert (await replayer.replay_workflow(history)).replay_failure is None
    # The key stays with the workers: not in the history, not in the mirror.
    assert holds_secret(history, QUESTION) and not holds_secret(history, TEST_API_KEY)
    assert TEST_API_KEY not in checkpoint.to_json()


async def test_the_research_agent_on_a_worker_without_cache(
    client: Client, tool_settings: Settings, redis: Redis, payload_dir: Path
) -> None:
    no_cache = tool_settings.model_copy(update={"max_cached_workflows": 0})
    async with running_worker(client, no_cache, redis):
        handle = await start_research(
            client, no_cache, QUESTION, [str(EXAMPLES)], policy=policy(no_cache), max_turns=3
        )
        outcome = await handle.result()
    assert outcome.state is TaskState.COMPLETED, outcome.reason
    assert outcome.result is not None and outcome.result.sources
    history = await handle.fetch_history()
    replayer = Replayer(
        workflows=[ResearchTask], data_converter=data_converter(payload_dir, PAYLOAD_THRESHOLD)
    )
    assert (await replayer.replay_workflow(history)).replay_failure is None


async def test_a_report_cut_mid_stream_continues_from_its_text(
    client: Client, tool_settings: Settings, tool_llm: LlmServer, redis: Redis
) -> None:
    words = " ".join(f"finding-{i:03d}" for i in range(200))
    final = tool_settings.model_final
    tool_llm.add(
        {"type": "reply", "text": words, "match": {"model": final}},
        {"type": "stream_fault", "kind": "disconnect", "after_chunks": 150,
         "match": {"model": final}},
    )  # fmt: skip
    async with running_worker(client, tool_settings, redis):
        handle = await start_research(
            client, tool_settings, QUESTION, [str(EXAMPLES)], policy=policy(tool_settings)
        )
        outcome = await handle.result()
        status = await handle.query("status", result_type=AgentStatus)
    assert outcome.state is TaskState.COMPLETED, outcome.reason
    assert outcome.result is not None
    # A provider failure is a retry: the task went retrying, and back when the call recovered.
    moves = [(t.source.value, t.target.value) for t in status.transitions]
    assert ("running", "retrying") in moves and ("retrying", "running") in moves
    # The words streamed before the cut are kept once; the rest is the continuation's.
    report = outcome.result.report
    assert report.startswith("finding-000 finding-001")
    assert report.count("finding-100 ") == 1
    asked = [r["body"] for r in tool_llm.requests() if r["body"].get("model") == final]
    assert len(asked) == 2
    cut, continued = asked[1]["messages"][-2:]
    assert cut["role"] == "assistant" and cut["content"].startswith("finding-000")
    assert "cut off" in continued["content"]
    rows = [row for row in outcome.ledger.rows() if row.step == "report"]
    assert {row.status for row in rows} == {"connection", "success", "saved"}
    assert next(row for row in rows if row.status == "saved").saved_tokens > 0


async def test_the_starter_runs_the_research_agent(
    client: Client, tool_settings: Settings, tool_llm: LlmServer, redis: Redis
) -> None:
    """`starter.py run research PATH... --question TEXT`, as the README says."""
    async with running_worker(client, tool_settings, redis):
        ran = await asyncio.to_thread(
            run_starter,
            tool_settings,
            *("run", "research", str(EXAMPLES), "--question", QUESTION, "--max-turns", "3"),
        )
    assert ran.returncode == 0, ran.stderr
    assert "Sources" in ran.stdout
    assert "completed:" in ran.stdout.splitlines()[-1]
    asked = [r for r in tool_llm.requests() if r["path"].endswith("/chat/completions")]
    assert any(m.get("role") == "tool" for r in asked for m in r["body"]["messages"])

    refused = await asyncio.to_thread(
        run_starter, tool_settings, "start", str(EXAMPLES), "--question", QUESTION
    )
    assert refused.returncode == 2
    assert "start research PATH... --question TEXT" in refused.stderr
