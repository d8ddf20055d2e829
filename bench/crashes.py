"""Worker crashes: recovery time, hand-over time, and the work a crash makes the job redo.

  python -m bench.crashes              # 20 SIGKILLs, 5 SIGTERM hand-overs, 100 documents
  python -m bench.crashes --kills 40 --documents 96
  python -m bench.crashes --no-detector   # the heartbeat timeout alone finds dead workers

One embedded stack (the LLM server as `make up` runs it: 200 ms latency, 20 ms between streamed
chunks). Three workers, two of them idle: the task keeps one batch in flight (document and batch
size 4), so one worker holds every running step and the others stand by, and the first request
the LLM server sees after a kill is the resumed step's. A new worker is started after each kill
and each hand-over; the next one waits until a standby polls beside the busy worker.
`--load N` runs N CPU-bound processes beside the stack throughout.

Four runs of the same job, in this order:
  1. crash-free: the job once, no kill;
  2. crashes: the job with SIGKILL of the busy worker at random moments (a new standby worker
     started after each kill); recovery = kill → first LLM request of the resumed step;
  3. hand-overs: SIGTERM of the busy worker instead; hand-over = signal → first request made by
     the worker that takes the steps over;
  4. restart from scratch: the same job as a bare asyncio loop that dies at the same points of
     progress as run 2 and starts again from zero each time, as a script with no checkpoints.
Tokens come from the LLM server's request log (bench/server_bill.py), never from the product.
"""

from __future__ import annotations

import argparse
import asyncio
import bisect
import math
import random
import signal
import sys
import tempfile
import time
from collections.abc import Callable
from datetime import UTC
from pathlib import Path
from typing import Any

from pydantic import BaseModel
from temporalio.api.enums.v1 import PendingActivityState, TimeoutType
from temporalio.client import Client, WorkflowHandle

from bench.bare_loop import BareLoopFigures, default_route, run_bare_loop
from bench.harness import (
    Workers,
    bench_parser,
    cpu_load,
    live_steps_taken,
    measure_on_stack,
    publish,
    stack_settings,
    start_job,
    steps_done,
    summary,
    wait_until,
)
from bench.server_bill import ServerBill, bill, forget_requests, server_requests
from longtask.connections import connect_temporal
from longtask.engine.names import WORKER_LOST
from longtask.models import TaskResult
from longtask.settings import Settings
from longtask.states import TERMINAL_STATES, TaskState
from longtask.tooling.corpus import at_least_one, write_corpus
from longtask.tooling.live_view import query_status

# One batch of four documents in flight: a single busy worker, and a standby.
DOCUMENTS_IN_FLIGHT = 4
# Work between two kills, at most: long enough for the resumed step to make progress again.
# Shorter when the job is short, so that every kill falls inside it.
LONGEST_WORK_BETWEEN_KILLS = 2.5
RECOVERY_LIMIT_SECONDS = 60.0
BATCH_ACTIVITY = "process_documents"
HEARTBEAT = TimeoutType.TIMEOUT_TYPE_HEARTBEAT
# Workers beside the busy one: after a kill one takes over at once while a new one starts.
STANDBYS = 2


class CrashFigures(BaseModel):
    documents: int
    kills: int
    handovers: int
    heartbeat_timeout_seconds: float
    # CPU-bound processes run beside the stack for the whole measurement.
    load_processes: int = 0
    # Steps the server took from a live worker (a heartbeat missed while alive, or a live
    # worker's attempt failed as lost), all runs.
    live_steps_taken: int = 0
    # Whether the workers ran the dead-worker detector (activities/liveness_watch.py), and how
    # each killed batch's attempt ended: failed as WORKER_LOST by another worker, or by the
    # heartbeat timeout (its fallback).
    dead_worker_detector: bool = False
    detector_handovers: int = 0
    heartbeat_timeout_handovers: int = 0
    crash_free_seconds: float
    recovery_seconds: dict[str, float]
    handover_seconds: dict[str, float]
    recoveries: list[float]
    # Seconds of work a script without checkpoints had done when it died, at the same points.
    scratch_lost_seconds: dict[str, float]
    kill_points: list[float]
    crash_free: ServerBill
    with_crashes: ServerBill
    from_scratch: ServerBill
    requests_redone_per_kill: float
    completion_tokens_redone_per_kill: float
    scratch_requests_redone_per_kill: float
    scratch_completion_tokens_redone_per_kill: float
    # Tokens paid with crashes, against a restart from scratch after each crash.
    token_reduction_vs_scratch: float
    recovery_vs_scratch_ratio: float


def pid_of(identity: str) -> int | None:
    """The process id in a worker identity (the SDK's default is ``pid@host``)."""
    head, _, _ = identity.partition("@")
    return int(head) if head.isdigit() else None


async def running_batch(handle: WorkflowHandle[object, TaskResult]) -> tuple[str, int, int] | None:
    """The task's batch running right now, if any: its activity id, attempt and worker pid."""
    described = await handle.describe()
    for pending in described.raw_description.pending_activities:
        started = pending.state == PendingActivityState.PENDING_ACTIVITY_STATE_STARTED
        pid = pid_of(pending.last_worker_identity)
        if started and pending.activity_type.name == BATCH_ACTIVITY and pid is not None:
            return pending.activity_id, pending.attempt, pid
    return None


async def resumed_at(
    handle: WorkflowHandle[object, TaskResult], batch: tuple[str, int, int]
) -> tuple[float, str] | None:
    """When (wall clock) the signalled worker's batch began its next attempt on another
    worker, and what ended the attempt before (a failure type, ``heartbeat`` for the heartbeat
    timeout); None while it has not, (0.0, "") if it is pending no more (it ended before the
    signal)."""
    activity_id, attempt, pid = batch
    described = await handle.describe()
    for pending in described.raw_description.pending_activities:
        if pending.activity_id != activity_id:
            continue
        started = pending.state == PendingActivityState.PENDING_ACTIVITY_STATE_STARTED
        elsewhere = pid_of(pending.last_worker_identity) not in (None, pid)
        if started and pending.attempt > attempt and elsewhere:
            moment = pending.last_started_time.ToDatetime(tzinfo=UTC).timestamp()
            return moment, ended_by(pending.last_failure)
        return None
    return 0.0, ""


def ended_by(failure: Any) -> str:
    """What ended an attempt: its failure type, or ``heartbeat`` for a heartbeat timeout."""
    if failure.HasField("timeout_failure_info"):
        return "heartbeat" if failure.timeout_failure_info.timeout_type == HEARTBEAT else "timeout"
    if failure.HasField("application_failure_info"):
        return str(failure.application_failure_info.type)
    return ""


def first_requests_after(
    records: list[dict[str, Any]], moments: list[tuple[float, float]]
) -> list[float]:
    """Seconds from each signal to the first request the LLM server began once the signalled
    step had resumed: ``moments`` are (signal, resumed step's start), both on the monotonic
    clock, which the system shares between processes. Requests of other batches running
    beside it before it resumed are not its."""
    starts = sorted(r["started_at"] for r in records)
    gaps = []
    for signalled, resumed in moments:
        after = bisect.bisect_left(starts, max(signalled, resumed))
        if after == len(starts):
            raise RuntimeError(f"no LLM request after the signal at {signalled:.3f}")
        gaps.append(starts[after] - signalled)
    return gaps


async def _interrupt(
    workers: Workers,
    handle: WorkflowHandle[object, TaskResult],
    how: signal.Signals,
    pause: Callable[[], float],
) -> tuple[float, float, float, str] | None:
    """Signal the worker running a batch after a random stretch of work; start a new worker.

    Returns (the signal's moment and the moment the batch resumed elsewhere, both on the
    monotonic clock, the share of steps done at the signal, and what ended the signalled
    attempt), or None when the task ended first. Returns once a live worker has started the
    batch again: asking the server is cheap, while reading the LLM server's log in a loop
    would load the machine under measurement; the first resumed request comes from that log
    once, at the end.
    """
    await asyncio.sleep(pause())
    # A standby polls beside the busy worker, as in a deployment kept at strength: a recovery
    # never includes a new process's start (the replacement of the last kill may still start).
    await workers.ready(at_least=STANDBYS)
    while True:
        status = await query_status(handle)
        if status is not None and status.state in TERMINAL_STATES:
            return None
        batch = await running_batch(handle)
        process = next((w for w in workers.running if batch and w.process.pid == batch[2]), None)
        if batch is not None and process is not None:
            break
        await asyncio.sleep(0.05)
    done = steps_done(status)
    signalled_at = time.monotonic()
    wall_offset = time.time() - signalled_at
    process.process.send_signal(how)
    workers.forget(process)
    workers.start()
    resumed: list[tuple[float, str]] = []

    async def taken_over() -> bool:
        found = await resumed_at(handle, batch)
        if found is not None:
            moment, ended = found
            resumed.append((moment - wall_offset if moment else signalled_at, ended))
        return found is not None

    await wait_until(taken_over, RECOVERY_LIMIT_SECONDS, f"a new worker after {how.name}")
    await asyncio.to_thread(process.process.wait, 60)
    return signalled_at, resumed[0][0], done, resumed[0][1]


async def _run_with_interrupts(
    settings: Settings,
    client: Client,
    workers: Workers,
    folder: Path,
    task_id: str,
    count: int,
    how: signal.Signals,
    pause: Callable[[], float],
) -> tuple[list[float], list[float], list[str]]:
    """Seconds from each signal to the first resumed request, the share done at each, and
    what ended each signalled attempt."""
    _, handle = await start_job(client, settings, folder, task_id)
    moments: list[tuple[float, float]] = []
    points: list[float] = []
    endings: list[str] = []
    for _ in range(count):
        measured = await _interrupt(workers, handle, how, pause)
        if measured is None:
            break
        moments.append(measured[:2])
        points.append(measured[2])
        endings.append(measured[3])
    result = await handle.result()
    if result.state is not TaskState.COMPLETED:
        raise RuntimeError(f"{task_id} ended {result.state.value}: {result.reason}")
    if len(moments) < count:
        raise RuntimeError(
            f"{task_id} ended after {len(moments)} of {count} {how.name}s: give it more documents"
        )
    return first_requests_after(server_requests(settings), moments), points, endings


async def _scratch_runs(
    settings: Settings, paths: list[Path], kill_points: list[float]
) -> tuple[ServerBill, list[float]]:
    """The job as a script with no checkpoints, dying at each point and starting over."""
    route = default_route(settings)

    async def run(halt_after: int | None = None) -> BareLoopFigures:
        # The product's shape: one batch of documents in flight, its calls under one gate.
        return await run_bare_loop(
            paths,
            settings.llm_base_url,
            route,
            settings.call_concurrency,
            halt_after=halt_after,
            documents_in_flight=settings.document_concurrency,
        )

    full = await run()
    forget_requests(settings)
    lost = [(await run(max(1, round(point * full.calls)))).seconds for point in kill_points]
    await run()
    return bill(server_requests(settings)), lost


def bench_settings(
    folder: Path, documents: int, heartbeat_timeout: float | None, detector: bool = True
) -> Settings:
    """The LLM server as `make up` runs it; one batch of documents in flight per task.

    A task cuts a small job into at least four batches; the window is set to one such batch,
    so that a single worker is ever busy."""
    in_flight = min(DOCUMENTS_IN_FLIGHT, math.ceil(documents / 4))
    tuned = {} if heartbeat_timeout is None else {"heartbeat_timeout_seconds": heartbeat_timeout}
    return stack_settings(
        folder,
        latency_ms=200,
        chunk_delay_ms=20,
        document_concurrency=in_flight,
        batch_documents=in_flight,
        detect_dead_workers=detector,
        **tuned,
    )


async def measure(
    settings: Settings, corpus: Path, documents: int, kills: int, handovers: int, seed: int
) -> CrashFigures:
    rng = random.Random(seed)
    paths = write_corpus(corpus, documents)
    with Workers(settings) as workers:
        client = await connect_temporal(settings)
        for _ in range(STANDBYS + 1):
            workers.start()
        await workers.ready()

        forget_requests(settings)
        started = time.monotonic()
        _, handle = await start_job(client, settings, corpus, "crash-free")
        if (await handle.result()).state is not TaskState.COMPLETED:
            raise RuntimeError("the crash-free run did not complete")
        crash_free_seconds = time.monotonic() - started
        crash_free = bill(server_requests(settings))
        # Random moments spread over about half of the crash-free run's length.
        longest = min(LONGEST_WORK_BETWEEN_KILLS, 0.5 * crash_free_seconds / kills)

        def pause() -> float:
            return rng.uniform(longest / 5, longest)

        forget_requests(settings)
        recoveries, points, endings = await _run_with_interrupts(
            settings, client, workers, corpus, "crashes", kills, signal.SIGKILL, pause
        )
        with_crashes = bill(server_requests(settings))

        handover_times, _, _ = await _run_with_interrupts(
            settings, client, workers, corpus, "handovers", handovers, signal.SIGTERM, pause
        )
        workers.stop_all()

        taken = live_steps_taken(workers)
        from_scratch, lost = await _scratch_runs(settings, paths, points)

    recovery = summary(recoveries)
    lost_summary = summary(lost)
    return CrashFigures(
        documents=documents,
        kills=len(recoveries),
        handovers=len(handover_times),
        heartbeat_timeout_seconds=settings.heartbeat_timeout_seconds,
        live_steps_taken=taken,
        dead_worker_detector=settings.detect_dead_workers,
        detector_handovers=endings.count(WORKER_LOST),
        heartbeat_timeout_handovers=endings.count("heartbeat"),
        crash_free_seconds=round(crash_free_seconds, 1),
        recovery_seconds=recovery,
        handover_seconds=summary(handover_times),
        recoveries=[round(r, 3) for r in recoveries],
        scratch_lost_seconds=lost_summary,
        kill_points=[round(p, 3) for p in points],
        crash_free=crash_free,
        with_crashes=with_crashes,
        from_scratch=from_scratch,
        requests_redone_per_kill=round(
            (with_crashes.requests - crash_free.requests) / len(recoveries), 2
        ),
        completion_tokens_redone_per_kill=round(
            (with_crashes.completion_tokens - crash_free.completion_tokens) / len(recoveries), 1
        ),
        scratch_requests_redone_per_kill=round(
            (from_scratch.requests - crash_free.requests) / len(recoveries), 2
        ),
        scratch_completion_tokens_redone_per_kill=round(
            (from_scratch.completion_tokens - crash_free.completion_tokens) / len(recoveries), 1
        ),
        token_reduction_vs_scratch=round(
            1 - with_crashes.total_tokens / from_scratch.total_tokens, 3
        ),
        recovery_vs_scratch_ratio=round(recovery["mean"] / lost_summary["mean"], 3),
    )


def report(figures: CrashFigures) -> str:
    r, h = figures.recovery_seconds, figures.handover_seconds
    return "\n".join(
        [
            f"crashes: {figures.documents} documents, heartbeat timeout "
            f"{figures.heartbeat_timeout_seconds:g} s, "
            f"crash-free run {figures.crash_free_seconds} s, "
            f"{figures.load_processes} CPU-bound process(es) beside the stack, dead-worker "
            f"detector {'on' if figures.dead_worker_detector else 'off'}",
            f"  recovery after SIGKILL ({figures.kills} kills): median {r['median']:.2f} s, "
            f"p95 {r['p95']:.2f} s, mean {r['mean']:.2f} s (article: 4.2 s average)",
            f"  killed attempts ended by the detector (WORKER_LOST): "
            f"{figures.detector_handovers}, by the heartbeat timeout: "
            f"{figures.heartbeat_timeout_handovers}",
            f"  hand-over after SIGTERM ({figures.handovers}): median {h['median']:.2f} s, "
            f"p95 {h['p95']:.2f} s",
            f"  live steps handed over by mistake (taken from a live worker): "
            f"{figures.live_steps_taken}",
            f"  restart from scratch loses {figures.scratch_lost_seconds['mean']:.2f} s of work "
            f"per crash on average: recovery/restart = {figures.recovery_vs_scratch_ratio:.2f}",
            f"  redone per kill: {figures.requests_redone_per_kill} requests, "
            f"{figures.completion_tokens_redone_per_kill} completion tokens "
            f"(from scratch: {figures.scratch_requests_redone_per_kill} requests, "
            f"{figures.scratch_completion_tokens_redone_per_kill} completion tokens)",
            f"  tokens paid: crash-free {figures.crash_free.total_tokens}, with "
            f"{figures.kills} crashes {figures.with_crashes.total_tokens}, restarting from "
            f"scratch {figures.from_scratch.total_tokens}: "
            f"{figures.token_reduction_vs_scratch:.1%} fewer than from scratch (article: 67 %)",
        ]
    )


def parser() -> argparse.ArgumentParser:
    root = bench_parser("crashes", __doc__)
    root.add_argument("--documents", type=at_least_one, default=100, help="one-page documents")
    root.add_argument("--kills", type=at_least_one, default=20, help="SIGKILLs of the busy worker")
    root.add_argument(
        "--handovers", type=at_least_one, default=5, help="SIGTERMs of the busy worker"
    )
    root.add_argument("--seed", type=int, default=1, help="seed of the random kill moments")
    root.add_argument(
        "--load", type=int, default=0, help="CPU-bound processes to run beside the stack"
    )
    root.add_argument(
        "--heartbeat-timeout", type=float, help="seconds (default: LTM_HEARTBEAT_TIMEOUT_SECONDS's)"
    )
    root.add_argument(
        "--no-detector",
        action="store_true",
        help="workers without the dead-worker detector: the heartbeat timeout alone",
    )
    return root


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="bench-crashes-") as folder:
        settings = bench_settings(
            Path(folder) / "stack", args.documents, args.heartbeat_timeout, not args.no_detector
        )
        with cpu_load(args.load):
            figures = measure_on_stack(
                "crashes",
                settings,
                lambda: measure(
                    settings,
                    Path(folder) / "corpus",
                    args.documents,
                    args.kills,
                    args.handovers,
                    args.seed,
                ),
            )
    if figures is None:
        return 1
    figures.load_processes = args.load
    return publish(figures, report(figures), args.json)


if __name__ == "__main__":
    sys.exit(main())
