"""Resuming: the read API, and new runs of ended tasks that skip what was already done."""

from __future__ import annotations

import asyncio
from collections import Counter
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest
from redis.asyncio import Redis
from temporalio.client import Client, WorkflowFailureError, WorkflowHandle
from temporalio.worker import Replayer, Worker

from longtask.checkpoint_reader import load_checkpoint, resume_task
from longtask.client import TaskClient
from longtask.client_errors import TaskRefusedError
from longtask.models import TaskResult, TaskStatus
from longtask.policies import StepKind
from longtask.settings import Settings
from longtask.states import TaskState
from longtask.tooling.servers import LlmServer
from tests.conftest import EXAMPLES
from tests.tasks import read_list, read_text, start, wait_for_status, write_documents
from workflows.document_task import DocumentTaskWorkflow


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
    await replays(client, handle)
    return task.task_id, (await handle.describe()).run_id


async def replays(client: Client, handle: WorkflowHandle[Any, Any]) -> None:
    """The cancelled run's history replays with the current workflow code."""
    replayer = Replayer(workflows=[DocumentTaskWorkflow], data_converter=client.data_converter)
    await replayer.replay_workflow(await handle.fetch_history())


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
    # The cost carries on from what the first run paid, and so does the elapsed time.
    assert result.cost_so_far > checkpoint.metadata.cost_so_far > 0
    before = checkpoint.metadata.elapsed_seconds
    assert before is not None and before > 0.6  # two documents of 0.3 s calls at least
    final = await load_checkpoint(redis, task_id)
    assert final is not None and final.metadata.elapsed_seconds is not None
    # The resumed run's own time, from its start to its last checkpoint, comes on top.
    started = (await handle.describe()).start_time
    own = (datetime.fromisoformat(final.timestamp) - started).total_seconds()
    assert final.metadata.elapsed_seconds >= before + own - 0.05
    status = await handle.query("status", result_type=TaskStatus)
    assert status.record.elapsed_seconds >= final.metadata.elapsed_seconds
    # Only the steps not finished before the cancel called the model again.
    summaries_done = sum(
        len(r.outputs or []) for r in checkpoint.state.step_results if r.step == "summarize"
    )
    done = Counter(r.step for r in checkpoint.state.step_results)
    # Steps the batch cut by the cancel had finished are in the checkpoint too.
    not_done = (4 * 4 - summaries_done) + (4 - done["reason"]) + (4 - done["report"])
    assert llm.count("/chat/completions") == not_done
    described = await handle.describe()
    assert described.run_id != first_run
    memo = await described.memo()
    assert memo["resumed_from_run"] == first_run


async def test_steps_a_cancelled_batch_finished_are_not_asked_again(
    client: Client, settings: Settings, worker: Worker, llm: LlmServer, redis: Redis, tmp_path: Path
) -> None:
    paths = write_documents(tmp_path, count=1, pages=2)
    # The reasoning call hangs, long after the embedding and the page summaries are done: the
    # cancel cuts the batch in the middle of its only document.
    reasoning = settings.model_reasoning
    held = 20.0
    llm.add({"type": "delay", "seconds": held, "times": 1, "match": {"model": reasoning}})
    task, handle = await start(client, settings, paths, policy={"stall_seconds": 60})
    # The reasoning starts (and says so) once the embedding and both summaries are done; the
    # task counts those three calls while the batch still runs.
    running = await wait_for_status(handle, lambda s: StepKind.REASON in s.calls, seconds=60)
    assert running.record.step == 3 and running.record.total == 5
    held_until = asyncio.get_running_loop().time() + held
    await handle.cancel()
    with pytest.raises(WorkflowFailureError):
        await handle.result()
    await replays(client, handle)
    checkpoint = await load_checkpoint(redis, task.task_id)
    assert checkpoint is not None and checkpoint.state.variables["state"] == "cancelled"
    assert {r.step for r in checkpoint.state.step_results} == {"embed", "summarize"}
    # The server's log is not read while it holds the call: a read waits for calls in flight,
    # and this test's worker shares its event loop. A reset log leaves the held call out.
    llm.reset()

    await TaskClient(client, settings).resume(task.task_id, None)
    result = await client.get_workflow_handle(task.task_id, result_type=TaskResult).result()

    assert result.state is TaskState.COMPLETED and result.documents[0].report
    # Only the reasoning and the report: the embedding and both summaries were not asked again.
    assert llm.count("/embeddings") == 0
    assert llm.count("/chat/completions", settings.model_intermediate) == 0
    assert llm.count("/chat/completions", reasoning) == 1
    assert llm.count("/chat/completions", settings.model_final) == 1
    # The server holds the cut call to its end; it stops cleanly only after that.
    await asyncio.sleep(max(0.0, held_until - asyncio.get_running_loop().time()))


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


async def test_a_checkpoint_holds_a_large_report_once(
    client: Client, settings: Settings, worker: Worker, llm: LlmServer, redis: Redis
) -> None:
    report = " ".join(f"finding-{i:05d}" for i in range(20_000))  # 280 kB
    llm.add({"type": "reply", "text": report, "match": {"model": settings.model_final}})
    # A long silence on a loaded machine must not cut the stream: a continuation's text differs.
    task, handle = await start(
        client, settings, [EXAMPLES / "incident-postmortem.txt"], policy={"stall_seconds": 60}
    )
    result = await handle.result()
    assert result.documents[0].report == report

    raw = await read_text(
        redis, f"checkpoint:{await read_text(redis, f'task:{task.task_id}:latest')}"
    )
    assert raw.count("finding-19999") == 1
    assert len(raw) < len(report) + 40_000
    # The report is the report step's output, which a resumed run reads; its message names it.
    answer = await resume_task(redis, task.task_id)
    outputs = [r["outputs"] for r in answer["state"]["step_results"] if r["step"] == "report"]
    assert outputs == [[report]]
    (message,) = [m for m in answer["state"]["messages"] if m["step"] == "report"]
    assert message["content_in"] == "step_results" and "content" not in message
    assert message["document"] == "incident-postmortem.txt"
