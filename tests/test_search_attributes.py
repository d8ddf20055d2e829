"""Tasks can be filtered by state, progress and cost in the Temporal UI and the CLI."""

from __future__ import annotations

import asyncio
import subprocess

from temporalio.client import Client
from temporalio.worker import Worker

from longtask.search_attributes import TASK_COST, TASK_PROGRESS, TASK_STATE, registered
from longtask.settings import Settings
from longtask.tooling.servers import LlmServer
from longtask.tooling.stack import installed_tool
from tests.conftest import EXAMPLES
from tests.tasks import start


def temporal_list(address: str, query: str) -> str:
    done = subprocess.run(
        [installed_tool("temporal"), "workflow", "list", "--address", address, "--query", query],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    return done.stdout


async def test_a_finished_task_is_found_by_state_with_its_progress_and_cost(
    client: Client, settings: Settings, worker: Worker, llm: LlmServer
) -> None:
    assert await registered(client)
    task, handle = await start(client, settings, [EXAMPLES / "incident-postmortem.txt"])
    result = await handle.result()

    described = await handle.describe()
    attributes = described.typed_search_attributes
    assert attributes.get(TASK_STATE) == "completed"
    assert attributes.get(TASK_PROGRESS) == 100.0
    assert attributes.get(TASK_COST) == result.cost_so_far > 0

    query = f"LtmState = 'completed' AND WorkflowId = '{task.task_id}'"
    for _ in range(50):  # visibility is written a moment after the task closes
        listed = await asyncio.to_thread(temporal_list, settings.temporal_address, query)
        if task.task_id in listed:
            break
        await asyncio.sleep(0.2)
    assert task.task_id in listed
    none = f"LtmState = 'failed' AND WorkflowId = '{task.task_id}'"
    assert task.task_id not in await asyncio.to_thread(
        temporal_list, settings.temporal_address, none
    )
