"""A worker killed with SIGKILL mid-task: another worker finishes the same task."""

from __future__ import annotations

import asyncio
import signal
from pathlib import Path
from typing import Any

from temporalio.api.enums.v1 import PendingActivityState
from temporalio.api.workflow.v1 import PendingActivityInfo
from temporalio.client import Client, WorkflowHandle

from longtask.settings import Settings
from longtask.states import TaskState
from longtask.tooling.corpus import write_corpus
from longtask.tooling.servers import LlmServer, free_port
from longtask.tooling.worker_process import WorkerProcess, read_metrics
from tests.tasks import slow_task_on_a_worker, start, wait_for_status, write_documents


async def test_sigkill_mid_task_then_a_new_worker_finishes_it(
    client: Client,
    settings: Settings,
    llm: LlmServer,
    workers: list[WorkerProcess],
    tmp_path: Path,
) -> None:
    llm.add({"type": "delay", "seconds": 0.4, "times": None})
    # Long enough that a status poll on a loaded machine finds it mid-way.
    pages, documents = 20, 2
    paths = write_documents(tmp_path / "docs", count=documents, pages=pages)
    first = WorkerProcess(settings, tmp_path / "first.log")
    workers.append(first)
    task, handle = await start(client, settings, paths, call_concurrency=2)

    before = await wait_for_status(handle, lambda s: 10 <= s.record.step < s.record.total - 6)
    first.process.send_signal(signal.SIGKILL)
    assert first.process.wait(timeout=10) == -signal.SIGKILL
    killed_at_step = before.record.step

    metrics_port = free_port()
    workers.append(WorkerProcess(settings, tmp_path / "second.log", metrics_port))
    result = await handle.result()

    assert result.state is TaskState.COMPLETED
    assert all(d.state is TaskState.COMPLETED for d in result.documents)
    metrics = await asyncio.to_thread(read_metrics, metrics_port)
    assert f'task_id="{task.task_id}"' in metrics
    assert "ltm_provider_attempts_total{" in metrics
    assert 'status="success"' in metrics
    status = await wait_for_status(handle, lambda s: s.state is TaskState.COMPLETED)
    assert status.record.step == status.record.total
    # Finished calls survived in heartbeat details: only calls in flight at the kill (2 per
    # running step) and those finished after the last heartbeat are made again, far fewer
    # than the calls a restart from zero would repeat.
    repeated = llm.count("/chat/completions") - documents * (pages + 2)
    assert 0 <= repeated <= 2 * 2 * documents
    assert repeated < killed_at_step
    # A lost worker is no provider failure: no retrying state, no attempt used up.
    assert TaskState.RETRYING not in [t.target for t in status.transitions]
    assert all(stats.errors == stats.timeouts == 0 for stats in status.calls.values())


async def test_sigterm_hands_the_steps_over_at_once_and_exits(
    client: Client,
    settings: Settings,
    llm: LlmServer,
    workers: list[WorkerProcess],
    tmp_path: Path,
) -> None:
    first, handle = await slow_task_on_a_worker(
        client, settings, llm, workers, tmp_path / "docs", pages=4
    )

    first.process.send_signal(signal.SIGTERM)
    # The steps are handed over at once; the worker then exits cleanly on its own.
    assert first.process.wait(timeout=20) == 0
    assert "worker stopped" in first.log.read_text()

    workers.append(WorkerProcess(settings, tmp_path / "second.log"))
    result = await handle.result()
    assert result.state is TaskState.COMPLETED
    # Calls finished before SIGTERM were kept; the one in flight (one call at a time) was cut
    # and asked again by the second worker.
    assert 4 + 2 <= llm.count("/chat/completions") <= 4 + 2 + 1
    assert "handed over" in (await handle.fetch_history()).to_json()


STARTED = PendingActivityState.PENDING_ACTIVITY_STATE_STARTED


async def pending_load(handle: WorkflowHandle[Any, Any]) -> PendingActivityInfo | None:
    """The task's `load_documents` attempt in flight, if one is."""
    description = await handle.describe()
    for pending in description.raw_description.pending_activities:
        if pending.activity_type.name == "load_documents":
            return pending
    return None


async def test_a_worker_killed_while_it_finds_documents_is_replaced_at_once(
    client: Client,
    settings: Settings,
    llm: LlmServer,
    workers: list[WorkerProcess],
    tmp_path: Path,
) -> None:
    """Finding a large folder's documents heartbeats: the next attempt starts after the
    heartbeat timeout, not after the five minutes the whole search may take."""
    write_corpus(tmp_path / "corpus", 3000)  # finding them takes a while on any machine
    first = WorkerProcess(settings, tmp_path / "first.log")
    workers.append(first)
    _task, handle = await start(client, settings, [tmp_path / "corpus"])
    for _ in range(1200):  # bounded: two minutes at most
        started = await pending_load(handle)
        if (
            started is not None
            and started.state == PendingActivityState.PENDING_ACTIVITY_STATE_STARTED
        ):
            break
        await asyncio.sleep(0.1)
    else:
        raise AssertionError("the task never started finding its documents")
    first.process.send_signal(signal.SIGKILL)
    first.process.wait(timeout=10)
    workers.append(WorkerProcess(settings, tmp_path / "second.log"))

    # Well before the five-minute limit of the whole search, another attempt found them.
    status = await wait_for_status(handle, lambda s: s.record.total > 0, seconds=120)
    assert status.documents == 3000
    await handle.cancel()
