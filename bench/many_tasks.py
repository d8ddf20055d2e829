"""Many tasks at once against one task holding all their documents, with one worker and three.

  python -m bench.many_tasks                        # 100 tasks of 10 documents vs 1 of 1,000
  python -m bench.many_tasks --tasks 20 --documents-per-task 10 --workers 1

One embedded stack, the LLM server as `make up` runs it (200 ms latency, 20 ms between streamed
chunks), default settings. For each worker count: one task over every document, then the same
documents as many tasks started together; the ratio is the many tasks' time (the last one to
finish) over the one task's, and the finish times of the many tasks show how evenly they were
served.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import tempfile
import time
from pathlib import Path

from pydantic import BaseModel

from bench.harness import (
    Workers,
    bench_parser,
    finish,
    live_steps_taken,
    measure_on_stack,
    publish,
    stack_settings,
    start_job,
)
from longtask.connections import connect_temporal
from longtask.settings import Settings
from longtask.states import TaskState
from longtask.tooling.corpus import at_least_one, write_corpus

LATENCY_MS = 200
CHUNK_DELAY_MS = 20


class ManyTasksRun(BaseModel):
    workers: int
    one_task_seconds: float
    many_tasks_seconds: float
    # The many tasks' time over the one task's (1.0: no cost for splitting the work).
    ratio: float
    # Seconds from the start of the many tasks to each one's end: first, median, last.
    first_finish: float
    median_finish: float
    last_finish: float
    live_steps_taken: int


class ManyTasksFigures(BaseModel):
    tasks: int
    documents_per_task: int
    latency_ms: int
    runs: list[ManyTasksRun]


async def run_task(settings: Settings, folder: Path, task_id: str, started: float) -> float:
    """Run one task to its end; seconds from ``started`` to that end."""
    client = await connect_temporal(settings)
    _, handle = await start_job(client, settings, folder, task_id)
    result = await finish(handle)
    if result.state is not TaskState.COMPLETED:
        raise RuntimeError(f"{task_id} ended {result.state.value}: {result.reason}")
    return time.monotonic() - started


async def measure_with(
    settings: Settings, corpus: Path, folders: list[Path], count: int
) -> ManyTasksRun:
    with Workers(settings) as workers:
        for _ in range(count):
            workers.start()
        await workers.ready()
        one = await run_task(settings, corpus, f"one-{count}", time.monotonic())
        started = time.monotonic()
        ends = await asyncio.gather(
            *(
                run_task(settings, folder, f"many-{count}-{n}", started)
                for n, folder in enumerate(folders)
            )
        )
        taken = live_steps_taken(workers)
    last = max(ends)
    return ManyTasksRun(
        workers=count,
        one_task_seconds=round(one, 2),
        many_tasks_seconds=round(last, 2),
        ratio=round(last / one, 2),
        first_finish=round(min(ends), 2),
        median_finish=round(statistics.median(ends), 2),
        last_finish=round(last, 2),
        live_steps_taken=taken,
    )


async def measure(
    settings: Settings, folder: Path, tasks: int, per_task: int, worker_counts: list[int]
) -> ManyTasksFigures:
    folders = [folder / f"task-{n}" for n in range(tasks)]
    for task_folder in folders:
        await asyncio.to_thread(write_corpus, task_folder, per_task)
    corpus = folder / "all"
    await asyncio.to_thread(write_corpus, corpus, tasks * per_task)
    runs = [await measure_with(settings, corpus, folders, count) for count in worker_counts]
    return ManyTasksFigures(
        tasks=tasks, documents_per_task=per_task, latency_ms=LATENCY_MS, runs=runs
    )


def report(figures: ManyTasksFigures) -> str:
    documents = figures.tasks * figures.documents_per_task
    lines = [
        f"many tasks: {figures.tasks} tasks of {figures.documents_per_task} documents against "
        f"one task of {documents}, latency {figures.latency_ms} ms"
    ]
    for run in figures.runs:
        lines.append(
            f"  {run.workers} worker(s): one task {run.one_task_seconds:.1f} s, "
            f"{figures.tasks} tasks {run.many_tasks_seconds:.1f} s: ratio {run.ratio:.2f}; "
            f"finished after {run.first_finish:.1f} s (first), {run.median_finish:.1f} s "
            f"(median), {run.last_finish:.1f} s (last); live steps taken: {run.live_steps_taken}"
        )
    return "\n".join(lines)


def parser() -> argparse.ArgumentParser:
    root = bench_parser("many_tasks", __doc__)
    root.add_argument("--tasks", type=at_least_one, default=100, help="tasks started together")
    root.add_argument(
        "--documents-per-task", type=at_least_one, default=10, help="one-page documents each"
    )
    root.add_argument(
        "--workers", type=at_least_one, nargs="+", default=[1, 3], help="worker counts to run"
    )
    return root


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="bench-many-tasks-") as folder:
        settings = stack_settings(
            Path(folder) / "stack", latency_ms=LATENCY_MS, chunk_delay_ms=CHUNK_DELAY_MS
        )
        figures = measure_on_stack(
            "many_tasks",
            settings,
            lambda: measure(
                settings, Path(folder), args.tasks, args.documents_per_task, args.workers
            ),
        )
    if figures is None:
        return 1
    return publish(figures, report(figures), args.json)


if __name__ == "__main__":
    sys.exit(main())
