"""The dead-worker detector: a worker killed outright has its steps failed as WORKER_LOST and
resumed elsewhere long before the heartbeat timeout; a Redis restart, a frozen worker and a
stale task token never make it hand a live step over."""

from __future__ import annotations

import asyncio
import contextlib
import signal
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

from redis.asyncio import Redis
from temporalio.api.enums.v1 import PendingActivityState
from temporalio.client import Client, WorkflowHandle

from activities.liveness import (
    WORKERS_KEY,
    RunningActivity,
    WorkerRecord,
    activities_key,
    host_key,
)
from activities.liveness_watch import LivenessMonitor, fail_lost_attempt
from activities.reporting import ActivityHeartbeat
from longtask.connections import connect_named_redis, connect_redis
from longtask.engine.names import PROCESS_DOCUMENTS, WORKER_LOST
from longtask.models import TaskResult
from longtask.policies import TimeoutPolicy
from longtask.settings import Settings
from longtask.states import TaskState
from longtask.tooling.servers import LlmServer, RedisServer
from longtask.tooling.worker_process import WorkerProcess
from tests.tasks import start, wait_for_status, write_documents

# Far longer than any recovery here: an attempt ended by it would say so in the history.
LONG_HEARTBEAT_TIMEOUT = 20.0


def lost_worker_failures(history: Any) -> list[str]:
    """The failure types that ended an attempt before the one the history shows started."""
    types = []
    for event in history.events:
        if event.HasField("activity_task_started_event_attributes"):
            failure = event.activity_task_started_event_attributes.last_failure
            if failure.HasField("application_failure_info"):
                types.append(failure.application_failure_info.type)
            elif failure.HasField("timeout_failure_info"):
                types.append("timeout")
    return types


async def running_batch(handle: WorkflowHandle[Any, Any]) -> tuple[int, Any] | None:
    """The pid of the worker running the task's batch, and the batch's pending info."""
    for pending in (await handle.describe()).raw_description.pending_activities:
        started = pending.state == PendingActivityState.PENDING_ACTIVITY_STATE_STARTED
        head = pending.last_worker_identity.partition("@")[0]
        if started and pending.activity_type.name == PROCESS_DOCUMENTS and head.isdigit():
            return int(head), pending
    return None


async def calls_in_heartbeat(client: Client, pending: Any) -> int:
    """Chat calls whose answers the server holds in the batch's last heartbeat details."""
    if not pending.heartbeat_details.payloads:
        return 0
    details = await client.data_converter.decode(pending.heartbeat_details.payloads)
    beat = ActivityHeartbeat.model_validate(details[0])
    running = sum(len(s.outputs) for slot, s in beat.steps.items() if "embed" not in slot)
    return running + sum(len(r.outputs) for slot, r in beat.finished.items() if "embed" not in slot)


async def batch_with_beats(
    client: Client, handle: WorkflowHandle[Any, Any], calls: int
) -> tuple[int, int]:
    """Once the batch's heartbeat details hold ``calls`` answers: its worker's pid and how many
    answers they hold (bounded: a minute)."""
    for _ in range(600):
        found = await running_batch(handle)
        if found is not None:
            held = await calls_in_heartbeat(client, found[1])
            if held >= calls:
                return found[0], held
        await asyncio.sleep(0.1)
    raise AssertionError("the batch never heartbeated its answers")


def two_workers(settings: Settings, workers: list[WorkerProcess], logs: Path) -> None:
    for name in ("one", "two"):
        workers.append(WorkerProcess(settings, logs / f"{name}.log"))


def worker_of(workers: list[WorkerProcess], pid: int) -> WorkerProcess:
    return next(w for w in workers if w.process.pid == pid)


async def slow_batch(
    client: Client, settings: Settings, llm: LlmServer, folder: Path, pages: int = 6
) -> tuple[int, WorkflowHandle[Any, TaskResult]]:
    """One batch of two documents, 0.3 s per call, one call at a time, whose heartbeat timeout
    is LONG_HEARTBEAT_TIMEOUT; the number of chat calls it needs."""
    llm.add({"type": "delay", "seconds": 0.3, "times": None})
    paths = write_documents(folder, count=2, pages=pages)
    long = settings.model_copy(update={"heartbeat_timeout_seconds": LONG_HEARTBEAT_TIMEOUT})
    _, handle = await start(client, long, paths, call_concurrency=1)
    return 2 * (pages + 2), handle


@contextlib.asynccontextmanager
async def remote_watcher(client: Client, settings: Settings) -> AsyncIterator[LivenessMonitor]:
    """A watcher that sees every worker as on another host: it has only their connections and
    Redis's run to go by, no pid to look at."""
    watcher = LivenessMonitor(
        lambda name: connect_named_redis(settings, name), client, "test-watcher", "elsewhere"
    )
    async with watcher.running():
        yield watcher


async def polls(watcher: LivenessMonitor, count: int) -> None:
    """Until ``watcher`` has looked ``count`` more times (bounded: a minute)."""
    target = watcher.polls + count
    for _ in range(600):
        if watcher.polls >= target:
            return
        await asyncio.sleep(0.1)
    raise AssertionError("the watcher stopped looking")


async def test_sigkill_hands_the_batch_over_as_worker_lost_with_its_heartbeat(
    client: Client, settings: Settings, llm: LlmServer, workers: list[WorkerProcess], tmp_path: Path
) -> None:
    needed, handle = await slow_batch(client, settings, llm, tmp_path / "docs")
    two_workers(settings, workers, tmp_path)
    pid, held = await batch_with_beats(client, handle, calls=3)
    busy = worker_of(workers, pid)
    made = llm.count("/chat/completions")
    busy.process.send_signal(signal.SIGKILL)
    busy.process.wait(timeout=10)

    result = await handle.result()
    assert result.state is TaskState.COMPLETED
    # The attempt ended as WORKER_LOST, not by the 20 s heartbeat timeout: the other worker
    # found the dead one and failed its attempt on its behalf.
    assert WORKER_LOST in lost_worker_failures(await handle.fetch_history())
    survivor = next(w for w in workers if w is not busy)
    assert "lost: its Redis connection closed and its process is gone" in survivor.log.read_text()
    # The next attempt started from the last heartbeat details: the answers they held were not
    # asked again, only those made after them (in flight or finished since).
    asked_again = llm.count("/chat/completions") - needed
    assert 0 <= asked_again <= made - held
    status = await wait_for_status(handle, lambda s: s.state is TaskState.COMPLETED)
    assert all(stats.errors == stats.timeouts == 0 for stats in status.calls.values())


async def test_a_redis_restart_hands_no_live_step_over(
    client: Client,
    settings: Settings,
    own_redis: RedisServer,
    llm: LlmServer,
    workers: list[WorkerProcess],
    tmp_path: Path,
) -> None:
    on_own = settings.model_copy(update={"redis_url": own_redis.url})
    _, handle = await slow_batch(client, on_own, llm, tmp_path / "docs")
    two_workers(on_own, workers, tmp_path)
    async with remote_watcher(client, on_own) as watcher:
        await batch_with_beats(client, handle, calls=1)
        own_redis.stop()
        own_redis.start()  # same port, nothing in it: every connection dropped
        redis = connect_redis(on_own)
        try:
            # Every worker registers again in the new run, the busy one with its batch.
            for _ in range(300):
                if await redis.hlen(WORKERS_KEY) == 3:
                    break
                await asyncio.sleep(0.1)
            assert await redis.hlen(WORKERS_KEY) == 3
        finally:
            await redis.aclose()
        result = await handle.result()
        assert watcher.lost == []
    assert result.state is TaskState.COMPLETED
    assert WORKER_LOST not in lost_worker_failures(await handle.fetch_history())
    assert all(w.process.poll() is None for w in workers)


async def test_a_frozen_worker_is_not_declared_dead(
    client: Client, settings: Settings, llm: LlmServer, workers: list[WorkerProcess], tmp_path: Path
) -> None:
    _, handle = await slow_batch(client, settings, llm, tmp_path / "docs")
    two_workers(settings, workers, tmp_path)
    async with remote_watcher(client, settings) as watcher:
        pid, _ = await batch_with_beats(client, handle, calls=1)
        busy = worker_of(workers, pid)
        busy.process.send_signal(signal.SIGSTOP)
        try:
            # Frozen for longer than a remote worker's grace: its connection stays open.
            await polls(watcher, 20)
        finally:
            busy.process.send_signal(signal.SIGCONT)
        result = await handle.result()
        assert watcher.lost == []
    assert result.state is TaskState.COMPLETED
    assert lost_worker_failures(await handle.fetch_history()) == []


def dead_pid() -> int:
    """The pid of a process that has ended (and was reaped)."""
    process = subprocess.Popen([sys.executable, "-c", "pass"])
    process.wait()
    return process.pid


async def test_a_stale_token_is_harmless(
    client: Client, settings: Settings, llm: LlmServer, redis: Redis, worker: Any, tmp_path: Path
) -> None:
    _, handle = await slow_batch(client, settings, llm, tmp_path / "docs", pages=2)
    token: RunningActivity | None = None
    for _ in range(300):
        for worker_id in await redis.hkeys(WORKERS_KEY):
            for raw in await redis.hvals(activities_key(str(worker_id))):
                found = RunningActivity.model_validate_json(raw)
                if found.workflow_id == handle.id and found.activity_type == PROCESS_DOCUMENTS:
                    token = found
        if token is not None:
            break
        await asyncio.sleep(0.1)
    assert token is not None, "the batch never registered"
    result = await handle.result()
    assert result.state is TaskState.COMPLETED

    # The attempt has ended: failing it again changes nothing and raises nothing.
    assert await fail_lost_attempt(client, token, "a test") is False
    # A dead worker's registration holding that token is cleared by the live worker's watch.
    run_id = str((await redis.info("server"))["run_id"])
    record = WorkerRecord(
        identity="0@gone", host=host_key(), pid=dead_pid(), started=None, run_id=run_id,
        connection="ltm-worker:gone",
    )  # fmt: skip
    await redis.hset(activities_key("gone"), "stale", token.model_dump_json())
    await redis.hset(WORKERS_KEY, "gone", record.model_dump_json())
    for _ in range(300):
        if not await redis.hexists(WORKERS_KEY, "gone"):
            break
        await asyncio.sleep(0.1)
    assert not await redis.exists(activities_key("gone"))
    assert not await redis.hexists(WORKERS_KEY, "gone")
    assert (await handle.result()).state is TaskState.COMPLETED


def test_every_retry_policy_retries_a_lost_worker() -> None:
    """WORKER_LOST is retried like a heartbeat timeout: no policy of the product stops on it."""
    policy = TimeoutPolicy()
    for retry in (policy.retry_policy(), policy.calls_retry_policy()):
        assert WORKER_LOST not in (retry.non_retryable_error_types or [])
    assert policy.calls_retry_policy().maximum_attempts == 0
