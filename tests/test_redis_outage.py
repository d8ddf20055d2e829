"""Redis trouble never hurts a task: it goes on while Redis is away, and the mirror is whole
again once Redis is back, even empty."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from redis.asyncio import Redis
from temporalio.client import Client, WorkflowHandle

from activities.provider import make_client
from longtask.connections import connect_redis
from longtask.models import TaskInput, TaskResult, TaskStatus
from longtask.settings import Settings
from longtask.states import TaskState
from longtask.tooling.live_view import query_status
from longtask.tooling.servers import LlmServer, RedisServer
from tests.tasks import read_json, read_list, read_text, start, wait_for_status, write_documents
from worker import build_worker


@pytest.fixture
async def outage_settings(
    client: Client, settings: Settings, own_redis: RedisServer
) -> AsyncIterator[Settings]:
    on_own = settings.model_copy(update={"redis_url": own_redis.url})
    redis = connect_redis(on_own)
    llm_client = make_client(on_own.llm_base_url, on_own.llm_api_key.get_secret_value())
    async with build_worker(client, on_own, llm_client, redis):
        yield on_own
    await llm_client.close()
    await redis.aclose()


async def redis_stopped_mid_task(
    client: Client,
    settings: Settings,
    redis_server: RedisServer,
    llm: LlmServer,
    tmp_path: Path,
    documents: int,
    steps_without: int,
) -> tuple[TaskInput, WorkflowHandle[Any, TaskResult], TaskStatus]:
    """A task of slow steps, one document at a time, whose Redis stops after its third step;
    answers once the task reached ``steps_without`` steps without it."""
    llm.add({"type": "delay", "seconds": 0.2, "times": None})
    paths = write_documents(tmp_path / "docs", count=documents, pages=4)
    task, handle = await start(client, settings, paths, document_concurrency=1)
    await wait_for_status(handle, lambda s: s.record.step >= 3)
    redis_server.stop()
    status = await wait_for_status(handle, lambda s: s.record.step >= steps_without, seconds=60)
    return task, handle, status


async def newest_checkpoint(redis: Redis, task_id: str) -> tuple[str, Any]:
    """The id and JSON of the task's newest checkpoint, once Redis holds one: the last write
    may still be on its way (bounded: 15 s)."""
    for _ in range(150):
        if await redis.exists(f"task:{task_id}:latest"):
            break
        await asyncio.sleep(0.1)
    latest = await read_text(redis, f"task:{task_id}:latest")
    return latest, await read_json(redis, f"checkpoint:{latest}")


async def test_redis_killed_and_back_empty_mid_task(
    client: Client,
    outage_settings: Settings,
    own_redis: RedisServer,
    llm: LlmServer,
    tmp_path: Path,
) -> None:
    task, handle, during = await redis_stopped_mid_task(
        client, outage_settings, own_redis, llm, tmp_path, documents=3, steps_without=10
    )
    assert during.state is TaskState.RUNNING  # the task went on without its mirror
    own_redis.start()  # same port, nothing in it

    result = await handle.result()
    assert result.state is TaskState.COMPLETED

    redis = connect_redis(outage_settings)
    try:
        latest, checkpoint = await newest_checkpoint(redis, task.task_id)
        assert checkpoint["progress"] == 100.0
        assert checkpoint["state"]["variables"]["state"] == "completed"
        assert len(checkpoint["state"]["step_results"]) == 3 * 4
        listed = await read_list(redis, f"task:{task.task_id}:checkpoints")
        assert listed[0] == latest
        for checkpoint_id in listed:
            assert await redis.exists(f"checkpoint:{checkpoint_id}")
        snapshot = await read_json(redis, f"task:{task.task_id}:checkpoint")
        assert snapshot["status"]["step"] == snapshot["status"]["total"]
        assert await redis.ttl(f"task:{task.task_id}:checkpoint") > 0
    finally:
        await redis.aclose()


async def mirrored_step(redis: Redis, task_id: str) -> int:
    """The step count of the task's newest progress snapshot in Redis (0 when none)."""
    raw = await redis.get(f"task:{task_id}:checkpoint")
    return int(json.loads(raw)["status"]["step"]) if raw else 0


async def test_the_mirror_follows_the_task_again_after_redis_was_away(
    client: Client,
    outage_settings: Settings,
    own_redis: RedisServer,
    llm: LlmServer,
    tmp_path: Path,
) -> None:
    """A failed write does not end mirroring: once Redis is back the mirror keeps up."""
    task, handle, away = await redis_stopped_mid_task(
        client, outage_settings, own_redis, llm, tmp_path, documents=6, steps_without=8
    )
    own_redis.start()  # empty, while the task still runs

    redis = connect_redis(outage_settings)
    try:
        # While the task runs, the mirror shows steps the task made after Redis came back.
        seen = 0
        for _ in range(300):
            status = await query_status(handle)
            if status is None or status.state is not TaskState.RUNNING:
                break
            seen = max(seen, await mirrored_step(redis, task.task_id))
            if seen > away.record.step:
                break
            await asyncio.sleep(0.1)
        assert seen > away.record.step, "the mirror stopped following the task"
        result = await handle.result()
        assert result.state is TaskState.COMPLETED
    finally:
        await redis.aclose()


async def test_redis_gone_as_the_task_ends_leaves_it_completed(
    client: Client,
    outage_settings: Settings,
    own_redis: RedisServer,
    llm: LlmServer,
    tmp_path: Path,
) -> None:
    """The task's outcome never depends on its mirror; the mirror catches up afterwards."""
    paths = write_documents(tmp_path / "docs", count=4, pages=2)
    # One document at a time, each report waiting: Redis is surely gone before the task ends.
    llm.add({"type": "delay", "seconds": 1.5, "times": None, "match": {"model": "gpt-4.1"}})
    task, handle = await start(client, outage_settings, paths, document_concurrency=1)
    await wait_for_status(handle, lambda s: s.record.step >= 2, seconds=60)
    own_redis.stop()
    assert (await query_status(handle)).state is TaskState.RUNNING  # type: ignore[union-attr]

    result = await handle.result()
    assert result.state is TaskState.COMPLETED
    description = await handle.describe()
    assert description.status is not None and description.status.name == "COMPLETED"

    own_redis.start()  # back, empty: the worker's sink still holds the final checkpoint
    redis = connect_redis(outage_settings)
    try:
        _latest, checkpoint = await newest_checkpoint(redis, task.task_id)
        assert checkpoint["state"]["variables"]["state"] == "completed"
        assert checkpoint["progress"] == 100.0
    finally:
        await redis.aclose()
