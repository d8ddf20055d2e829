"""The soak's fault schedule: worker kills, Redis and Temporal restarts, provider faults.

Kills fall on workers running a batch, every few seconds; restarts fall at set shares of the
task's steps, so every one of them happens however fast the job runs; no fault comes past 90 %
of the steps, so the task can end. Provider faults are llmock's own (bench/soak_services.py),
counted afterwards from its request log.
"""

from __future__ import annotations

import asyncio
import random
import re
import signal
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any

from pydantic import BaseModel, Field
from temporalio.api.enums.v1 import PendingActivityState
from temporalio.client import WorkflowExecutionStatus, WorkflowHandle, WorkflowQueryFailedError
from temporalio.service import RPCError

from bench.crashes import pid_of
from bench.harness import Workers, steps_done
from bench.soak_checks import cut_by_kill
from bench.soak_services import restart_service
from longtask.models import TaskResult
from longtask.settings import Settings
from longtask.tooling.live_view import query_status

# No fault past this share of the steps: the job must be able to end.
CALM_AFTER = 0.9
# Where on the job's progress the restarts fall, spread evenly inside these bounds.
REDIS_SPAN = (0.1, 0.7)
TEMPORAL_SPAN = (0.2, 0.8)
POLL_SECONDS = 0.5
# The activity that runs a batch of documents: the one a kill should cut.
BATCH_ACTIVITY = "process_documents"


class Injected(BaseModel):
    """Faults the soak caused, by kind, and workers that ended without being told to."""

    worker_kills: int = 0
    workers_exited_unbidden: list[str] = Field(default_factory=list)
    redis_restarts: int = 0
    temporal_restarts: int = 0
    provider_faults: dict[str, int] = Field(default_factory=dict)
    streams_cut_by_kills: int = 0
    # When each SIGKILL was sent, on the system's monotonic clock (the LLM server's log too).
    kill_times: list[float] = Field(default_factory=list)
    query_failures: list[str] = Field(default_factory=list)


class SoakPlan(BaseModel):
    documents: int
    workers: int
    kill_every: tuple[float, float]
    max_kills: int
    redis_restarts: int
    temporal_restarts: int
    report_words: int
    limit_seconds: float
    seed: int

    def scripted_report(self) -> str:
        return " ".join(f"finding-{i:04d}" for i in range(self.report_words))


def restart_points(count: int, span: tuple[float, float]) -> list[float]:
    """``count`` shares of the job's steps, evenly inside ``span``, at which to restart."""
    low, high = span
    return [low + (high - low) * (i + 0.5) / count for i in range(count)]


async def _ended(handle: WorkflowHandle[Any, TaskResult]) -> bool:
    try:
        described = await handle.describe()
    except RPCError:  # Temporal is restarting: not known to have ended
        return False
    return described.status != WorkflowExecutionStatus.RUNNING


def _last_line(log: Path) -> str:
    lines = log.read_text(errors="replace").strip().splitlines() if log.exists() else []
    return lines[-1][:300] if lines else "(empty log)"


def _replace_exited(workers: Workers, injected: Injected) -> None:
    """A worker that ended by itself is a finding: note why, and start another."""
    for process in list(workers.running):
        if process.process.poll() is not None:
            why = f"{process.log.name} exited by itself: {_last_line(process.log)}"
            print(f"soak: {why}", file=sys.stderr)
            injected.workers_exited_unbidden.append(why)
            workers.forget(process)
            workers.start()


async def _progress(handle: WorkflowHandle[Any, TaskResult], injected: Injected) -> float:
    """The share of the task's steps done; 0 when no worker answers. A query that fails is
    a finding (a worker that rebuilt the task from its history could not go on)."""
    try:
        return steps_done(await query_status(handle))
    except WorkflowQueryFailedError as failed:
        print(f"soak: a query failed: {failed}", file=sys.stderr)
        injected.query_failures.append(str(failed)[:300])
        return 0.0


async def _pending(handle: WorkflowHandle[Any, TaskResult]) -> str:
    """What the task's running activities are at, for a task that does not end."""
    try:
        described = await handle.describe()
    except RPCError as error:
        return f"not described: {error}"
    lines = [
        f"activity {p.activity_id} ({p.activity_type.name}) attempt {p.attempt}, "
        f"worker {p.last_worker_identity or '-'}: {p.last_failure.message[:200]}"
        for p in described.raw_description.pending_activities
    ]
    return "; ".join(lines) or "no activity pending"


async def _busy_pids(handle: WorkflowHandle[Any, TaskResult]) -> set[int]:
    """Pids of the workers running one of the task's batches right now (not the loading
    of the documents: it has no heartbeat, so a kill there stalls the task for its
    5-minute start-to-close timeout before anything else can be measured)."""
    try:
        described = await handle.describe()
    except RPCError:
        return set()
    return {
        pid
        for pending in described.raw_description.pending_activities
        if pending.state == PendingActivityState.PENDING_ACTIVITY_STATE_STARTED
        and pending.activity_type.name == BATCH_ACTIVITY
        and (pid := pid_of(pending.last_worker_identity)) is not None
    }


async def _kill_one(
    workers: Workers,
    handle: WorkflowHandle[Any, TaskResult],
    rng: random.Random,
    injected: Injected,
) -> bool:
    """SIGKILL a worker in the middle of a batch, and start a new one; False when no worker
    of ours runs a batch right now (killing an idle one proves nothing)."""
    busy = await _busy_pids(handle)
    candidates = [w for w in workers.running if w.process.pid in busy]
    if not candidates:
        return False
    victim = rng.choice(candidates)
    injected.kill_times.append(time.monotonic())
    victim.process.send_signal(signal.SIGKILL)
    await asyncio.to_thread(victim.process.wait, 30)
    workers.forget(victim)
    workers.start()
    injected.worker_kills += 1
    return True


async def _restart(settings: Settings, name: str, injected: Injected, share: float) -> None:
    print(f"soak: restarting {name} at {share:.0%} of the steps", file=sys.stderr)
    await asyncio.to_thread(restart_service, settings, name, name == "redis")
    if name == "redis":
        injected.redis_restarts += 1
    else:
        injected.temporal_restarts += 1


async def run_with_faults(
    settings: Settings,
    plan: SoakPlan,
    workers: Workers,
    handle: WorkflowHandle[Any, TaskResult],
    injected: Injected,
) -> str | None:
    """Inject the schedule's faults until the task ends; or, past the time limit, say where
    it stands."""
    rng = random.Random(plan.seed)
    redis_at = restart_points(plan.redis_restarts, REDIS_SPAN)
    temporal_at = restart_points(plan.temporal_restarts, TEMPORAL_SPAN)
    started = time.monotonic()
    next_kill = started + rng.uniform(*plan.kill_every)
    share = 0.0
    while not await _ended(handle):
        if time.monotonic() - started > plan.limit_seconds:
            return (
                f"not within {plan.limit_seconds:.0f} s ({share:.0%} of its steps done); "
                f"{await _pending(handle)}"
            )
        share = max(share, await _progress(handle, injected))
        _replace_exited(workers, injected)
        if redis_at and share >= redis_at[0]:
            await _restart(settings, "redis", injected, redis_at.pop(0))
        elif temporal_at and share >= temporal_at[0]:
            await _restart(settings, "temporal", injected, temporal_at.pop(0))
        elif (
            time.monotonic() >= next_kill
            and share < CALM_AFTER
            and injected.worker_kills < plan.max_kills
            and await _kill_one(workers, handle, rng, injected)
        ):
            next_kill = time.monotonic() + rng.uniform(*plan.kill_every)
        await asyncio.sleep(POLL_SECONDS)
    if redis_at or temporal_at:
        raise RuntimeError(
            f"the task ended before {len(redis_at)} Redis and {len(temporal_at)} Temporal "
            "restarts of the schedule: give it more documents or slower answers"
        )
    return None


def fault_kind(record: dict[str, Any]) -> str | None:
    """The provider fault llmock put in a response, or None for a clean one."""
    if record["status"] >= 400:
        return f"http {record['status']}"
    fault = record.get("fault")
    if fault:
        found = re.match(r"stream:[a-z]+", str(fault))
        return found.group(0) if found else str(fault)
    return None


def count_faults(records: list[dict[str, Any]], injected: Injected) -> None:
    kinds = Counter(kind for record in records if (kind := fault_kind(record)))
    injected.provider_faults = dict(sorted(kinds.items()))
    injected.streams_cut_by_kills = sum(1 for record in records if cut_by_kill(record))
