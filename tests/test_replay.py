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

from longtask.engine.names import ASK_DOCUMENTS_SIGNAL
from longtask.payload_store import data_converter
from longtask.settings import Settings
from longtask.states import TaskState
from longtask.tooling.servers import LlmServer
from tests.conftest import EXAMPLES, PAYLOAD_THRESHOLD, TEST_API_KEY
from tests.record_history import RECORDING_API_KEY, holds_secret
from tests.tasks import start
from workflows.document_task import DocumentTaskWorkflow

HISTORIES = Path(__file__).parent / "histories"
ACCEPTED = "workflowExecutionUpdateAcceptedEventAttributes"
SIGNALED = "workflowExecutionSignaledEventAttributes"


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
    """A committed history under the workflow id it ran with: the task checks its task id
    against it (patch ``task-id-checked``)."""
    recorded = json.loads(path.read_text())
    started = recorded["events"][0]["workflowExecutionStartedEventAttributes"]
    return WorkflowHistory.from_json(started.get("workflowId", path.stem), recorded)


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
    failed document, a task with no usable document, a task cancelled mid-batch, batches
    retried until their calls' own attempts are used up, and batches that take documents (asked
    by update, then by signal)."""
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
    # A batch cut by the task's cancel answered before the task ended, the others waiting.
    cut = histories["cancelled-mid-batch"]
    assert "cancel-waits-for-batches" in patches_of(cut)
    kinds = [event["eventType"] for event in cut]
    cancel_asked = kinds.index("EVENT_TYPE_ACTIVITY_TASK_CANCEL_REQUESTED")
    assert "EVENT_TYPE_ACTIVITY_TASK_COMPLETED" in kinds[cancel_asked:]
    assert ends["cancelled-mid-batch"] == "EVENT_TYPE_WORKFLOW_EXECUTION_CANCELED"
    assert "batches-fail-by-call-attempts" in patches_of(histories["calls-retry"])
    assert "batches-fail-by-call-attempts" not in patches_of(histories["examples-retry"])
    assert ends["calls-retry"] == "EVENT_TYPE_WORKFLOW_EXECUTION_COMPLETED"
    # Batches that take documents as places free, one of them retried: its new attempt asked
    # for the documents it had taken.
    taking = histories["batches-take-documents"]
    assert "batches-take-documents" in patches_of(taking)
    inputs = [event[ACCEPTED]["acceptedRequest"]["input"] for event in taking if ACCEPTED in event]
    asked = [json.loads(base64.b64decode(i["args"]["payloads"][0]["data"])) for i in inputs]
    assert any(ask["want"] > 0 for ask in asked)
    assert any(ask["again"] for ask in asked)
    assert ends["batches-take-documents"] == "EVENT_TYPE_WORKFLOW_EXECUTION_COMPLETED"
    # The same, asked by signal: a retried batch's new attempt asked again.
    signalled = histories["batches-ask-by-signal"]
    assert {"batches-take-documents", "batches-ask-by-signal"} <= patches_of(signalled)
    sent = [event[SIGNALED] for event in signalled if SIGNALED in event]
    asks = [
        json.loads(base64.b64decode(signal["input"]["payloads"][0]["data"]))
        for signal in sent
        if signal["signalName"] == ASK_DOCUMENTS_SIGNAL
    ]
    assert any(ask["want"] > 0 for ask in asks)
    assert any(ask["again"] for ask in asks)
    assert not [event for event in signalled if ACCEPTED in event]
    assert ends["batches-ask-by-signal"] == "EVENT_TYPE_WORKFLOW_EXECUTION_COMPLETED"


def test_committed_histories_hold_no_api_key() -> None:
    # The scan reads inside the payloads (base64 in the JSON): it finds a document's name.
    assert holds_secret(load(HISTORIES / "examples-batches.json"), "incident-postmortem.txt")
    for path in committed():
        for key in (RECORDING_API_KEY, TEST_API_KEY):
            assert not holds_secret(load(path), key), path.name


RACE = HISTORIES / "local-activity-race" / "nondeterminism-300-documents.json"


def late_local_activity_results(events: list[dict[str, Any]]) -> list[int]:
    """Markers of the mirror's local activity left alone at the end of their workflow task.

    In a run of the local-activity mirror, a written checkpoint is followed at once by the
    search-attribute upsert in the same workflow-task completion. A marker left last means its
    result reached the workflow only in the next workflow task: the SDK core completed the task
    early because a query was answered while the result waited (temporalio 1.35,
    ``managed_run.rs``: query responses with pending local-activity resolutions force a new
    task), yet the marker names the first activation, so a replay hands the result over sooner.
    """
    late = []
    for index, event in enumerate(events):
        marker = event.get("markerRecordedEventAttributes", {})
        if marker.get("markerName") != "core_local_activity":
            continue
        after = events[index + 1] if index + 1 < len(events) else {}
        same_task = after.get("upsertWorkflowSearchAttributesEventAttributes", {}).get(
            "workflowTaskCompletedEventId"
        ) == marker.get("workflowTaskCompletedEventId")
        if not same_task and "workflowExecutionCompletedEventAttributes" not in after:
            late.append(int(event["eventId"]))
    return late


async def test_the_recorded_nondeterminism_is_the_local_activity_race() -> None:
    """The history of a 300-document task recorded under load by the release that mirrored
    checkpoints through a local activity. No workflow code can replay it: the same code path
    left its marker both with and without the commands that follow it, and replay always hands
    the result over in the first activation. The mirror no longer goes through a local
    activity (activities/checkpoint_sink.py; test_replay_under_load.py replays loaded runs)."""
    history = load(RACE)
    events = history.to_json_dict()["events"]
    late = late_local_activity_results(events)
    # The first late result replays by luck: nothing else was ordered before its commands.
    assert late == [135, 201]
    result = await replayer().replay_workflow(history, raise_on_replay_failure=False)
    assert result.replay_failure is not None
    message = str(result.replay_failure)
    assert "Nondeterminism" in message and "HistoryEvent(id: 217, TimerStarted)" in message
    # The first command the replay could not match comes right after the second late result.
    completed = next(e for e in events if e["eventId"] == "217")
    assert completed["eventType"] == "EVENT_TYPE_TIMER_STARTED"


LATE_UPDATE = HISTORIES / "update-after-timed-out-task" / "nondeterminism-take-documents.json"


def updates_after_a_timed_out_task(events: list[dict[str, Any]]) -> list[int]:
    """Accepted updates whose request the server sequenced after a workflow task that timed
    out, behind an event of the task's own (a timer, a result) that came before that task.

    The worker that rebuilt the task (the first one was killed) ran those events in one
    activation and the update in the next, so the commands the events caused came first;
    a replay runs the update with the events, before them (temporalio 1.35).
    """
    by_id = {int(event["eventId"]): event for event in events}
    late = []
    for event in events:
        accepted = event.get(ACCEPTED)
        if accepted is None:
            continue
        sequenced = int(accepted["acceptedRequestSequencingEventId"])
        timed_out = by_id[sequenced - 1]["eventType"] == "EVENT_TYPE_WORKFLOW_TASK_TIMED_OUT"
        if timed_out and not by_id[sequenced - 3]["eventType"].startswith(
            "EVENT_TYPE_WORKFLOW_TASK"
        ):
            late.append(int(event["eventId"]))
    return late


async def test_the_recorded_nondeterminism_is_an_update_after_a_timed_out_task() -> None:
    """A 120-document task recorded under load (test_replay_under_load.py) when batches asked
    for documents with an update. Its worker was killed while a timer had fired; two retried
    batches asked again while the workflow task waited on the dead worker's queue. The new
    worker wrote the checkpoint's search attributes and the next timer before it accepted the
    updates; a replay accepts them first and cannot match the history. Batches now ask with a
    signal, an event with its place in the history (PATCH_BATCHES_ASK_BY_SIGNAL)."""
    history = load(LATE_UPDATE)
    events = history.to_json_dict()["events"]
    assert updates_after_a_timed_out_task(events) == [81, 83]
    result = await replayer().replay_workflow(history, raise_on_replay_failure=False)
    assert result.replay_failure is not None
    message = str(result.replay_failure)
    assert "Update machine does not handle this event" in message
    assert "HistoryEvent(id: 79, UpsertWorkflowSearchAttributes)" in message
    # No committed history of the current code asks for documents with an update.
    signalled = load(HISTORIES / "batches-ask-by-signal.json").to_json_dict()["events"]
    assert not [event for event in signalled if ACCEPTED in event]
