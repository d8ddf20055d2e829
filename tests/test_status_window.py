"""What `status` says before a run knows its steps: while it finds a large folder's documents."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from redis.asyncio import Redis
from temporalio.client import Client, WorkflowFailureError, WorkflowHandle
from temporalio.worker import Worker

from longtask.checkpoint_reader import load_checkpoint
from longtask.cli.output import status_line
from longtask.client import TaskClient
from longtask.cost import TaskBudget, TokenUsage
from longtask.index_ranges import from_ranges
from longtask.models import DocumentRef, ModelRoute, StepResult, TaskInput, TaskStatus
from longtask.policies import StepKind
from longtask.progress import build_record, progress_text
from longtask.settings import Settings
from longtask.states import TaskState
from longtask.tooling.corpus import write_corpus
from longtask.tooling.live_view import query_status
from longtask.tooling.servers import LlmServer
from tests.tasks import start, wait_for_status
from workflows.task_book import TaskBook

DOCUMENTS = 3000  # enough that finding them takes a while on any machine
NOW = datetime(2026, 1, 1, tzinfo=UTC)


async def test_status_says_the_task_is_finding_its_documents_not_zero_of_zero_steps(
    client: Client, settings: Settings, worker: Worker, llm: LlmServer, tmp_path: Path
) -> None:
    write_corpus(tmp_path / "corpus", DOCUMENTS)
    task, handle = await start(client, settings, [tmp_path / "corpus"])
    before: list[TaskStatus] = []
    lines: list[str] = []
    for _ in range(3000):  # bounded: a few minutes at most
        status = await query_status(handle)
        if status is None:
            continue
        if status.record.total > 0:
            break
        before.append(status)
        shown = {**status.record.model_dump(mode="json"), "state": status.state.value}
        lines.append(status_line(task.task_id, shown))
    await handle.cancel()
    with pytest.raises(WorkflowFailureError):
        await handle.result()

    assert before, "the task knew its steps at the first answer: the window was not caught"
    for status in before:
        assert status.record.metadata["phase"] == "finding documents"
        assert status.record.eta_seconds is None
    assert all("finding documents..." in line and "0/0 steps" not in line for line in lines)


async def in_the_window(handle: WorkflowHandle[Any, Any], run: int) -> TaskStatus:
    """Wait until run ``run`` of the task is finding its documents."""
    return await wait_for_status(
        handle,
        lambda s: s.record.metadata.get("runs") == run and "phase" in s.record.metadata,
        seconds=180,
    )


async def cancelled(handle: WorkflowHandle[Any, Any]) -> None:
    await handle.cancel()
    with pytest.raises(WorkflowFailureError):
        await handle.result()


async def test_a_run_cancelled_while_it_finds_its_documents_keeps_what_earlier_runs_did(
    client: Client, settings: Settings, worker: Worker, llm: LlmServer, redis: Redis, tmp_path: Path
) -> None:
    write_corpus(tmp_path / "corpus", DOCUMENTS)
    # A short history: the task continues as new after its first batches.
    task, handle = await start(client, settings, [tmp_path / "corpus"], max_history_events=50)
    carried = await in_the_window(handle, run=2)
    assert carried.record.step > 0 and carried.record.total > carried.record.step
    assert "(0/0 steps)" not in status_line(
        task.task_id, await TaskClient(client, settings).status(task.task_id)
    )
    await cancelled(handle)

    checkpoint = await load_checkpoint(redis, task.task_id)
    assert checkpoint is not None and checkpoint.state.variables["state"] == "cancelled"
    # The documents the first run finished: named by the second run's last checkpoint, so a
    # resume skips them.
    finished = from_ranges(checkpoint.state.variables["finished"])
    assert len(finished) == carried.documents_done > 0
    assert checkpoint.state.variables["documents"] == DOCUMENTS
    assert checkpoint.state.variables["documents_digest"]
    assert checkpoint.progress == carried.record.progress


async def test_resume_skips_a_run_cut_before_it_read_its_checkpoint(
    client: Client, settings: Settings, worker: Worker, llm: LlmServer, redis: Redis, tmp_path: Path
) -> None:
    write_corpus(tmp_path / "corpus", DOCUMENTS)
    task, handle = await start(
        client, settings, [tmp_path / "corpus"], budget=TaskBudget(max_cost_usd=0.004)
    )
    stopped = await handle.result()
    assert stopped.state is TaskState.BUDGET_EXCEEDED
    spent = await load_checkpoint(redis, task.task_id)
    assert spent is not None and spent.state.variables["finished"]

    tasks = TaskClient(client, settings)
    await tasks.resume(task.task_id, None, budget_usd=1.0)
    resumed = client.get_workflow_handle(task.task_id)
    await in_the_window(resumed, run=1)
    await cancelled(resumed)
    cut = await load_checkpoint(redis, task.task_id)
    assert cut is not None and cut.state.variables["resume_from"] == spent.id

    message = await tasks.resume(task.task_id, None, budget_usd=1.0)
    assert f"from checkpoint {spent.id}" in message
    await cancelled(client.get_workflow_handle(task.task_id))

    models = ModelRoute(embedding="e", intermediate="i", reasoning="r", final="f")
    first = TaskBook(TaskInput(task_id="t", paths=["/in"], models=models), NOW)
    assert first.record(NOW).metadata["phase"] == "finding documents"
    documents = [
        DocumentRef(index=i, path=f"/in/{i}.txt", name=f"{i}.txt", sha256="0", pages=2, chunks=3)
        for i in range(3)
    ]
    first.set_documents(documents, NOW)
    first.document_started(0)
    embedded = StepResult(kind=StepKind.EMBED, document=0, outputs=["x"], usage=TokenUsage())
    first.step_finished(documents[0], StepKind.EMBED, "e", embedded, NOW)
    assert "phase" not in first.record(NOW).metadata
    done, total = first.record(NOW).step, first.record(NOW).total
    assert 0 < done < total

    second = TaskBook(first.carry_over(), NOW)
    carried = second.record(NOW)
    assert (carried.step, carried.total, carried.metadata["documents"]) == (done, total, 3)
    assert carried.metadata["phase"] == "finding documents"
    assert "(0/0 steps)" not in second.details(NOW)
    # Found again: the figures are this run's own from now on.
    second.set_documents(documents, NOW)
    assert second.record(NOW).total == total and "phase" not in second.record(NOW).metadata


def test_progress_in_words() -> None:
    carried = build_record("t", 150, 400, 12.0, {"phase": "finding documents"})
    assert progress_text(carried) == "finding documents..., 37.50 % (150/400 steps) so far"
    assert progress_text(build_record("t", 0, 0, 1.0, {"phase": "finding documents"})) == (
        "finding documents..."
    )
    assert progress_text(build_record("t", 3, 4, 1.0)) == "75.00 % (3/4 steps)"
