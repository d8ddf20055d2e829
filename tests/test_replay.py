"""Recorded histories replay with the current workflow code: changes must stay deterministic."""

from __future__ import annotations

import json
from pathlib import Path

from temporalio.client import Client, WorkflowHistory
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.worker import Replayer, Worker

from longtask.payload_store import data_converter
from longtask.settings import Settings
from longtask.states import TaskState
from tests.conftest import EXAMPLES, PAYLOAD_THRESHOLD
from tests.servers import LlmServer
from tests.tasks import start
from workflows.document_task import DocumentTaskWorkflow

HISTORIES = Path(__file__).parent / "histories"


def replayer(payloads: Path | None = None) -> Replayer:
    converter = (
        pydantic_data_converter if payloads is None else data_converter(payloads, PAYLOAD_THRESHOLD)
    )
    return Replayer(workflows=[DocumentTaskWorkflow], data_converter=converter)


async def test_a_fresh_history_with_a_retry_replays(
    client: Client, settings: Settings, worker: Worker, llm: LlmServer, payload_dir: Path
) -> None:
    llm.add({"type": "fail", "status": 500, "times": 1, "match": {"model": "gpt-4.1"}})
    _task, handle = await start(client, settings, [EXAMPLES])
    assert (await handle.result()).state is TaskState.COMPLETED
    history = await handle.fetch_history()
    result = await replayer(payload_dir).replay_workflow(history)
    assert result.replay_failure is None


async def test_committed_histories_replay() -> None:
    files = sorted(HISTORIES.glob("*.json"))
    assert files, "no committed histories"
    for path in files:
        history = WorkflowHistory.from_json(path.stem, json.loads(path.read_text()))
        result = await replayer().replay_workflow(history)
        assert result.replay_failure is None, path.name
