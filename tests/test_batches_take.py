"""A batch takes its next documents from its task as its places free: after a lost worker
its new attempt takes back those it had, and a paused task hands out none."""

from __future__ import annotations

import asyncio
import json
import re
import signal
from pathlib import Path
from typing import Any

from temporalio.api.history.v1 import HistoryEvent
from temporalio.client import Client, WorkflowHandle
from temporalio.worker import Worker

from activities.reporting import ActivityHeartbeat
from longtask.engine.names import ASK_DOCUMENTS_SIGNAL, PROCESS_DOCUMENTS, TAKEN_DOCUMENTS_QUERY
from longtask.models import DocumentRef, TakenDocuments
from longtask.settings import Settings
from longtask.states import TaskState
from longtask.task_client import TaskClient
from longtask.tooling.corpus import write_corpus
from longtask.tooling.servers import LlmServer
from longtask.tooling.worker_process import WorkerProcess
from tests.tasks import start, wait_for_status

DOCUMENTS = 24
# Two batches of two places each: a batch takes up to 8 documents, 2 at a time.
WINDOW: dict[str, Any] = {"document_concurrency": 4, "batch_documents": 2, "call_concurrency": 2}


# The SDK sends a heartbeat at most every 0.8 heartbeat timeouts (2 s in tests): by then the
# batch's details name the document it took.
HEARTBEAT_SENT_SECONDS = 1.8


def _json(payload: Any) -> Any:
    return json.loads(payload.data)


def asks(events: list[HistoryEvent]) -> list[tuple[int, dict[str, Any]]]:
    """Every ask of a batch for documents: its signal's event id and what the batch asked."""
    signalled = [
        (event.event_id, event.workflow_execution_signaled_event_attributes)
        for event in events
        if event.HasField("workflow_execution_signaled_event_attributes")
    ]
    return [
        (at, _json(sent.input.payloads[0]))
        for at, sent in signalled
        if sent.signal_name == ASK_DOCUMENTS_SIGNAL
    ]


async def _events(handle: WorkflowHandle[Any, Any]) -> list[HistoryEvent]:
    return list((await handle.fetch_history()).events)


async def _until_a_batch_took(handle: WorkflowHandle[Any, Any]) -> None:
    """Until an ask was answered with a document (the task keeps each batch's last answer)."""
    for _ in range(600):
        for _, ask in asks(await _events(handle)):
            if ask["want"] > 0:
                answer = await handle.query(
                    TAKEN_DOCUMENTS_QUERY, ask["ask_id"], result_type=TakenDocuments
                )
                if answer is not None and answer.documents:
                    return
        await asyncio.sleep(0.05)
    raise TimeoutError("no batch took a document within 30 s")


async def test_a_new_attempt_of_a_batch_takes_back_the_documents_it_had(
    client: Client,
    settings: Settings,
    llm: LlmServer,
    workers: list[WorkerProcess],
    tmp_path: Path,
) -> None:
    llm.add({"type": "delay", "seconds": 0.3, "times": None})
    write_corpus(tmp_path / "docs", DOCUMENTS)
    first = WorkerProcess(settings, tmp_path / "first.log")
    workers.append(first)
    _task, handle = await start(client, settings, [tmp_path / "docs"], **WINDOW)

    # The batch that took a document is running it now: killed, it is lost mid-way.
    await _until_a_batch_took(handle)
    await asyncio.sleep(HEARTBEAT_SENT_SECONDS)
    first.process.send_signal(signal.SIGKILL)
    assert first.process.wait(timeout=10) == -signal.SIGKILL
    second_log = tmp_path / "second.log"
    workers.append(WorkerProcess(settings, second_log))
    result = await handle.result()

    assert result.state is TaskState.COMPLETED
    assert sorted(d.name for d in result.documents) == [
        f"doc-{n:02d}.txt" for n in range(1, DOCUMENTS + 1)
    ]
    assert all(d.state is TaskState.COMPLETED for d in result.documents)
    events = await _events(handle)
    retried = [
        e.activity_task_started_event_attributes.attempt
        for e in events
        if e.HasField("activity_task_started_event_attributes")
    ]
    assert max(retried) > 1
    # The new attempt asked for the documents its batch had taken, and got them back.
    assert any(ask["again"] for _, ask in asks(events))
    took_back = re.findall(r"took back (\d+) document", second_log.read_text(errors="replace"))
    assert took_back and max(int(count) for count in took_back) > 0
    # Finished calls survived in the heartbeat details: only calls in flight at the kill
    # (two batches of two calls) or finished after the last heartbeat are made again.
    repeated = llm.count("/chat/completions") + llm.count("/embeddings") - DOCUMENTS * 4
    assert 0 <= repeated <= 8
    scheduled = [
        e
        for e in events
        if e.HasField("activity_task_scheduled_event_attributes")
        and e.activity_task_scheduled_event_attributes.activity_type.name == PROCESS_DOCUMENTS
    ]
    assert len(scheduled) < DOCUMENTS // WINDOW["batch_documents"]


async def test_a_paused_task_hands_its_batches_no_documents(
    client: Client, settings: Settings, worker: Worker, llm: LlmServer, tmp_path: Path
) -> None:
    llm.add({"type": "delay", "seconds": 0.3, "times": None})
    write_corpus(tmp_path / "docs", DOCUMENTS)
    _task, handle = await start(client, settings, [tmp_path / "docs"], **WINDOW)
    await _until_a_batch_took(handle)

    assert await handle.execute_update("pause", result_type=str) == "paused"
    # The documents in flight finish; their batches ask for more and are handed none.
    await wait_for_status(
        handle, lambda s: s.record.metadata.get("documents_running") == 0, seconds=60
    )
    events = await _events(handle)
    paused_at = next(
        e.event_id
        for e in reversed(events)
        if e.HasField("workflow_execution_update_accepted_event_attributes")
        and e.workflow_execution_update_accepted_event_attributes.accepted_request.input.name
        == "pause"
    )
    # Its batches asked after the pause, and were handed nothing: no call starts while paused.
    assert [ask for at, ask in asks(events) if at > paused_at and not ask["again"]]
    finished_while_paused = llm.count("/chat/completions")
    await asyncio.sleep(1.5)
    assert llm.count("/chat/completions") == finished_while_paused
    assert (await wait_for_status(handle, lambda s: True)).state is TaskState.PAUSED

    assert await handle.execute_update("resume", result_type=str) == "running"
    result = await handle.result()
    assert result.state is TaskState.COMPLETED
    assert all(d.state is TaskState.COMPLETED for d in result.documents)
    assert llm.count("/chat/completions") > finished_while_paused
    assert llm.count("/chat/completions") + llm.count("/embeddings") == DOCUMENTS * 4


async def _batches_heartbeats(handle: WorkflowHandle[Any, Any]) -> list[ActivityHeartbeat]:
    """The heartbeat details of every batch the task runs now: what a new attempt restores."""
    pending = (await handle.describe()).raw_description.pending_activities
    return [
        ActivityHeartbeat.model_validate(_json(activity.heartbeat_details.payloads[0]))
        for activity in pending
        if activity.activity_type.name == PROCESS_DOCUMENTS and activity.heartbeat_details.payloads
    ]


def _number(document: DocumentRef) -> int:
    return int(Path(document.path).stem.split("-")[1])


async def test_a_new_attempt_of_a_paused_task_starts_only_the_documents_it_had_begun(
    client: Client,
    settings: Settings,
    llm: LlmServer,
    workers: list[WorkerProcess],
    tmp_path: Path,
) -> None:
    llm.add({"type": "delay", "seconds": 0.3, "times": None})
    write_corpus(tmp_path / "docs", DOCUMENTS)
    first = WorkerProcess(settings, tmp_path / "first.log")
    workers.append(first)
    _task, handle = await start(client, settings, [tmp_path / "docs"], **WINDOW)
    await _until_a_batch_took(handle)
    await asyncio.sleep(HEARTBEAT_SENT_SECONDS)
    first.process.send_signal(signal.SIGKILL)
    assert first.process.wait(timeout=10) == -signal.SIGKILL
    # Calls answer at once from here: a begun document that ends frees its place before the
    # task's answer comes, and a batch that did not wait for it would fill it from reserve.
    llm.reset()

    # What the batches held at the kill and had not begun: documents in reserve.
    details = await _batches_heartbeats(handle)
    begun = {result.document for d in details for result in d.finished.values()} | {
        int(slot.split(":")[0]) for d in details for slot in d.steps
    }
    reserve = {_number(doc) for d in details for doc in d.held.documents if doc.index not in begun}
    assert reserve, f"no batch held a document in reserve at the kill: {details}"

    # Paused while no worker runs: the task takes the pause before the batches' new attempts
    # ask for their documents back, so it tells them to start none they had not begun.
    pausing = asyncio.create_task(TaskClient(client, settings).pause(handle.id))
    second_log = tmp_path / "second.log"
    workers.append(WorkerProcess(settings, second_log))
    assert await pausing == "paused"
    await wait_for_status(
        handle, lambda s: s.record.metadata.get("documents_running") == 0, seconds=60
    )
    called_since = [json.dumps(r["body"]) for r in llm.requests()]
    for number in reserve:
        assert not any(f"Document {number}, page" in body for body in called_since), number
    restarts = re.findall(r"attempt \d+, took back .*?; (\d+) had begun", second_log.read_text())
    assert restarts, second_log.read_text()

    assert await TaskClient(client, settings).resume(handle.id) == f"task {handle.id} resumed"
    result = await handle.result()
    assert result.state is TaskState.COMPLETED
    assert all(d.state is TaskState.COMPLETED for d in result.documents)
