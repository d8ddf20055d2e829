"""What on-time timers cost the dev server: `history.timerProcessorMaxTimeShift` 1 s against 100 ms.

  python -m bench.timer_shift                     # 30 s idle, 20 timers, 2,000 activities
  python -m bench.timer_shift --idle-seconds 5 --timers 3 --activities 50   # a quick look

Two file-backed dev servers (as `make up` starts them), one with the server's default shift
(1 s) and one with the stack's (100 ms), run side by side for the whole run, so the machine's
load falls on both alike. Measured on each: the server's CPU time while idle; how long a 0.2 s
timer and a 0.2 s activity retry really take; the server's CPU time for the same job (a workflow
of trivial activities, 100 in flight) run on both at once.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

from pydantic import BaseModel
from temporalio.client import Client
from temporalio.worker import Worker

from bench.ceiling_workflow import CeilingWorkflow, TimersWorkflow, fails_first, trivial
from bench.harness import bench_parser, cpu_seconds, publish
from bench.processes import serving
from longtask.tooling.corpus import at_least_one
from longtask.tooling.servers import free_port
from longtask.tooling.stack import TIMER_MAX_TIME_SHIFT, temporal_command

DEFAULT_SHIFT = "1s"
TIMER_SECONDS = 0.2
IN_FLIGHT = 100


class ServerFigures(BaseModel):
    shift: str
    # CPU seconds of the server process per wall second (1.0 = one core busy).
    idle_cpu_share: float
    timer_seconds: float
    retry_seconds: float
    job_seconds: float
    job_cpu_seconds: float


class TimerShiftFigures(BaseModel):
    idle_seconds: float
    timer_asked_seconds: float
    activities: int
    servers: list[ServerFigures]
    # Tuned over default, for the idle CPU share and the job's CPU time.
    idle_cpu_ratio: float
    job_cpu_ratio: float


@contextlib.contextmanager
def dev_server(folder: Path, shift: str) -> Iterator[tuple[int, str]]:
    """A dev server with this timer shift: its pid and address."""
    port = free_port()
    command = temporal_command("127.0.0.1", port, free_port(), folder / f"{shift}.db", shift)
    with serving(command, port, folder / f"temporal-{shift}.log", seconds=60) as process:
        yield process.pid, f"127.0.0.1:{port}"


async def connect(address: str) -> Client:
    deadline = time.monotonic() + 60
    while True:
        try:
            return await Client.connect(address)
        except RuntimeError:
            if time.monotonic() > deadline:
                raise
            await asyncio.sleep(0.5)


async def timed(client: Client, queue: str, workflow: str, *args: object) -> float:
    started = time.monotonic()
    await client.execute_workflow(workflow, args=list(args), id=uuid.uuid4().hex, task_queue=queue)
    return time.monotonic() - started


async def on_server(
    pid: int, client: Client, args: argparse.Namespace, together: asyncio.Barrier
) -> tuple[float, float, float, float]:
    """Timer and retry seconds (each), then the job's seconds and the server's CPU for it."""
    queue = f"bench-timers-{uuid.uuid4().hex[:8]}"
    async with Worker(
        client,
        task_queue=queue,
        workflows=[CeilingWorkflow, TimersWorkflow],
        activities=[trivial, fails_first],
        max_concurrent_activities=IN_FLIGHT,
    ):
        timers = await timed(client, queue, "BenchTimers", args.timers, TIMER_SECONDS, 0)
        retries = await timed(client, queue, "BenchTimers", 0, TIMER_SECONDS, args.timers)
        await together.wait()  # the two jobs run at the same time
        cpu = cpu_seconds(pid)
        seconds = await timed(client, queue, "BenchCeiling", args.activities, IN_FLIGHT)
        return timers / args.timers, retries / args.timers, seconds, cpu_seconds(pid) - cpu


async def measure(
    servers: list[tuple[str, int, str]], args: argparse.Namespace
) -> TimerShiftFigures:
    """``servers``: (shift, pid, address) of each dev server."""
    clients = [await connect(address) for _, _, address in servers]
    await asyncio.sleep(min(5.0, args.idle_seconds))  # past the servers' start-up work
    before = [cpu_seconds(pid) for _, pid, _ in servers]
    await asyncio.sleep(args.idle_seconds)
    idle = [
        (cpu_seconds(pid) - b) / args.idle_seconds
        for (_, pid, _), b in zip(servers, before, strict=True)
    ]
    together = asyncio.Barrier(len(servers))
    runs = await asyncio.gather(
        *(
            on_server(pid, c, args, together)
            for (_, pid, _), c in zip(servers, clients, strict=True)
        )
    )
    figures = [
        ServerFigures(
            shift=shift,
            idle_cpu_share=round(share, 4),
            timer_seconds=round(timer, 3),
            retry_seconds=round(retry, 3),
            job_seconds=round(seconds, 2),
            job_cpu_seconds=round(cpu, 2),
        )
        for (shift, _, _), share, (timer, retry, seconds, cpu) in zip(
            servers, idle, runs, strict=True
        )
    ]
    default, tuned = figures
    return TimerShiftFigures(
        idle_seconds=args.idle_seconds,
        timer_asked_seconds=TIMER_SECONDS,
        activities=args.activities,
        servers=figures,
        idle_cpu_ratio=round(tuned.idle_cpu_share / max(default.idle_cpu_share, 1e-4), 2),
        job_cpu_ratio=round(tuned.job_cpu_seconds / max(default.job_cpu_seconds, 1e-2), 2),
    )


def report(figures: TimerShiftFigures) -> str:
    lines = [
        f"timer shift: two dev servers side by side; {figures.idle_seconds:.0f} s idle, "
        f"{figures.timer_asked_seconds} s timers and retries, {figures.activities} trivial "
        "activities on both at once"
    ]
    for server in figures.servers:
        lines.append(
            f"  shift {server.shift:>5}: idle {server.idle_cpu_share * 100:.2f}% of a core; "
            f"a {figures.timer_asked_seconds} s timer took {server.timer_seconds:.3f} s, "
            f"a {figures.timer_asked_seconds} s retry {server.retry_seconds:.3f} s; job "
            f"{server.job_seconds:.1f} s, {server.job_cpu_seconds:.1f} CPU s"
        )
    lines.append(
        f"  100 ms over 1 s: idle CPU {figures.idle_cpu_ratio:.2f}x, "
        f"CPU for the same job {figures.job_cpu_ratio:.2f}x"
    )
    return "\n".join(lines)


def parser() -> argparse.ArgumentParser:
    root = bench_parser("timer_shift", __doc__)
    root.add_argument("--idle-seconds", type=float, default=30.0, help="idle time measured")
    root.add_argument("--timers", type=at_least_one, default=20, help="timers and retries timed")
    root.add_argument(
        "--activities", type=at_least_one, default=2_000, help="trivial activities of the job"
    )
    return root


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    with (
        tempfile.TemporaryDirectory(prefix="bench-timer-shift-") as folder,
        dev_server(Path(folder), DEFAULT_SHIFT) as (default_pid, default_address),
        dev_server(Path(folder), TIMER_MAX_TIME_SHIFT) as (tuned_pid, tuned_address),
    ):
        servers = [
            (DEFAULT_SHIFT, default_pid, default_address),
            (TIMER_MAX_TIME_SHIFT, tuned_pid, tuned_address),
        ]
        figures = asyncio.run(measure(servers, args))
    return publish(figures, report(figures), args.json)


if __name__ == "__main__":
    sys.exit(main())
