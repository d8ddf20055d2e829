"""A busy worker is not a dead one: many tasks at once on one worker all complete, and no
activity of theirs is declared timed out while the worker is alive."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest
from temporalio.api.enums.v1 import TimeoutType
from temporalio.client import Client, WorkflowHandle

from longtask.models import TaskResult
from longtask.settings import Settings
from longtask.states import TaskState
from longtask.tooling.servers import LlmServer
from longtask.tooling.worker_process import WorkerProcess
from tests.tasks import start, write_documents

TASKS = 20
DOCUMENTS = 10


def heartbeat_timeouts(history: Any) -> list[str]:
    """Activities of a history that a heartbeat timeout ended or sent to another attempt.

    A history keeps an activity's last attempt only, with the failure that ended the one
    before (``last_failure``); an attempt that ended for good is an ActivityTaskTimedOut.
    """
    found = []
    for event in history.events:
        if event.HasField("activity_task_started_event_attributes"):
            started = event.activity_task_started_event_attributes
            failure = started.last_failure
            if failure.timeout_failure_info.timeout_type == TimeoutType.TIMEOUT_TYPE_HEARTBEAT:
                found.append(f"attempt {started.attempt - 1} of event {event.event_id}")
        if event.HasField("activity_task_timed_out_event_attributes"):
            found.append(f"timed out for good at event {event.event_id}")
    return found


@pytest.mark.timeout(900)
async def test_twenty_tasks_at_once_on_one_worker_all_complete_with_no_heartbeat_timeout(
    client: Client,
    settings: Settings,
    llm: LlmServer,
    workers: list[WorkerProcess],
    tmp_path: Path,
) -> None:
    # Real-looking latency: every answer waits 200 ms, so many calls are in flight at once.
    llm.add({"type": "delay", "seconds": 0.2, "times": None})
    workers.append(WorkerProcess(settings, tmp_path / "worker.log"))
    handles: list[WorkflowHandle[Any, TaskResult]] = []
    for task in range(TASKS):
        paths = write_documents(tmp_path / f"task-{task}", DOCUMENTS, pages=2)
        _, handle = await start(client, settings, paths)
        handles.append(handle)
    results = await asyncio.gather(*(handle.result() for handle in handles))

    assert all(worker.process.poll() is None for worker in workers), "the worker died"
    assert [r.state for r in results] == [TaskState.COMPLETED] * TASKS
    assert all(len(r.documents) == DOCUMENTS for r in results)
    # The worker never died: no heartbeat of its may have been missed.
    for handle in handles:
        history = await handle.fetch_history()
        assert heartbeat_timeouts(history) == [], handle.id
