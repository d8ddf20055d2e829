"""Each tool runs under its own retry policy: a failing tool is retried up to its attempts, a
non-retryable error fails it at once, and a model's tool call that fails answers the model."""

from __future__ import annotations

import uuid
from pathlib import Path
from typing import Any

import pytest
from redis.asyncio import Redis
from temporalio.client import Client

from longtask.agent import start_task_by_name
from longtask.settings import Settings
from longtask.states import TaskState
from tests.agents import running_worker


async def test_tools_retry_and_refuse_as_their_policies_say(
    client: Client,
    settings: Settings,
    redis: Redis,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("LTM_TASK_MODULES", "tests.agent_tasks")
    ours = settings.model_copy(
        update={"task_queue": f"tools-{uuid.uuid4().hex[:8]}", "state_dir": tmp_path}
    )
    async with running_worker(client, ours, redis):
        handle = await start_task_by_name(client, ours, "ToolCheck", {})
        outcome = await handle.result()
    assert outcome.state is TaskState.COMPLETED, outcome.reason
    check = outcome.result
    assert check is not None
    # Two failures, then the third attempt answered.
    assert check.flaky_runs == 3
    # A non-retryable error: one run only, its class and message in the failure.
    runs = {path.stem: int(path.read_text()) for path in (tmp_path / "agents").rglob("*.runs")}
    assert runs == {"a": 3, "b": 1, "c": 1}
    assert "refusing: b is refused" in check.refused
    answers = {m["tool_call_id"]: m["content"] for m in check.conversation}
    assert answers["c1"].startswith("error:") and "c is refused" in answers["c1"]
    assert answers["c2"] == "error: no tool named 'missing'"
    history = (await handle.fetch_history()).to_json_dict()["events"]
    started = [
        event["activityTaskStartedEventAttributes"].get("attempt", 1)
        for event in history
        if "activityTaskStartedEventAttributes" in event
    ]
    assert max(started) == 3


def most_in_flight(events: list[dict[str, Any]], activity_type: str) -> int:
    """The most activities of a type scheduled and not yet ended, in history order."""
    open_ids: set[str] = set()
    most = 0
    for event in events:
        scheduled = event.get("activityTaskScheduledEventAttributes")
        if scheduled and scheduled["activityType"]["name"] == activity_type:
            open_ids.add(event["eventId"])
            most = max(most, len(open_ids))
        for key in ("activityTaskCompletedEventAttributes", "activityTaskFailedEventAttributes"):
            ended = event.get(key)
            if ended:
                open_ids.discard(ended["scheduledEventId"])
    return most


async def test_a_map_runs_every_item_a_few_at_a_time_in_order(
    client: Client,
    settings: Settings,
    redis: Redis,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("LTM_TASK_MODULES", "tests.agent_tasks")
    ours = settings.model_copy(
        update={"task_queue": f"fanout-{uuid.uuid4().hex[:8]}", "state_dir": tmp_path}
    )
    numbers = list(range(12))
    async with running_worker(client, ours, redis):
        handle = await start_task_by_name(
            client, ours, "FanOutCheck", {"numbers": numbers, "concurrency": 3}
        )
        outcome = await handle.result()
    assert outcome.state is TaskState.COMPLETED, outcome.reason
    assert outcome.result == [n * n for n in numbers]
    events = (await handle.fetch_history()).to_json_dict()["events"]
    assert most_in_flight(events, "tool.square") == 3
