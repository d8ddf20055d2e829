"""A task whose history grows long continues as a new run, carrying everything it did."""

from __future__ import annotations

from pathlib import Path

from temporalio.client import Client
from temporalio.worker import Worker

from longtask.settings import Settings
from longtask.states import TaskState
from longtask.tooling.servers import LlmServer
from tests.tasks import start, wait_for_status, write_documents


async def test_a_long_task_rolls_over_to_new_runs_without_redoing_anything(
    client: Client, settings: Settings, worker: Worker, llm: LlmServer, tmp_path: Path
) -> None:
    documents, pages = 30, 1
    paths = write_documents(tmp_path, count=documents, pages=pages)
    task, handle = await start(
        client, settings, paths, document_concurrency=1, max_history_events=50
    )
    first_run = (await handle.describe()).run_id
    result = await handle.result()

    assert result.state is TaskState.COMPLETED
    assert [d.name for d in result.documents] == [p.name for p in paths]
    assert all(d.report for d in result.documents)
    # Every call made once across all runs.
    assert llm.count("/chat/completions") == documents * (pages + 2)
    assert llm.count("/embeddings") == documents
    assert result.usage.total_tokens > 0 and result.cost_so_far > 0
    last = client.get_workflow_handle(task.task_id)
    assert (await last.describe()).run_id != first_run
    status = await wait_for_status(last, lambda s: s.state is TaskState.COMPLETED)
    assert status.record.metadata["runs"] > 1
    assert status.record.step == status.record.total
    # One life, told once: started, then completed, across the runs.
    assert [t.target for t in status.transitions] == [TaskState.RUNNING, TaskState.COMPLETED]
    assert sum(s.successes for s in status.calls.values()) == documents * (pages + 3)
