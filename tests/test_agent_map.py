"""``TaskContext.map_calls``: many model calls per activity. A failed call is made again alone,
never the batch's finished ones; a killed worker costs only the calls it had not recorded."""

from __future__ import annotations

import asyncio
import json
import signal
import uuid
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
from redis.asyncio import Redis
from temporalio.api.enums.v1 import EventType
from temporalio.client import Client, WorkflowFailureError

from activities.agent_batch import BatchHeartbeat
from bench.map_task import BATCH_CALLS, MAP_TASK, MapInput, MapOutcome
from longtask.agent import TaskOutcome, start_long_task, task_defaults
from longtask.settings import Settings
from longtask.states import TaskState
from longtask.tooling.servers import LlmServer
from longtask.tooling.worker_process import WorkerProcess
from tests.agents import FAST_POLICY, latest_checkpoint, running_worker

CHAT = "/chat/completions"


def asked(llm: LlmServer) -> Counter[str]:
    """How many times each prompt was sent to the model."""
    return Counter(
        json.dumps(r["body"]["messages"], sort_keys=True)
        for r in llm.requests()
        if r["path"].endswith(CHAT)
    )


def map_input(
    settings: Settings, items: int, calls_in_flight: int, call_concurrency: int = 16
) -> MapInput:
    policy = {**settings.timeout_policy().model_dump(), **FAST_POLICY}
    return MapInput(
        **{**task_defaults(settings), "policy": policy},
        task_id=f"map-{uuid.uuid4().hex[:10]}",
        items=items,
        calls_in_flight=calls_in_flight,
        call_concurrency=call_concurrency,
    )


async def test_a_failed_call_is_made_again_alone(
    client: Client,
    settings: Settings,
    llm: LlmServer,
    redis: Redis,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Three provider errors among 96 calls in three batches: each batch with a failed call is
    # retried, and the retry asks only for what the batch is missing.
    llm.add({"type": "fail", "status": 500, "times": 3})
    monkeypatch.setenv("LTM_TASK_MODULES", "bench.map_task")
    request = map_input(settings, items=96, calls_in_flight=96)
    async with running_worker(client, settings, redis):
        handle = await start_long_task(client, settings, MAP_TASK, request, MapOutcome)
        outcome: TaskOutcome[MapOutcome] = await handle.result()

    assert outcome.state is TaskState.COMPLETED, outcome.reason
    assert outcome.result is not None and outcome.result.answered == 96
    counts = asked(llm)
    assert len(counts) == 96
    assert sorted(counts.values()) == [1] * 93 + [2] * 3
    # The failed attempts are in the ledger beside the answers.
    rows = outcome.ledger.rows()
    assert sum(row.calls for row in rows if row.status == "success") == 96
    assert sum(row.calls for row in rows if row.status != "success") == 3
    # Three batches of BATCH_CALLS: three activities, however many calls each made.
    history = await handle.fetch_history()
    scheduled = [
        e for e in history.events if e.event_type == EventType.EVENT_TYPE_ACTIVITY_TASK_SCHEDULED
    ]
    batches = [e for e in scheduled if e.activity_task_scheduled_event_attributes.activity_type.name
               == "agent.call_models"]  # fmt: skip
    assert len(batches) == 3


async def pending_heartbeats(client: Client, task_id: str) -> list[BatchHeartbeat]:
    """The last heartbeat of each batch in flight, as the server holds it."""
    described = await client.get_workflow_handle(task_id).describe()
    beats = []
    for pending in described.raw_description.pending_activities:
        if pending.heartbeat_details.payloads:
            [details] = await client.data_converter.decode(
                pending.heartbeat_details.payloads, [dict[str, Any]]
            )
            beats.append(BatchHeartbeat.model_validate(details))
    return beats


async def answers_recorded(client: Client, task_id: str, answers: int = 4) -> None:
    """Wait (30 s at most) until a batch in flight has answers recorded in its heartbeat."""
    for _ in range(300):
        beats = await pending_heartbeats(client, task_id)
        if any(len(beat.answers) >= answers for beat in beats):
            return
        await asyncio.sleep(0.1)


async def test_a_killed_worker_costs_only_the_calls_it_had_not_recorded(
    client: Client,
    settings: Settings,
    llm: LlmServer,
    workers: list[WorkerProcess],
    tmp_path: Path,
) -> None:
    # Every answer takes 0.3 s and a batch makes two calls at a time: the worker dies with
    # batches half done, some of their answers recorded in their heartbeats.
    llm.add({"type": "delay", "seconds": 0.3, "times": None})
    env = {"LTM_TASK_MODULES": "bench.map_task", "LTM_STATE_DIR": str(tmp_path / "state")}
    first = WorkerProcess(settings, tmp_path / "first.log", extra_env=env)
    workers.append(first)
    request = map_input(settings, items=96, calls_in_flight=32, call_concurrency=2)
    handle = await start_long_task(client, settings, MAP_TASK, request, MapOutcome)

    await answers_recorded(client, request.task_id)
    first.process.send_signal(signal.SIGKILL)
    assert first.process.wait(timeout=10) == -signal.SIGKILL
    await asyncio.sleep(0.5)  # requests the dead worker had sent are all in the log
    sent_before_kill = sum(asked(llm).values())
    recorded = sum(len(beat.answers) for beat in await pending_heartbeats(client, request.task_id))
    history = await handle.fetch_history()
    completed_batches = sum(
        1 for e in history.events if e.event_type == EventType.EVENT_TYPE_ACTIVITY_TASK_COMPLETED
    )
    assert recorded >= 4

    workers.append(WorkerProcess(settings, tmp_path / "second.log", extra_env=env))
    outcome: TaskOutcome[MapOutcome] = await handle.result()
    assert outcome.state is TaskState.COMPLETED, outcome.reason
    assert outcome.result is not None and outcome.result.answered == 96
    counts = asked(llm)
    assert len(counts) == 96
    asked_again = sum(counts.values()) - 96
    # Durable before the kill: every call of a finished batch, and each answer a batch in
    # flight had in its last heartbeat. Every other call sent before the kill (in flight, or
    # answered after that heartbeat) is asked again once; nothing durable is.
    durable = completed_batches * BATCH_CALLS + recorded
    assert asked_again == sent_before_kill - durable


async def test_a_cancelled_map_books_every_answer_its_batches_had(
    client: Client,
    settings: Settings,
    llm: LlmServer,
    redis: Redis,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    llm.add({"type": "delay", "seconds": 0.3, "times": None})
    monkeypatch.setenv("LTM_TASK_MODULES", "bench.map_task")
    request = map_input(settings, items=96, calls_in_flight=32, call_concurrency=2)
    async with running_worker(client, settings, redis):
        handle = await start_long_task(client, settings, MAP_TASK, request, MapOutcome)
        await answers_recorded(client, request.task_id)
        await handle.cancel()
        with pytest.raises(WorkflowFailureError):
            await handle.result()
    final = await latest_checkpoint(redis, request.task_id)
    assert final is not None and final.metadata.state == "cancelled"
    answered = sum(
        1
        for r in llm.requests()
        if r["path"].endswith(CHAT) and r.get("completed") and r.get("status") == 200
    )
    booked = sum(row.calls for row in final.metadata.ledger if row.status == "success")
    # The batches cut by the cancel answered with what they had: every answer is paid for in
    # the last checkpoint, and none of the 96 calls was left to finish.
    assert 4 <= booked == answered < 96
