"""Recorded histories replay with the current workflow code: changes must stay deterministic."""

from __future__ import annotations

import base64
import json
from pathlib import Path
from typing import Any

import pytest
from temporalio.client import Client, WorkflowHistory
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.worker import Replayer, Worker

from longtask.payload_store import data_converter
from longtask.settings import Settings
from longtask.states import TaskState
from tests.conftest import EXAMPLES, PAYLOAD_THRESHOLD, TEST_API_KEY
from tests.record_history import RECORDING_API_KEY, holds_secret
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


def committed() -> list[Path]:
    return sorted(HISTORIES.glob("*.json"))


def load(path: Path) -> WorkflowHistory:
    return WorkflowHistory.from_json(path.stem, json.loads(path.read_text()))


@pytest.mark.parametrize("path", committed(), ids=lambda path: path.stem)
async def test_committed_histories_replay(path: Path) -> None:
    result = await replayer().replay_workflow(load(path))
    assert result.replay_failure is None, path.name


def patches_of(events: list[dict[str, Any]]) -> set[str]:
    """The ``workflow.patched`` ids a history recorded."""
    found = set()
    for event in events:
        marker = event.get("markerRecordedEventAttributes", {})
        if marker.get("markerName") == "core_patch":
            data = marker["details"]["patch-data"]["payloads"][0]["data"]
            found.add(json.loads(base64.b64decode(data))["id"])
    return found


def test_committed_histories_cover_each_path_of_the_workflow() -> None:
    """Recorded with tests/record_history.py: before batches, batches, a retried batch, a
    failed document, a task with no usable document, and batches retried until their calls'
    own attempts are used up."""
    histories = {path.stem: json.loads(path.read_text())["events"] for path in committed()}
    activities = {
        name: {
            event["activityTaskScheduledEventAttributes"]["activityType"]["name"]
            for event in events
            if "activityTaskScheduledEventAttributes" in event
        }
        for name, events in histories.items()
    }
    ends = {name: events[-1]["eventType"] for name, events in histories.items()}
    assert "embed_chunks" in activities["examples-completed"]
    assert "document-batches" not in patches_of(histories["examples-completed"])
    for name in ("examples-batches", "examples-retry", "failed-documents"):
        assert "process_documents" in activities[name], name
        assert "document-batches" in patches_of(histories[name]), name
    retried = [
        event["activityTaskStartedEventAttributes"].get("attempt", 1)
        for event in histories["examples-retry"]
        if "activityTaskStartedEventAttributes" in event
    ]
    assert max(retried) > 1
    assert ends["examples-retry"] == "EVENT_TYPE_WORKFLOW_EXECUTION_COMPLETED"
    assert ends["failed-documents"] == "EVENT_TYPE_WORKFLOW_EXECUTION_FAILED"
    assert "load-failure-ends-task" in patches_of(histories["no-usable-document"])
    assert ends["no-usable-document"] == "EVENT_TYPE_WORKFLOW_EXECUTION_FAILED"
    assert "batches-fail-by-call-attempts" in patches_of(histories["calls-retry"])
    assert "batches-fail-by-call-attempts" not in patches_of(histories["examples-retry"])
    assert ends["calls-retry"] == "EVENT_TYPE_WORKFLOW_EXECUTION_COMPLETED"


def test_committed_histories_hold_no_api_key() -> None:
    # The scan reads inside the payloads (base64 in the JSON): it finds a document's name.
    assert holds_secret(load(HISTORIES / "examples-batches.json"), "incident-postmortem.txt")
    for path in committed():
        for key in (RECORDING_API_KEY, TEST_API_KEY):
            assert not holds_secret(load(path), key), path.name
