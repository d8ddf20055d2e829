"""Runs a worker of the long task manager; SIGINT or SIGTERM shuts it down gracefully.

Usage: python worker.py      (settings come from LTM_* environment variables)
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import os
import signal
import sys
import time
from collections.abc import Callable
from datetime import timedelta
from typing import Any, Literal

import openai
from prometheus_client import start_http_server
from redis.asyncio import Redis
from temporalio.client import Client
from temporalio.plugin import SimplePlugin
from temporalio.worker import Worker

from activities.agents import agent_activities
from activities.backpressure import LoopPressure
from activities.batch import DocumentBatches
from activities.checkpoint_sink import CheckpointSink, serving
from activities.documents import DocumentLoader
from activities.liveness import RegisteringInterceptor
from activities.liveness_watch import LivenessMonitor
from activities.mirror import MirrorActivities
from activities.model_check import ModelChecker
from activities.provider import make_client
from activities.rate_limits import SharedRateLimiter
from activities.report_files import ReportStore
from activities.steps import DocumentSteps
from longtask.connections import (
    connect_named_redis,
    connect_redis,
    connect_redis_sync,
    connect_temporal,
)
from longtask.process_exit import exit_now
from longtask.retention import keep_pruning
from longtask.settings import Settings, SettingsError, load_settings
from longtask.workflow_thread import WorkflowThread
from workflows.agents import agent_workflows
from workflows.document_task import DocumentTaskWorkflow

log = logging.getLogger("worker")

# A worker started while Temporal is not up yet (a restart, a stack coming up) waits this long.
TEMPORAL_PATIENCE = timedelta(minutes=2)
# A batch hands its steps over as soon as its worker begins to stop (activities/batch.py);
# other activities (older runs' single steps, documents being found) get this long to finish.
GRACEFUL_SHUTDOWN = timedelta(seconds=10)
# A shutdown past this is stuck, not graceful (see ``shut_down``).
SHUTDOWN_LIMIT = GRACEFUL_SHUTDOWN + timedelta(seconds=5)
# What one temporalio worker runs: everything, or the workflows or the activities alone.
Runs = Literal["all", "workflows", "activities"]


def build_worker(
    client: Client,
    settings: Settings,
    llm: openai.AsyncOpenAI,
    redis: Redis,
    runs: Runs = "all",
) -> Worker:
    """A worker for every workflow and activity (``runs``: or for one of them), tuned so a
    lost worker is noticed quickly.

    Heartbeats reach the server every eighth of the heartbeat timeout (the SDK's default of
    0.8 x would leave a dead worker unnoticed for longer, and a loaded machine that holds the
    worker back for a second must not make it look dead), and a workflow whose
    sticky worker died moves to another one after a couple of seconds instead of ten. A worker
    runs at most ``worker_activity_slots`` activities: more would crowd its event loop until
    heartbeats come late and a busy worker looks dead; the rest wait on the queue for it or
    for another worker.
    """
    heartbeat = timedelta(seconds=settings.heartbeat_timeout_seconds)
    steps = DocumentSteps(
        llm,
        client,
        settings.llm_api_key.get_secret_value(),
        settings.progress_signal_seconds,
        redis,
        SharedRateLimiter(redis, settings.rate_limits) if settings.rate_limits else None,
        settings.mirror_messages,
        # New calls wait while the event loop runs later than a quarter of the heartbeat
        # timeout: heartbeats go out every eighth of it, so they still arrive well in time.
        LoopPressure(max_lag_seconds=settings.heartbeat_timeout_seconds / 4),
    )
    reports = ReportStore(settings.report_folder())
    batches = DocumentBatches(steps, reports)
    loader = DocumentLoader(reports)
    checker = ModelChecker(llm, settings.llm_api_key.get_secret_value())
    mirror = MirrorActivities(redis, settings.mirror_messages)
    activities: list[Callable[..., Any]] = [
        loader.load_documents,
        checker.check_models,
        batches.process_documents,
        steps.embed_chunks,
        steps.summarize_pages,
        steps.reason_across_pages,
        steps.write_report,
        mirror.write_checkpoint,
        mirror.load_resume_state,
        *agent_activities(client, settings, llm, redis),
    ]
    plugins = []
    if runs != "activities":
        # The sink writes from a thread of its own, on a connection of its own; it runs as
        # long as the worker, and flushes after it stops.
        sink = CheckpointSink(connect_redis_sync(settings), settings.mirror_messages)
        plugins.append(
            SimplePlugin(
                "ltm-checkpoint-sink", run_context=lambda: serving(settings.task_queue, sink)
            )
        )
    if runs != "workflows":
        plugins.extend(dead_worker_detector(client, settings))
    return Worker(
        client,
        task_queue=settings.task_queue,
        workflows=[] if runs == "activities" else [DocumentTaskWorkflow, *agent_workflows()],
        activities=[] if runs == "workflows" else activities,
        max_concurrent_activities=settings.worker_activity_slots,
        max_heartbeat_throttle_interval=heartbeat / 8,
        default_heartbeat_throttle_interval=heartbeat / 8,
        sticky_queue_schedule_to_start_timeout=max(heartbeat, timedelta(seconds=1)),
        graceful_shutdown_timeout=GRACEFUL_SHUTDOWN,
        max_cached_workflows=settings.max_cached_workflows,
        # A worker of workflows alone cannot run an activity it is handed eagerly.
        disable_eager_activity_execution=runs == "workflows",
        plugins=plugins,
    )


def dead_worker_detector(client: Client, settings: Settings) -> list[SimplePlugin]:
    """Registers this worker's running activities in Redis and watches the other workers':
    a worker killed outright has its steps retried elsewhere within a fraction of a second,
    the heartbeat timeout staying the fallback (activities/liveness_watch.py)."""
    if not settings.detect_dead_workers:
        return []
    monitor = LivenessMonitor(
        lambda name: connect_named_redis(settings, name), client, client.identity
    )
    return [
        SimplePlugin(
            "ltm-dead-worker-detector",
            interceptors=[RegisteringInterceptor(monitor.registry)],
            run_context=monitor.running,
        )
    ]


def serve_metrics(port: int) -> None:
    """Prometheus metrics on 127.0.0.1:PORT/metrics; a port in use costs the metrics only."""
    if port == 0:
        return
    try:
        start_http_server(port, addr="127.0.0.1")
        log.info("metrics on http://127.0.0.1:%d/metrics", port)
    except OSError as error:
        log.warning("metrics not served on port %d: %s (set LTM_METRICS_PORT)", port, error)


async def connect_patiently(settings: Settings, stop: asyncio.Event) -> Client | None:
    """Temporal, retried while it is not there yet (a server restarting, a stack still coming
    up) for up to TEMPORAL_PATIENCE; None when stopped meanwhile."""
    deadline = time.monotonic() + TEMPORAL_PATIENCE.total_seconds()
    wait = 0.5
    while True:
        try:
            return await connect_temporal(settings)
        except RuntimeError as error:
            if time.monotonic() + wait > deadline:
                raise
            log.warning(
                "Temporal at %s not reachable yet (%s); retrying in %.1f s",
                settings.temporal_address,
                str(error).splitlines()[0][:200],
                wait,
            )
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), timeout=wait)
            return None
        wait = min(wait * 2, 5.0)


async def shut_down(running: contextlib.AsyncExitStack) -> None:
    """Stop the workers, within SHUTDOWN_LIMIT. A worker told to stop the moment it began
    polling can wait out a long poll the server has not answered yet (a minute, seen here):
    nothing is running then, and the process leaves without it."""
    try:
        await asyncio.wait_for(running.aclose(), SHUTDOWN_LIMIT.total_seconds())
    except TimeoutError:
        log.warning(
            "the workers did not stop within %s (a poll the server had not answered); "
            "leaving without them",
            SHUTDOWN_LIMIT,
        )


async def serve(settings: Settings) -> None:
    serve_metrics(settings.metrics_port)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop.set)
    client = await connect_patiently(settings, stop)
    if client is None:
        log.info("worker stopped before Temporal answered")
        return
    redis = connect_redis(settings)
    llm = make_client(settings.llm_base_url, settings.llm_api_key.get_secret_value())
    pruning = asyncio.create_task(keep_pruning(settings, stop))
    running = contextlib.AsyncExitStack()
    try:
        runs: Runs = settings.worker_runs
        if runs == "all" and settings.workflow_thread:
            # Workflows on a loop of their own (longtask/workflow_thread.py says why); they
            # stop after the activities, so a batch handing its steps over is still booked.
            workflows = functools.partial(build_worker, client, settings, llm, redis, "workflows")
            await running.enter_async_context(WorkflowThread(workflows))
            runs = "activities"
        # A process of workflows alone (LTM_WORKER_RUNS) keeps them on its only loop.
        await running.enter_async_context(build_worker(client, settings, llm, redis, runs))
        # The PID lets a user stop this worker, and only this one: `kill PID`.
        log.info(
            "worker pid %d polling %r on %s (namespace %s; runs %s)",
            os.getpid(),
            settings.task_queue,
            settings.temporal_address,
            settings.temporal_namespace,
            settings.worker_runs,
        )
        await stop.wait()
        log.info(
            "shutting down: batches hand their steps over now, other steps have %s",
            GRACEFUL_SHUTDOWN,
        )
    finally:
        await shut_down(running)
    await pruning
    await redis.aclose()
    await llm.close()
    log.info("worker stopped")


def main() -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s %(message)s")
    # One line per HTTP request drowns what matters; failures still surface as step errors.
    for noisy in ("httpx", "httpx2"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    try:
        settings = load_settings()
    except SettingsError as error:
        print(error, file=sys.stderr)
        return 2
    try:
        asyncio.run(serve(settings))
    except RuntimeError as error:
        print(f"worker: {error}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    exit_now(main())
