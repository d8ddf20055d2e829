"""Throughput: documents per second, against the dev server's own ceiling in the same run.

  python -m bench.throughput                 # 1,000 documents
  python -m bench.throughput --full          # 1,000 and 10,000 documents (about 8 minutes)
  python -m bench.throughput --sizes 200 --ceiling-activities 500   # a quick look
  python -m bench.throughput --workers 1 2 4  # scaling out: the job with 1, 2 and 4 workers

One embedded stack, the LLM server answering at once (zero latency, no pause between streamed
chunks: what is measured is the product, not the model), one worker with the default settings;
before each job, the bare asyncio loop (bench/bare_loop.py) runs the same documents with the
same 64 documents and calls in flight, and the job's call rate is given over the loop's.
With several ``--workers`` counts each job runs once per count, and the Temporal server's and
the workers' CPU time during it say which of them is the limit on this machine.
In the same run, on the same dev server, a workflow of trivial activities (100 in flight)
measures what the server itself carries: the ceiling a design with one activity per LLM call
could never pass. The product runs many calls per activity, so its steps per second can exceed
that ceiling; the ratio says by how much.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import tempfile
import time
import uuid
from pathlib import Path

from pydantic import BaseModel
from temporalio.client import Client
from temporalio.worker import Worker

from bench.bare_loop import BareLoopFigures, default_route, run_bare_loop
from bench.ceiling_workflow import CeilingWorkflow, trivial
from bench.harness import (
    Workers,
    bench_parser,
    cpu_seconds,
    finish,
    measure_on_stack,
    publish,
    stack_settings,
    start_job,
)
from longtask.connections import connect_temporal
from longtask.settings import Settings
from longtask.states import TaskState
from longtask.tooling import stack
from longtask.tooling.corpus import at_least_one, write_corpus

CEILING_IN_FLIGHT = 100
DEFAULT_SIZES = (1_000,)
FULL_SIZES = (1_000, 10_000)


class JobThroughput(BaseModel):
    documents: int
    workers: int = 1
    # Provider calls answered (one page summary, embedding batch, reasoning or report each).
    steps: int
    seconds: float
    documents_per_second: float
    steps_per_second: float
    # The job's steps per second over the trivial-activity ceiling measured in the same run.
    ratio_to_ceiling: float
    # The same documents through the bare asyncio loop (64 documents and calls in flight, as
    # the task's default window), in the same run: its calls per second, and the job's over it.
    bare_steps_per_second: float = 0.0
    ratio_to_bare: float = 0.0
    # CPU seconds per wall second during the job (1.0: one core busy): the Temporal server's
    # and all the workers' together, to show which one is the limit.
    server_cpu: float = 0.0
    workers_cpu: float = 0.0


class ThroughputFigures(BaseModel):
    ceiling_activities: int
    ceiling_seconds: float
    ceiling_activities_per_second: float
    jobs: list[JobThroughput]


async def measure_ceiling(client: Client, activities: int) -> tuple[float, float]:
    """Seconds for ``activities`` trivial activities, and their rate, on this server."""
    queue = f"bench-ceiling-{uuid.uuid4().hex[:8]}"
    async with Worker(
        client,
        task_queue=queue,
        workflows=[CeilingWorkflow],
        activities=[trivial],
        max_concurrent_activities=CEILING_IN_FLIGHT,
    ):
        started = time.monotonic()
        await client.execute_workflow(
            CeilingWorkflow.run, args=[activities, CEILING_IN_FLIGHT], id=queue, task_queue=queue
        )
        seconds = time.monotonic() - started
    return seconds, activities / seconds


async def measure_job(
    client: Client,
    settings: Settings,
    paths: list[Path],
    ceiling: float,
    bare: BareLoopFigures,
    workers: Workers,
) -> JobThroughput:
    documents, corpus = len(paths), paths[0].parent
    server_pid = stack.pid_of(settings, "temporal")
    pids = [process.process.pid for process in workers.running]
    server, busy = cpu_seconds(server_pid), sum(cpu_seconds(pid) for pid in pids)
    started = time.monotonic()
    task_id = f"throughput-{documents}-{len(pids)}"
    _, handle = await start_job(client, settings, corpus, task_id)
    result = await finish(handle)
    seconds = time.monotonic() - started
    server = cpu_seconds(server_pid) - server
    busy = sum(cpu_seconds(pid) for pid in pids) - busy
    if result.state is not TaskState.COMPLETED:
        raise RuntimeError(f"the {documents}-document job ended {result.state.value}")
    steps = sum(stats.successes for stats in result.calls.values())
    return JobThroughput(
        documents=documents,
        workers=len(pids),
        steps=steps,
        seconds=round(seconds, 1),
        documents_per_second=round(documents / seconds, 1),
        steps_per_second=round(steps / seconds, 1),
        ratio_to_ceiling=round(steps / seconds / ceiling, 2),
        bare_steps_per_second=round(bare.calls_per_second, 1),
        ratio_to_bare=round(steps / seconds / bare.calls_per_second, 2),
        server_cpu=round(server / seconds, 2),
        workers_cpu=round(busy / seconds, 2),
    )


async def measure(
    settings: Settings,
    folder: Path,
    sizes: tuple[int, ...],
    ceiling_activities: int,
    worker_counts: list[int],
) -> ThroughputFigures:
    client = await connect_temporal(settings)
    ceiling_seconds, ceiling = await measure_ceiling(client, ceiling_activities)
    jobs = []
    for size in sizes:
        paths = await asyncio.to_thread(write_corpus, folder / f"corpus-{size}", size)
        bare = await run_bare_loop(
            paths,
            settings.llm_base_url,
            default_route(settings),
            settings.document_concurrency,
            documents_in_flight=settings.document_concurrency,
        )
        for count in worker_counts:
            with Workers(settings) as workers:
                for _ in range(count):
                    workers.start()
                await workers.ready()
                jobs.append(await measure_job(client, settings, paths, ceiling, bare, workers))
    return ThroughputFigures(
        ceiling_activities=ceiling_activities,
        ceiling_seconds=round(ceiling_seconds, 1),
        ceiling_activities_per_second=round(ceiling, 1),
        jobs=jobs,
    )


def report(figures: ThroughputFigures) -> str:
    lines = [
        f"throughput: dev server ceiling {figures.ceiling_activities_per_second:.0f} trivial "
        f"activities/s ({figures.ceiling_activities} in {figures.ceiling_seconds} s)"
    ]
    for job in figures.jobs:
        lines.append(
            f"  {job.documents} documents, {job.workers} worker(s), in {job.seconds} s: "
            f"{job.documents_per_second} "
            f"documents/s, {job.steps_per_second:.0f} steps/s = "
            f"{job.ratio_to_ceiling:.2f}x the trivial-activity ceiling; bare loop "
            f"{job.bare_steps_per_second:.0f} calls/s: {job.ratio_to_bare:.2f}x its rate; CPU: "
            f"Temporal server {job.server_cpu:.2f}, workers {job.workers_cpu:.2f} cores"
        )
    return "\n".join(lines)


def parser() -> argparse.ArgumentParser:
    root = bench_parser("throughput", __doc__)
    root.add_argument(
        "--full", action="store_true", help="1,000 and 10,000 documents (default: 1,000)"
    )
    root.add_argument(
        "--sizes", type=at_least_one, nargs="+", help="document counts to run instead"
    )
    root.add_argument(
        "--ceiling-activities",
        type=at_least_one,
        default=2_000,
        help="trivial activities for the ceiling",
    )
    root.add_argument(
        "--workers",
        type=at_least_one,
        nargs="+",
        default=[1],
        help="worker processes; several counts run each job once per count (scaling out)",
    )
    return root


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    sizes = tuple(args.sizes) if args.sizes else FULL_SIZES if args.full else DEFAULT_SIZES
    with tempfile.TemporaryDirectory(prefix="bench-throughput-") as folder:
        settings = stack_settings(Path(folder) / "stack", latency_ms=0, chunk_delay_ms=0)
        figures = measure_on_stack(
            "throughput",
            settings,
            lambda: measure(settings, Path(folder), sizes, args.ceiling_activities, args.workers),
        )
    if figures is None:
        return 1
    return publish(figures, report(figures), args.json)


if __name__ == "__main__":
    sys.exit(main())
