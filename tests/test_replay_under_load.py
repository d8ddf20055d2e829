"""Histories of real runs made the hard way replay: a loaded machine, queries all along, pauses,
a cancel, continue-as-new, a killed worker, and a worker that keeps no workflow in memory.

A nondeterminism that only shows under load (a result reaching workflow code in another
workflow task than live) is found by recording such runs and replaying them, not by an idle
run. Every run of every task here is replayed, and every worker log is searched for the error.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from temporalio.client import (
    Client,
    WorkflowExecutionStatus,
    WorkflowFailureError,
    WorkflowHandle,
)
from temporalio.worker import Replayer

from bench.harness import cpu_load
from longtask.client import TaskClient
from longtask.payload_store import data_converter
from longtask.settings import Settings
from longtask.states import TaskState
from longtask.tooling.live_view import query_status
from longtask.tooling.servers import LlmServer
from longtask.tooling.worker_process import WorkerProcess
from tests.conftest import EXAMPLES, PAYLOAD_THRESHOLD
from tests.tasks import start, wait_for_status, write_documents
from tests.test_replay import patches_of
from workflows.document_task import DocumentTaskWorkflow

NONDETERMINISM = ("Nondeterminism", "TMPRL1100")
# Beside the suite, two processes that keep both cores busy, as other work on the machine.
CPU_HOGS = 2


@pytest.fixture
def loaded_machine() -> Iterator[None]:
    with cpu_load(CPU_HOGS):
        yield


async def keep_querying(handles: list[WorkflowHandle[Any, Any]], errors: list[str]) -> None:
    """Ask every task for its status all the time, as `watch` and dashboards do."""
    while True:
        for handle in handles:
            try:
                await query_status(handle)
            except Exception as error:
                errors.append(str(error))
        await asyncio.sleep(0.05)


async def runs_of(client: Client, workflow_id: str) -> list[WorkflowHandle[Any, Any]]:
    """Every run of a task: continue-as-new makes several."""
    return [
        client.get_workflow_handle(execution.id, run_id=execution.run_id)
        async for execution in client.list_workflows(f"WorkflowId = '{workflow_id}'")
    ]


def local_activity_markers(events: list[dict[str, Any]]) -> int:
    return sum(
        1
        for event in events
        if event.get("markerRecordedEventAttributes", {}).get("markerName") == "core_local_activity"
    )


async def replay_every_run(
    client: Client, workflow_ids: list[str], payloads: Path, kept: Path
) -> int:
    """Replay each run of each task; returns how many runs were replayed.

    Every history is also written under ``kept``, so a failure can be studied after the run.
    """
    replayer = Replayer(
        workflows=[DocumentTaskWorkflow],
        data_converter=data_converter(payloads, PAYLOAD_THRESHOLD),
    )
    replayed = 0
    for workflow_id in workflow_ids:
        for handle in await runs_of(client, workflow_id):
            history = await handle.fetch_history()
            kept.mkdir(parents=True, exist_ok=True)  # noqa: ASYNC240 (test, small file)
            (kept / f"{workflow_id}-{handle.run_id}.json").write_text(history.to_json())
            result = await replayer.replay_workflow(history, raise_on_replay_failure=False)
            assert result.replay_failure is None, f"{workflow_id}: {result.replay_failure}"
            # The mirror never goes through a local activity: nothing can reorder on replay.
            assert local_activity_markers(history.to_json_dict()["events"]) == 0
            replayed += 1
    return replayed


@pytest.mark.timeout(420)
@pytest.mark.parametrize("cached", [True, False], ids=["cached-workers", "no-cache-worker"])
async def test_runs_under_load_with_queries_pauses_cancel_and_kills_replay(
    cached: bool,
    client: Client,
    settings: Settings,
    llm: LlmServer,
    payload_dir: Path,
    workers: list[WorkerProcess],
    tmp_path: Path,
    loaded_machine: None,
) -> None:
    llm.add({"type": "delay", "seconds": 0.05, "times": None})
    env = {} if cached else {"LTM_MAX_CACHED_WORKFLOWS": "0"}
    logs = [tmp_path / "worker-1.log"]
    first = WorkerProcess(settings, logs[0], extra_env=env)
    workers.append(first)

    large = write_documents(tmp_path / "large", count=120, pages=1)  # past the inline limit
    rolling = write_documents(tmp_path / "rolling", count=30, pages=1)
    cancelled = write_documents(tmp_path / "cancelled", count=40, pages=2)
    _, large_task = await start(client, settings, large)
    # One document at a time, long enough that the pause finds it running on any machine.
    paused = write_documents(tmp_path / "paused", count=12, pages=2)
    _, paused_task = await start(client, settings, [EXAMPLES, *paused], document_concurrency=1)
    _, rolled_task = await start(
        client, settings, rolling, max_history_events=120, document_concurrency=2
    )
    _, cancelled_task = await start(client, settings, cancelled, document_concurrency=2)
    handles = [large_task, paused_task, rolled_task, cancelled_task]
    query_errors: list[str] = []
    querying = asyncio.create_task(keep_querying(handles, query_errors))
    try:
        await wait_for_status(paused_task, lambda s: s.record.step >= 2, seconds=120)
        # As `ltm pause` and `ltm resume` ask: a steer signal, its answer read by a query.
        tasks = TaskClient(client, settings)
        assert await tasks.pause(paused_task.id) == "paused"
        await asyncio.sleep(1.5)
        assert await tasks.resume(paused_task.id) == f"task {paused_task.id} resumed"

        await wait_for_status(cancelled_task, lambda s: s.record.step >= 4, seconds=120)
        await cancelled_task.cancel()

        if cached:
            # A worker dies mid-task; another rebuilds every task it held from history.
            await wait_for_status(large_task, lambda s: s.record.step >= 40, seconds=180)
            first.process.send_signal(signal.SIGKILL)
            first.process.wait(timeout=10)
        logs.append(tmp_path / "worker-2.log")
        workers.append(WorkerProcess(settings, logs[-1], extra_env=env))

        for handle in (large_task, paused_task, rolled_task):
            assert (await handle.result()).state is TaskState.COMPLETED
        # A cancelled task ends once its batches answered: on a worker without cache, later.
        with contextlib.suppress(WorkflowFailureError):
            await cancelled_task.result()
        assert (await cancelled_task.describe()).status in (
            WorkflowExecutionStatus.COMPLETED,
            WorkflowExecutionStatus.CANCELED,
        )
        ended = await query_status(cancelled_task)
        assert ended is not None and ended.state is TaskState.CANCELLED
    finally:
        querying.cancel()

    ids = [handle.id for handle in handles]
    # Replay first: a query that met a nondeterminism names no task, a failed replay does.
    replayed = await replay_every_run(client, ids, payload_dir, tmp_path / "histories")
    assert not [e for e in query_errors if any(word in e for word in NONDETERMINISM)]
    assert replayed > len(ids), "the rolling task never continued as new"
    for log in logs:
        text = log.read_text(errors="replace")
        assert not any(word in text for word in NONDETERMINISM), log.name
    history = await large_task.fetch_history()
    assert "checkpoint-sink" in patches_of(history.to_json_dict()["events"])
