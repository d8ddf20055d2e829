"""A batch takes its next documents from its task as its places free: after a lost worker
its new attempt takes back those it had, and a paused task hands out none."""

from __future__ import annotations

import asyncio
import json
import signal
from pathlib import Path
from typing import Any

from temporalio.api.history.v1 import HistoryEvent
from temporalio.client import Client, WorkflowHandle
from temporalio.worker import Worker

from longtask.engine.names import PROCESS_DOCUMENTS, TAKE_DOCUMENTS_UPDATE
from longtask.settings import Settings
from longtask.states import TaskState
from longtask.tooling.corpus import write_corpus
from longtask.tooling.servers import LlmServer
from longtask.tooling.worker_process import WorkerProcess
from tests.tasks import start, wait_for_status

DOCUMENTS = 24
# Two batches of two places each: a batch takes up to 8 documents, 2 at a time.
WINDOW: dict[str, Any] = {"document_concurrency": 4, "batch_documents": 2, "call_concurrency": 2}


def _json(payload: Any) -> Any:
    return json.loads(payload.data)


def takes(events: list[HistoryEvent]) -> list[tuple[int, dict[str, Any], dict[str, Any] | None]]:
    """Every take: its accepted event's id, what the batch asked, and what it was handed."""
    asked: dict[str, tuple[int, dict[str, Any]]] = {}
    answers: dict[str, dict[str, Any]] = {}
    for event in events:
        if event.HasField("workflow_execution_update_accepted_event_attributes"):
            request = event.workflow_execution_update_accepted_event_attributes.accepted_request
            if request.input.name == TAKE_DOCUMENTS_UPDATE:
                ask = _json(request.input.args.payloads[0])
                asked[request.meta.update_id] = (event.event_id, ask)
        if event.HasField("workflow_execution_update_completed_event_attributes"):
            done = event.workflow_execution_update_completed_event_attributes
            if done.outcome.HasField("success"):
                answers[done.meta.update_id] = _json(done.outcome.success.payloads[0])
    return [(at, ask, answers.get(update)) for update, (at, ask) in asked.items()]


async def _events(handle: WorkflowHandle[Any, Any]) -> list[HistoryEvent]:
    return list((await handle.fetch_history()).events)


async def _until_a_batch_took(handle: WorkflowHandle[Any, Any]) -> None:
    for _ in range(300):
        if any(answer and answer["documents"] for _, _, answer in takes(await _events(handle))):
            return
        await asyncio.sleep(0.1)
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
    first.process.send_signal(signal.SIGKILL)
    assert first.process.wait(timeout=10) == -signal.SIGKILL
    workers.append(WorkerProcess(settings, tmp_path / "second.log"))
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
    again = [answer for _, ask, answer in takes(events) if ask["again"]]
    assert again and any(answer and answer["documents"] for answer in again)
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
    after = [answer for at, ask, answer in takes(events) if at > paused_at and not ask["again"]]
    assert after and all(answer is not None and not answer["documents"] for answer in after)
    finished_while_paused = llm.count("/chat/completions")
    assert (await wait_for_status(handle, lambda s: True)).state is TaskState.PAUSED

    assert await handle.execute_update("resume", result_type=str) == "running"
    result = await handle.result()
    assert result.state is TaskState.COMPLETED
    assert all(d.state is TaskState.COMPLETED for d in result.documents)
    assert llm.count("/chat/completions") > finished_while_paused
    assert llm.count("/chat/completions") + llm.count("/embeddings") == DOCUMENTS * 4
