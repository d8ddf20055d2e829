"""An embedded stack of its own for each benchmark: nothing shared with `make up` or the tests.

Every benchmark starts the same services `make up` starts (file-backed Temporal dev server with
the WAL pragmas, Redis, the local LLM server), on free loopback ports under a temporary folder,
and worker processes configured by environment as a user would run them.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import io
import os
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Coroutine, Iterator
from pathlib import Path
from typing import Any, TypeVar

from pydantic import BaseModel
from temporalio.client import Client, WorkflowHandle

from activities.batch import LIVE_STEP_TAKEN
from longtask.models import TaskInput, TaskResult, TaskStatus
from longtask.settings import Settings
from longtask.task_resume import outcome
from longtask.task_start import start_task, task_input
from longtask.tooling import stack
from longtask.tooling.servers import free_port
from longtask.tooling.worker_process import WorkerProcess

Figures = TypeVar("Figures", bound=BaseModel)


def stack_settings(
    folder: Path, latency_ms: int, chunk_delay_ms: int, **overrides: Any
) -> Settings:
    """Settings of a fresh stack under ``folder``; ``overrides`` shape the tasks it runs."""
    return Settings(
        state_dir=folder,
        temporal_address=f"127.0.0.1:{free_port()}",
        temporal_ui_port=free_port(),
        redis_url=f"redis://127.0.0.1:{free_port()}/0",
        llm_base_url=f"http://127.0.0.1:{free_port()}/v1",
        llm_server_latency_ms=latency_ms,
        llm_server_chunk_delay_ms=chunk_delay_ms,
        payload_dir=folder / "payloads",
        report_dir=folder / "reports",
        metrics_port=0,
        **overrides,
    )


@contextlib.contextmanager
def embedded_stack(settings: Settings) -> Iterator[Settings]:
    """The services `make up` starts, for these settings; stopped on the way out, whatever
    happened. Their start-up lines go to the stack's logs, not into the figures. Enter it
    outside any event loop: `up` registers search attributes with its own."""
    try:
        with contextlib.redirect_stdout(io.StringIO()):
            stack.up(settings)
        yield settings
    finally:
        with contextlib.redirect_stdout(io.StringIO()):
            stack.down(settings)


def cpu_seconds(pid: int) -> float:
    """User plus system CPU time of a process so far."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


@contextlib.contextmanager
def cpu_load(processes: int) -> Iterator[None]:
    """``processes`` CPU-bound loops beside the stack while inside (as `make test-loaded`)."""
    hogs = [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(processes)]
    try:
        yield
    finally:
        for hog in hogs:
            hog.kill()
            hog.wait()


def live_steps_taken(workers: Workers) -> int:
    """Steps the server took from a live worker (a heartbeat missed while alive), from every
    log of the stack's workers so far."""
    logs = (workers.settings.state_dir / "logs").glob("worker-*.log")
    return sum(log.read_text(errors="replace").count(LIVE_STEP_TAKEN) for log in logs)


class Workers:
    """Worker processes of one stack; each one's log under the stack's folder."""

    def __init__(self, settings: Settings, extra_env: dict[str, str] | None = None) -> None:
        self.settings = settings
        self._env = {
            "LTM_REPORT_DIR": str(settings.report_folder()),
            "LTM_HEARTBEAT_TIMEOUT_SECONDS": str(settings.heartbeat_timeout_seconds),
            "LTM_DETECT_DEAD_WORKERS": str(settings.detect_dead_workers).lower(),
            **(extra_env or {}),
        }
        self.running: list[WorkerProcess] = []
        self._started = 0

    def start(self, extra_env: dict[str, str] | None = None) -> WorkerProcess:
        self._started += 1
        log = self.settings.state_dir / "logs" / f"worker-{self._started}.log"
        process = WorkerProcess(self.settings, log, extra_env={**self._env, **(extra_env or {})})
        self.running.append(process)
        return process

    def polling(self) -> int:
        """How many running workers poll their task queue already (their logs say so)."""
        return sum(
            process.log.exists() and f"pid {process.process.pid} polling" in process.log.read_text()
            for process in self.running
        )

    async def ready(self, seconds: float = 120, at_least: int | None = None) -> None:
        """Wait until every running worker (or ``at_least`` of them) polls its task queue, so
        that a measurement does not include a worker's start."""
        wanted = len(self.running) if at_least is None else at_least

        async def enough() -> bool:
            return self.polling() >= wanted

        await wait_until(enough, seconds, "workers polling")

    def forget(self, process: WorkerProcess) -> None:
        self.running.remove(process)

    def stop_all(self) -> None:
        for process in self.running:
            process.stop()
        self.running.clear()

    def __enter__(self) -> Workers:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop_all()


async def start_job(
    client: Client, settings: Settings, folder: Path, task_id: str
) -> tuple[TaskInput, WorkflowHandle[Any, TaskResult]]:
    """A task over every document of ``folder``, as `starter.py start` would begin it, less
    the check of its models: the measurements compare the documents' own calls (with a bare
    loop, with a crash-free run), and the check's one call per model is no part of them."""
    task = task_input(settings, [str(folder)], task_id).model_copy(update={"check_models": False})
    await start_task(client, settings, task)
    return task, client.get_workflow_handle(task.task_id, result_type=TaskResult)


async def finish(handle: WorkflowHandle[Any, TaskResult]) -> TaskResult:
    """The task's result, whatever its end; a task that ended without one is an error."""
    result = await outcome(handle)
    if result is None:
        raise RuntimeError(f"task {handle.id} was cancelled")
    return result


def steps_done(status: TaskStatus | None) -> float:
    """The share of the task's steps finished, 0..1, from its progress record."""
    if status is None or status.record.total == 0:
        return 0.0
    return status.record.step / status.record.total


async def wait_until(predicate: Any, seconds: float, what: str) -> None:
    deadline = time.monotonic() + seconds
    while not await predicate():
        if time.monotonic() > deadline:
            raise TimeoutError(f"{what}: not within {seconds:.0f} s")
        await asyncio.sleep(0.05)


def percentile(values: list[float], share: float) -> float:
    """The nearest-rank percentile (``share`` in 0..1) of a non-empty list."""
    ordered = sorted(values)
    rank = max(1, min(len(ordered), round(share * len(ordered) + 0.5)))
    return ordered[rank - 1]


def summary(values: list[float]) -> dict[str, float]:
    """Median, mean, p95 and extremes, rounded to the millisecond."""
    return {
        "n": len(values),
        "median": round(statistics.median(values), 3),
        "mean": round(statistics.fmean(values), 3),
        "p95": round(percentile(values, 0.95), 3),
        "min": round(min(values), 3),
        "max": round(max(values), 3),
    }


def bench_parser(name: str, doc: str | None) -> argparse.ArgumentParser:
    """The command line every benchmark shares: its name, its docstring's first line, --json."""
    root = argparse.ArgumentParser(
        prog=f"python -m bench.{name}", description=(doc or "").split("\n")[0]
    )
    root.add_argument("--json", type=Path, help="also write the figures to this file")
    return root


def publish(figures: BaseModel, report: str, json_path: Path | None) -> int:
    """Print the figures as one JSON line, then for people; save them when asked."""
    print(figures.model_dump_json())
    print(report)
    if json_path is not None:
        json_path.write_text(figures.model_dump_json(indent=2) + "\n")
    return 0


def measure_on_stack(
    name: str, settings: Settings, measurement: Callable[[], Coroutine[Any, Any, Figures]]
) -> Figures | None:
    """Run ``measurement`` on a fresh embedded stack for ``settings``.

    A job that did not go as the benchmark needs raises RuntimeError; it is reported on stderr
    under the script's ``name`` and None comes back, for the script to exit non-zero.
    """
    try:
        with embedded_stack(settings):
            return asyncio.run(measurement())
    except RuntimeError as error:
        print(f"{name}: {error}", file=sys.stderr)
        return None
