"""Starting tasks the way starter.py does, with knobs the tests need."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

from redis.asyncio import Redis
from temporalio.client import Client, WorkflowHandle

from longtask.models import TaskInput, TaskResult, TaskStatus
from longtask.policies import TimeoutPolicy
from longtask.settings import Settings
from longtask.task_start import start_task, task_input
from longtask.tooling.live_view import query_status
from longtask.tooling.servers import LlmServer
from longtask.tooling.worker_process import WorkerProcess

# Waits between attempts shrunk to 1, 2, 4 s so retries take seconds, not a minute; the numbers
# themselves are pinned in test_policies.py. (The dev server fires retry timers about a second
# late at the earliest, so shorter waits would all look alike.)
FAST_WAITS = {"backoff_first_seconds": 1.0, "backoff_max_seconds": 4.0}


async def start(
    client: Client,
    settings: Settings,
    paths: list[Path],
    policy: dict[str, Any] | None = None,
    **overrides: Any,
) -> tuple[TaskInput, WorkflowHandle[Any, TaskResult]]:
    """Start a task as starter.py does, with faster retry waits and any policy changes."""
    task = task_input(settings, [str(p) for p in paths], None)
    changed = TimeoutPolicy.model_validate(
        {**task.policy.model_dump(), **FAST_WAITS, **(policy or {})}
    )
    task = task.model_copy(update={"policy": changed, **overrides})
    await start_task(client, settings, task)
    return task, client.get_workflow_handle(task.task_id, result_type=TaskResult)


async def wait_for_status(
    handle: WorkflowHandle[Any, Any],
    condition: Callable[[TaskStatus], bool],
    seconds: float = 30,
) -> TaskStatus:
    """Poll the task's query until ``condition`` holds."""
    deadline = asyncio.get_running_loop().time() + seconds
    while True:
        status = await query_status(handle)
        if status is not None and condition(status):
            return status
        if asyncio.get_running_loop().time() > deadline:
            raise TimeoutError(f"condition not met within {seconds} s; last status: {status}")
        await asyncio.sleep(0.1)


def write_documents(folder: Path, count: int, pages: int) -> list[Path]:
    """Plain-text documents of ``pages`` pages each (form feed between pages)."""
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for d in range(count):
        body = "\f".join(
            f"Document {d}, page {p}. " + f"Figure {d * 100 + p} rose by {p} percent. " * 20
            for p in range(pages)
        )
        path = folder / f"doc-{d:03}.txt"
        path.write_text(body)
        paths.append(path)
    return paths


async def read_text(redis: Redis, key: str) -> str:
    """A string key's value; fails the test when the key is missing."""
    value = await redis.get(key)
    assert isinstance(value, str), f"{key} holds {value!r}"
    return value


async def read_json(redis: Redis, key: str) -> Any:
    return json.loads(await read_text(redis, key))


async def read_list(redis: Redis, key: str) -> list[str]:
    return [str(item) for item in await redis.lrange(key, 0, -1)]


async def slow_task_on_a_worker(
    client: Client,
    settings: Settings,
    llm: LlmServer,
    workers: list[WorkerProcess],
    folder: Path,
    pages: int,
) -> tuple[WorkerProcess, WorkflowHandle[Any, TaskResult]]:
    """A one-document task whose calls take 0.5 s each, one at a time, on a worker process of
    its own, once its first step is done."""
    llm.add({"type": "delay", "seconds": 0.5, "times": None})
    paths = write_documents(folder, count=1, pages=pages)
    worker = WorkerProcess(settings, folder.parent / "first.log")
    workers.append(worker)
    _, handle = await start(client, settings, paths, call_concurrency=1)
    await wait_for_status(handle, lambda s: s.record.step >= 1, seconds=60)
    return worker, handle
