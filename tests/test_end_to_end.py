"""The document agent end to end on a real Temporal server, Redis and the local LLM server."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from redis.asyncio import Redis
from temporalio.client import Client, WorkflowFailureError, WorkflowUpdateFailedError
from temporalio.exceptions import ApplicationError, CancelledError
from temporalio.service import RPCError
from temporalio.worker import Worker

from activities.documents import find_documents, read_pages
from longtask.cost import TokenUsage
from longtask.models import TaskResult
from longtask.progress import ENDED_NODE, WAITING_NODE
from longtask.settings import Settings
from longtask.states import TaskState
from longtask.text import chunks_of, embed_batches
from longtask.tooling.servers import LlmServer
from tests.conftest import EXAMPLES, TEST_API_KEY
from tests.tasks import read_json, read_list, read_text, start, wait_for_status, write_documents


async def test_agent_reports_on_every_example(
    client: Client, settings: Settings, worker: Worker, llm: LlmServer, redis: Redis
) -> None:
    task, handle = await start(client, settings, [EXAMPLES])
    result = await handle.result()

    assert result.state is TaskState.COMPLETED
    assert [d.name for d in result.documents] == [p.name for p in find_documents([str(EXAMPLES)])]
    assert all(d.state is TaskState.COMPLETED and d.report for d in result.documents)

    # One call per page summary, one reasoning and one report per document; one embedding
    # request per batch of chunks: no call made twice.
    pages = [read_pages(p) for p in find_documents([str(EXAMPLES)])]
    assert llm.count("/chat/completions") == sum(len(p) for p in pages) + 2 * len(pages)
    assert llm.count("/embeddings") == sum(embed_batches(len(chunks_of(p))) for p in pages)
    assert llm.count("/chat/completions", settings.model_final) == len(pages)
    assert llm.count("/chat/completions", settings.model_reasoning) == len(pages)

    usage = TokenUsage.model_validate(result.usage.model_dump())
    assert result.cost_so_far == usage.cost() > 0
    assert set(usage.completion_tokens) == {
        settings.model_intermediate,
        settings.model_reasoning,
        settings.model_final,
    }

    status = await wait_for_status(handle, lambda s: s.state is TaskState.COMPLETED)
    assert status.record.progress == 100.0 and status.record.step == status.record.total
    assert [(t.source, t.target) for t in status.transitions] == [
        (TaskState.PENDING, TaskState.RUNNING),
        (TaskState.RUNNING, TaskState.COMPLETED),
    ]
    # Ended documents roll up into one node: the answer stays small for any task size.
    ended, waiting = status.tree.children
    assert (ended.name, ended.done, ended.total) == (
        ENDED_NODE,
        status.record.total,
        status.record.total,
    )
    assert (waiting.name, waiting.total) == (WAITING_NODE, 0)
    assert status.documents_done == len(result.documents) and status.documents_failed == 0

    latest = await read_text(redis, f"task:{task.task_id}:latest")
    final = await read_json(redis, f"checkpoint:{latest}")
    assert final["progress"] == 100.0
    assert final["state"]["variables"]["state"] == "completed"
    assert final["metadata"]["cost_so_far"] == result.cost_so_far
    ids = await read_list(redis, f"task:{task.task_id}:checkpoints")
    assert ids[0] == latest and len(ids) == len(set(ids)) >= 2
    stamps = [int(i.rsplit("_", 1)[1]) for i in ids]
    assert stamps == sorted(stamps, reverse=True)
    # No credential reaches the mirror or the history.
    async for key in redis.scan_iter(match=f"*{task.task_id}*"):
        if await redis.type(key) == "string":
            assert TEST_API_KEY not in await read_text(redis, key)
    history = json.dumps((await handle.fetch_history()).to_json_dict())
    assert TEST_API_KEY not in history


async def test_progress_is_live_while_the_task_runs(
    client: Client, settings: Settings, worker: Worker, llm: LlmServer, redis: Redis, tmp_path: Path
) -> None:
    llm.add({"type": "delay", "seconds": 0.3, "times": None})
    paths = write_documents(tmp_path, count=2, pages=6)
    task, handle = await start(client, settings, paths, call_concurrency=2)

    midway = await wait_for_status(handle, lambda s: 0 < s.record.step < s.record.total)
    assert midway.state is TaskState.RUNNING
    assert 0 < midway.record.progress < 100
    assert midway.record.eta_seconds is not None and midway.record.eta_seconds > 0
    assert midway.record.elapsed_seconds > 0
    document = midway.tree.children[0]
    assert document.steps_total() == 6 + 1 + 2  # pages, one embedding batch, reason, report

    snapshot = await read_json(redis, f"task:{task.task_id}:checkpoint")
    assert snapshot["status"]["task_id"] == task.task_id
    assert snapshot["status"]["metadata"]["state"] in {"running", "completed"}

    result = await handle.result()
    assert result.state is TaskState.COMPLETED


async def test_auth_failure_fails_at_once_naming_step_and_document(
    client: Client, settings: Settings, worker: Worker, llm: LlmServer
) -> None:
    llm.add({"type": "fail", "status": 401, "times": None, "match": {"model": "gpt-4.1"}})
    _task, handle = await start(client, settings, [EXAMPLES / "incident-postmortem.txt"])
    with pytest.raises(WorkflowFailureError) as raised:
        await handle.result()
    cause = raised.value.cause
    assert isinstance(cause, ApplicationError) and cause.type == "TASK_FAILED"
    result = TaskResult.model_validate(cause.details[0])
    assert result.state is TaskState.FAILED
    error = result.documents[0].error
    assert "report step of incident-postmortem.txt" in error and "AUTH_FAILED" in error
    # Not retried: exactly one report request was made.
    assert llm.count("/chat/completions", "gpt-4.1") == 1
    assert not [f for f in llm.verdict()["findings"] if f["code"] == "retried_non_retryable"]
    history = json.dumps((await handle.fetch_history()).to_json_dict())
    assert TEST_API_KEY not in history


async def test_a_retried_step_shows_the_retrying_state(
    client: Client, settings: Settings, worker: Worker, llm: LlmServer
) -> None:
    llm.add({"type": "fail", "status": 503, "times": 1, "match": {"model": "gemini-2.5-flash"}})
    _task, handle = await start(client, settings, [EXAMPLES / "incident-postmortem.txt"])
    result = await handle.result()
    assert result.state is TaskState.COMPLETED
    status = await wait_for_status(handle, lambda s: s.state is TaskState.COMPLETED)
    path = [t.target for t in status.transitions]
    assert path == [TaskState.RUNNING, TaskState.RETRYING, TaskState.RUNNING, TaskState.COMPLETED]
    assert llm.count("/chat/completions", "gemini-2.5-flash") == 2


async def test_cancel_ends_the_task_cancelled_with_its_checkpoint(
    client: Client, settings: Settings, worker: Worker, llm: LlmServer, redis: Redis
) -> None:
    llm.add({"type": "delay", "seconds": 5, "times": None})
    task, handle = await start(client, settings, [EXAMPLES])
    await wait_for_status(handle, lambda s: s.record.total > 0)
    await handle.cancel()
    with pytest.raises(WorkflowFailureError) as raised:
        await handle.result()
    assert isinstance(raised.value.cause, CancelledError)
    latest = await read_text(redis, f"task:{task.task_id}:latest")
    checkpoint = await read_json(redis, f"checkpoint:{latest}")
    assert checkpoint["state"]["variables"]["state"] == "cancelled"
    assert checkpoint["error"] == "cancel requested"


async def test_a_task_past_its_deadline_times_out(
    client: Client, settings: Settings, worker: Worker, llm: LlmServer, redis: Redis
) -> None:
    llm.add({"type": "delay", "seconds": 5, "times": None})
    task, handle = await start(client, settings, [EXAMPLES], deadline_seconds=2)
    with pytest.raises(WorkflowFailureError) as raised:
        await handle.result()
    cause = raised.value.cause
    assert isinstance(cause, ApplicationError) and cause.type == "TASK_TIMED_OUT"
    snapshot = await read_json(redis, f"task:{task.task_id}:checkpoint")
    assert snapshot["status"]["metadata"]["state"] == "timed_out"


async def test_pause_and_resume_go_through_the_state_machine(
    client: Client, settings: Settings, worker: Worker, llm: LlmServer
) -> None:
    llm.add({"type": "delay", "seconds": 0.5, "times": None})
    _task, handle = await start(client, settings, [EXAMPLES])
    await wait_for_status(handle, lambda s: s.record.total > 0)
    with pytest.raises(WorkflowUpdateFailedError) as refused:
        await handle.execute_update("resume", result_type=str)
    assert "a running task is not paused" in str(refused.value.cause)
    assert await handle.execute_update("pause", result_type=str) == "paused"
    with pytest.raises(WorkflowUpdateFailedError) as refused:
        await handle.execute_update("pause", result_type=str)
    assert "a paused task cannot be paused" in str(refused.value.cause)
    assert await handle.execute_update("resume", result_type=str) == "running"
    result = await handle.result()
    assert result.state is TaskState.COMPLETED
    # A closed task takes no update at all: Temporal itself refuses it.
    with pytest.raises(RPCError, match="already completed"):
        await handle.execute_update("pause", result_type=str)
