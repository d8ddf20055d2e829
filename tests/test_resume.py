"""Resuming: the read API, and new runs of ended tasks that skip what was already done."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import pytest
from redis.asyncio import Redis
from temporalio.client import Client, WorkflowFailureError
from temporalio.worker import Worker

from longtask.checkpoint_reader import load_checkpoint, resume_task
from longtask.client import TaskClient
from longtask.client_errors import TaskRefusedError
from longtask.models import TaskResult
from longtask.settings import Settings
from longtask.states import TaskState
from tests.conftest import EXAMPLES
from tests.servers import LlmServer
from tests.tasks import read_list, start, wait_for_status, write_documents


def chat_fingerprints(llm: LlmServer) -> Counter[str]:
    return Counter(r["fingerprint"] for r in llm.requests() if r["path"].endswith("/completions"))


async def test_resume_task_answers_as_documented(
    client: Client, settings: Settings, worker: Worker, llm: LlmServer, redis: Redis
) -> None:
    assert await resume_task(redis, "no-such-task") == {
        "can_resume": False,
        "reason": "no checkpoint found",
    }
    task, handle = await start(client, settings, [EXAMPLES / "incident-postmortem.txt"])
    await handle.result()
    answer = await resume_task(redis, task.task_id)
    assert set(answer) == {"can_resume", "checkpoint_id", "progress", "state", "metadata"}
    assert answer["can_resume"] is True
    assert answer["checkpoint_id"] == await redis.get(f"task:{task.task_id}:latest")
    assert answer["progress"] == 100.0
    assert set(answer["state"]) == {"messages", "variables", "current_step", "step_results"}
    oldest = (await read_list(redis, f"task:{task.task_id}:checkpoints"))[-1]
    older = await load_checkpoint(redis, task.task_id, oldest)
    assert older is not None and older.id == oldest and older.progress < 100
    assert await load_checkpoint(redis, "another-task", oldest) is None


async def cancelled_midway(
    client: Client, settings: Settings, llm: LlmServer, paths: list[Path], pages: int
) -> tuple[str, str]:
    """A task cancelled once two documents are done; returns its id and run id."""
    del pages  # one document in flight at a time: the third is cut by the cancel
    llm.add({"type": "delay", "seconds": 0.3, "times": None})
    task, handle = await start(client, settings, paths, document_concurrency=1)
    await wait_for_status(handle, lambda s: s.documents_done >= 2, seconds=60)
    await handle.cancel()
    with pytest.raises(WorkflowFailureError):
        await handle.result()
    return task.task_id, (await handle.describe()).run_id


async def test_a_cancelled_task_resumes_without_repeating_finished_steps(
    client: Client, settings: Settings, worker: Worker, llm: LlmServer, redis: Redis, tmp_path: Path
) -> None:
    paths = write_documents(tmp_path, count=4, pages=4)
    task_id, first_run = await cancelled_midway(client, settings, llm, paths, pages=4)
    checkpoint = await load_checkpoint(redis, task_id)
    assert checkpoint is not None and checkpoint.state.variables["state"] == "cancelled"
    finished = len(checkpoint.state.step_results)
    assert finished >= 8  # two documents' four steps at least
    llm.reset()

    message = await TaskClient(client, settings).resume(task_id, None)
    assert f"from checkpoint {checkpoint.id}" in message and first_run in message
    handle = client.get_workflow_handle(task_id, result_type=TaskResult)
    result = await handle.result()

    assert result.state is TaskState.COMPLETED
    assert all(document.report for document in result.documents)
    # The cost carries on from what the first run paid.
    assert result.cost_so_far > checkpoint.metadata["cost_so_far"] > 0
    # Only the steps not finished before the cancel called the model again.
    summaries_done = sum(
        len(r["outputs"]) for r in checkpoint.state.step_results if r["step"] == "summarize"
    )
    reports_done = sum(1 for r in checkpoint.state.step_results if r["step"] == "report")
    # Steps a batch finished for the document in flight when the cancel came are not in the
    # checkpoint (the batch was cut): at most that document's reasoning and report again.
    not_done = (4 * 4 - summaries_done) + 2 * (4 - reports_done)
    assert not_done <= llm.count("/chat/completions") <= not_done + 2
    described = await handle.describe()
    assert described.run_id != first_run
    memo = await described.memo()
    assert memo["resumed_from_run"] == first_run


async def test_a_task_resumes_from_an_older_checkpoint(
    client: Client, settings: Settings, worker: Worker, llm: LlmServer, redis: Redis, tmp_path: Path
) -> None:
    paths = write_documents(tmp_path, count=3, pages=3)
    task_id, _ = await cancelled_midway(client, settings, llm, paths, pages=3)
    ids = await read_list(redis, f"task:{task_id}:checkpoints")
    older = None
    for checkpoint_id in reversed(ids):
        candidate = await load_checkpoint(redis, task_id, checkpoint_id)
        if candidate and 4 <= len(candidate.state.step_results) < 8:
            older = candidate
            break
    assert older is not None, "no checkpoint between the first and the second document"
    llm.reset()

    await TaskClient(client, settings).resume(task_id, older.id)
    result = await client.get_workflow_handle(task_id, result_type=TaskResult).result()

    assert result.state is TaskState.COMPLETED
    redone = {
        r["body"]["messages"][-1]["content"][:40]
        for r in llm.requests()
        if r["body"].get("messages")
    }
    first_document = paths[0].name
    assert any(paths[2].name in text for text in redone), "the later documents were not redone"
    assert not any(first_document in text for text in redone), "the first document was redone"


async def test_resume_continues_a_paused_task_and_refuses_a_completed_one(
    client: Client, settings: Settings, worker: Worker, llm: LlmServer
) -> None:
    llm.add({"type": "delay", "seconds": 0.3, "times": None})
    task, handle = await start(client, settings, [EXAMPLES])
    await wait_for_status(handle, lambda s: s.record.total > 0)
    await handle.execute_update("pause", result_type=str)
    assert (
        await TaskClient(client, settings).resume(task.task_id, None)
        == f"task {task.task_id} resumed"
    )
    assert (await handle.result()).state is TaskState.COMPLETED
    with pytest.raises(TaskRefusedError, match="completed; there is nothing to resume"):
        await TaskClient(client, settings).resume(task.task_id, None)
