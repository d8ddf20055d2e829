"""The Python client against the test stack: start, watch, status, list, pause, resume, cancel,
checkpoints; its sync wrapper; the task's page in the Temporal UI; `ltm list` filters."""

from __future__ import annotations

import asyncio
import json
import time
from typing import Any

from temporalio.client import Client
from temporalio.worker import Worker

from longtask.client import SyncTaskClient, TaskClient
from longtask.engine.names import STEER_SIGNAL
from longtask.settings import Settings
from longtask.states import TaskState
from longtask.task_list import TaskFilter
from longtask.tooling.servers import LlmServer
from tests.cli_runs import ltm
from tests.conftest import EXAMPLES

ONE_DOCUMENT = str(EXAMPLES / "incident-postmortem.txt")


async def test_start_watch_status_and_checkpoints(
    client: Client, settings: Settings, worker: Worker, llm: LlmServer
) -> None:
    tasks = TaskClient(client, settings)
    task_id = await tasks.start([str(EXAMPLES)], models={"final": "house-final"})
    records = [record async for record in tasks.watch(task_id)]
    assert records and records[-1].progress == 100
    assert [r.step for r in records] == sorted(r.step for r in records)

    status = await tasks.status(task_id)
    assert status["state"] == "completed" and status["task_id"] == task_id
    assert all("cost_usd" in row for row in status["ledger"])
    result = await tasks.result(task_id)
    assert result is not None and result.state is TaskState.COMPLETED

    checkpoints = await tasks.list_checkpoints(task_id)
    newest = await tasks.load_checkpoint(task_id)
    assert checkpoints and newest is not None and checkpoints[0] == newest.id
    older = await tasks.load_checkpoint(task_id, checkpoints[-1])
    assert older is not None and older.id == checkpoints[-1]


async def test_the_task_page_says_what_it_works_on(
    client: Client, settings: Settings, worker: Worker, llm: LlmServer
) -> None:
    tasks = TaskClient(client, settings)
    task_id = await tasks.start([str(EXAMPLES)], models={"final": "house-final"})
    description = await client.get_workflow_handle(task_id).describe()
    summary = await description.static_summary()
    details = await description.static_details()
    assert summary == "3 document(s) from examples -> house-final"
    assert details is not None
    assert f"`{EXAMPLES}`" in details and "final `house-final`" in details
    assert "**Budget** none" in details
    await tasks.result(task_id)


async def test_pause_resume_and_cancel(
    client: Client, settings: Settings, worker: Worker, llm: LlmServer
) -> None:
    llm.add({"type": "delay", "seconds": 0.5, "times": None})
    tasks = TaskClient(client, settings)
    task_id = await tasks.start([str(EXAMPLES)])
    async for record in tasks.watch(task_id):
        if record.total > 0:
            break
    assert await tasks.pause(task_id) == "paused"
    assert (await tasks.status(task_id))["state"] == "paused"
    assert await tasks.resume(task_id) == f"task {task_id} resumed"
    await tasks.cancel(task_id)
    assert await tasks.result(task_id) is None
    # Both went as signals, each an event of the history; no update was accepted.
    events = (await client.get_workflow_handle(task_id).fetch_history()).events
    steered = [
        e.workflow_execution_signaled_event_attributes.signal_name
        for e in events
        if e.HasField("workflow_execution_signaled_event_attributes")
    ]
    assert steered.count(STEER_SIGNAL) == 2
    assert not any(
        event.HasField("workflow_execution_update_accepted_event_attributes") for event in events
    )


async def test_the_sync_client_does_the_same_without_asyncio(
    client: Client, settings: Settings, worker: Worker, llm: LlmServer
) -> None:
    def use_it() -> tuple[str, list[float], list[str]]:
        with SyncTaskClient.connect(settings) as tasks:
            task_id = tasks.start([ONE_DOCUMENT])
            progress = [record.progress for record in tasks.watch(task_id)]
            return task_id, progress, tasks.list_checkpoints(task_id)

    task_id, progress, checkpoints = await asyncio.to_thread(use_it)
    assert progress[-1] == 100
    assert checkpoints and all(c.startswith(f"{task_id}_") for c in checkpoints)


async def test_list_filters_by_state_progress_and_cost(
    client: Client, settings: Settings, worker: Worker, llm: LlmServer
) -> None:
    tasks = TaskClient(client, settings)
    done = [await tasks.start([ONE_DOCUMENT]) for _ in range(2)]
    for task_id in done:
        await tasks.result(task_id)
    llm.add({"type": "delay", "seconds": 1, "times": None})
    cancelled = await tasks.start([ONE_DOCUMENT])
    await tasks.cancel(cancelled)
    await tasks.result(cancelled)
    mine = {*done, cancelled}

    async def listed(*options: str) -> dict[str, dict[str, Any]]:
        shown = await ltm(settings, "list", "--limit", "1000", "--json", *options)
        assert shown.returncode == 0, shown.stderr
        return {row["task_id"]: row for row in json.loads(shown.stdout) if row["task_id"] in mine}

    # The visibility store catches up with the tasks' last updates within moments.
    deadline = time.monotonic() + 60
    while set(await listed("--state", "completed")) != set(done):
        assert time.monotonic() < deadline, "the completed tasks never showed in the list"
        await asyncio.sleep(0.5)

    completed = await listed("--state", "completed", "--min-progress", "100")
    assert set(completed) == set(done)
    assert all(row["progress"] == 100 and row["cost_usd"] > 0 for row in completed.values())
    assert set(await listed("--state", "cancelled")) == {cancelled}
    assert set(await listed("--min-cost", "1000")) == set()
    cheapest = min(completed, key=lambda task_id: completed[task_id]["cost_usd"])
    cheap = await listed("--state", "completed", "--max-cost", str(completed[cheapest]["cost_usd"]))
    assert cheapest in cheap and set(cheap) <= set(done)
    assert set(await listed("--max-progress", "99.99")) <= {cancelled}

    found = await tasks.list_tasks(TaskFilter(state=TaskState.COMPLETED, limit=1000))
    assert set(done) <= {task.task_id for task in found}
    table = await ltm(settings, "list", "--state", "completed", "--limit", "1000")
    assert all(task_id in table.stdout for task_id in done)


async def test_ledger_rows_are_priced_at_the_tasks_own_prices(
    client: Client, settings: Settings, worker: Worker, llm: LlmServer
) -> None:
    prices = {"gpt-4.1": 100.0, "gemini-2.5-flash": 0.0, "deepseek-v3.2": 1.0}
    tasks = TaskClient(client, settings.model_copy(update={"prices": prices}))
    task_id = await tasks.start([ONE_DOCUMENT])
    await tasks.result(task_id)
    status = await tasks.status(task_id)
    rows = status["ledger"]
    for row in rows:
        tokens = row["prompt_tokens"] + row["completion_tokens"]
        assert row["cost_usd"] == round(tokens * prices[row["model"]] / 1_000_000, 6), row
    assert abs(sum(row["cost_usd"] for row in rows) - status["cost_so_far"]) < 1e-5 * len(rows)
    assert [row["step"] for row in rows] == sorted(
        (row["step"] for row in rows), key=["embed", "summarize", "reason", "report"].index
    )
