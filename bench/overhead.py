"""Overhead of durability: the same job as a bare asyncio loop and as a durable task.

  python -m bench.overhead                       # 200 documents at 200 ms and at 0 ms latency
  python -m bench.overhead --documents 1000      # the full size
  python -m bench.overhead --latency-ms 500 --latency-ms 0
  python -m bench.overhead --latency-ms 200 --realistic   # and under real models' pace

For each LLM server latency, one embedded stack (with latency, streamed chunks 20 ms apart as
`make up` streams them; at zero latency, no pause at all): the bare loop (bench/bare_loop.py: the
product's own provider calls and prompts, no Temporal, no Redis, no checkpoints) runs the job,
then the product runs the same documents on the same LLM server with the same number of calls
in flight (four batches of 16 documents, 16 calls each: 64; the loop gets 64 too), one worker.
The ratio is the product's time over the loop's; at zero latency the difference per step is
what durability costs each call on this machine.
"""

from __future__ import annotations

import argparse
import functools
import sys
import tempfile
import time
from pathlib import Path

from pydantic import BaseModel

from bench.bare_loop import default_route, run_bare_loop
from bench.faulty_llm_server import FaultPlan, faulty_llm_server
from bench.harness import (
    Workers,
    bench_parser,
    finish,
    measure_on_stack,
    publish,
    stack_settings,
    start_job,
)
from longtask.connections import connect_temporal
from longtask.settings import Settings
from longtask.states import TaskState
from longtask.tooling.corpus import at_least_one, write_corpus

DEFAULT_LATENCIES_MS = (200, 0)
STREAM_CHUNK_DELAY_MS = 20
# The product's calls in flight with its defaults: 64 documents in 4 batches, 16 calls each.
DOCUMENTS_IN_FLIGHT = 64
CALLS_IN_FLIGHT = 64
BATCH_DOCUMENTS = 16
REALISTIC_LATENCY = -1
# The loop's hang limits do not learn from the answers; nor do the task's here (the policy is
# the task's, set when it starts), so both wait out the same long-tailed first chunks.
FIXED_LIMITS = {"learn_hang_limits": False}


class OverheadAt(BaseModel):
    # -1: the realistic profile (REALISTIC_LATENCY), not a fixed latency.
    latency_ms: int
    calls_in_flight: int
    steps: int
    bare_seconds: float
    durable_seconds: float
    # Durable time over bare time for the same job (1.0 = no overhead).
    ratio: float
    # Extra wall time per step: (durable - bare) / steps.
    overhead_ms_per_step: float


class OverheadFigures(BaseModel):
    documents: int
    runs: list[OverheadAt]


def realistic_plan(settings: Settings) -> FaultPlan:
    """The realistic pace of bench.timeouts (bench/faulty_llm_server.py, PACE), no stall."""
    return FaultPlan(
        stall_share=0,
        slow_share=0,
        pace_seconds=1.0,
        max_stalls_per_call=0,
        latency_ms=0,
        chunk_delay_ms=STREAM_CHUNK_DELAY_MS,
        seed=1,
        profile="realistic",
        reasoning_model=settings.model_reasoning,
    )


def overhead_settings(folder: Path, latency_ms: int, batch_documents: int) -> Settings:
    """A server with latency streams as `make up`'s does (20 ms between chunks); one without
    answers at once, so that only the product's own cost is left."""
    return stack_settings(
        folder,
        latency_ms=latency_ms,
        chunk_delay_ms=STREAM_CHUNK_DELAY_MS if latency_ms else 0,
        document_concurrency=DOCUMENTS_IN_FLIGHT,
        batch_documents=batch_documents,
        # Whatever the batch size, 64 calls in flight in all, as in the bare loop.
        call_concurrency=max(1, CALLS_IN_FLIGHT // (DOCUMENTS_IN_FLIGHT // batch_documents)),
    )


async def measure_at(settings: Settings, paths: list[Path], latency_ms: int) -> OverheadAt:
    batches = settings.document_concurrency // settings.batch_documents
    in_flight = batches * settings.call_concurrency
    bare = await run_bare_loop(
        paths,
        settings.llm_base_url,
        default_route(settings),
        in_flight,
        documents_in_flight=DOCUMENTS_IN_FLIGHT,
    )
    client = await connect_temporal(settings)
    with Workers(settings) as workers:
        workers.start()
        await workers.ready()
        started = time.monotonic()
        _, handle = await start_job(client, settings, paths[0].parent, f"overhead-{latency_ms}")
        result = await finish(handle)
        durable = time.monotonic() - started
    if result.state is not TaskState.COMPLETED:
        raise RuntimeError(f"the durable job ended {result.state.value}: {result.reason}")
    steps = sum(stats.successes for stats in result.calls.values())
    if steps != bare.calls:
        raise RuntimeError(f"the durable job answered {steps} calls, the loop {bare.calls}")
    return OverheadAt(
        latency_ms=latency_ms,
        calls_in_flight=in_flight,
        steps=steps,
        bare_seconds=bare.seconds,
        durable_seconds=round(durable, 3),
        ratio=round(durable / bare.seconds, 2),
        overhead_ms_per_step=round((durable - bare.seconds) / steps * 1000, 2),
    )


def report(figures: OverheadFigures) -> str:
    lines = [f"overhead: {figures.documents} documents, same job, same LLM server, same calls"]
    for run in figures.runs:
        pace = (
            "realistic pace"
            if run.latency_ms == REALISTIC_LATENCY
            else f"latency {run.latency_ms} ms"
        )
        lines.append(
            f"  {pace}, {run.calls_in_flight} calls in flight: bare loop "
            f"{run.bare_seconds:.1f} s, durable {run.durable_seconds:.1f} s: ratio "
            f"{run.ratio:.2f}, {run.overhead_ms_per_step:+.1f} ms per step ({run.steps} steps)"
        )
    return "\n".join(lines)


def parser() -> argparse.ArgumentParser:
    root = bench_parser("overhead", __doc__)
    root.add_argument("--documents", type=at_least_one, default=200, help="one-page documents")
    root.add_argument(
        "--batch-documents",
        type=at_least_one,
        default=BATCH_DOCUMENTS,
        help="documents per batch activity (default 16; the calls in flight stay 64)",
    )
    root.add_argument(
        "--latency-ms",
        type=int,
        action="append",
        help="LLM server latency; repeat for several (default: 200 and 0)",
    )
    root.add_argument(
        "--realistic",
        action="store_true",
        help="also run under the realistic pace of bench.timeouts (long-tailed first chunks, "
        "pauses mid-answer, no stalls)",
    )
    return root


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    latencies = tuple(args.latency_ms or DEFAULT_LATENCIES_MS)
    if any(latency < 0 for latency in latencies):
        print("overhead: a latency cannot be negative", file=sys.stderr)
        return 2
    runs = []
    with tempfile.TemporaryDirectory(prefix="bench-overhead-") as folder:
        paths = write_corpus(Path(folder) / "corpus", args.documents)
        for latency in latencies:
            settings = overhead_settings(
                Path(folder) / f"stack-{latency}", latency, args.batch_documents
            )
            run = measure_on_stack(
                "overhead", settings, functools.partial(measure_at, settings, paths, latency)
            )
            if run is None:
                return 1
            runs.append(run)
        if args.realistic:
            settings = overhead_settings(
                Path(folder) / "stack-realistic", 0, args.batch_documents
            ).model_copy(update=FIXED_LIMITS)
            with faulty_llm_server(settings, realistic_plan(settings)):
                run = measure_on_stack(
                    "overhead",
                    settings,
                    functools.partial(measure_at, settings, paths, REALISTIC_LATENCY),
                )
            if run is None:
                return 1
            runs.append(run)
    figures = OverheadFigures(documents=args.documents, runs=runs)
    return publish(figures, report(figures), args.json)


if __name__ == "__main__":
    sys.exit(main())
