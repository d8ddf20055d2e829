"""Timeout accuracy: hung provider calls cut at their limit, slow ones left alone.

  python -m bench.timeouts                   # 40 one-page documents
  python -m bench.timeouts --documents 200   # full size
  python -m bench.timeouts --stall-share 0.2 --slow-share 0.2 --pace-seconds 1.5
  python -m bench.timeouts --profile realistic --documents 100 --stall-share 0.1

The realistic profile (bench/timeouts_realistic.py) gives every answer the pace of a real model
and runs the product with its default, learning limits. The paced profile, below, pins one 2 s
limit for every call (LTM_STALL_TIMEOUT_SECONDS=2, learning off: the default before per-task-type
limits) to show the watchdog telling a slow stream from a hung one at a tight limit.

One job on an embedded stack (`make up`'s LLM latency and chunk pacing: 200 ms, 20 ms), one
worker, the 2 s limit. Two kinds of streamed chat answer are mixed into it:

- hung: ``--stall-share`` of streams go silent for 30-60 s, before their first chunk (a third
  of them) or after 1-6 chunks. The client must cut each one about the stall limit after it
  last heard from the server (before the first chunk: the attempt's first-chunk limit, the stall
  limit doubled per attempt), then retry. One call stalls at most ``--max-stalls-per-call``
  times (2), so the product's 4 attempts always suffice and the job completes;
- slow but alive: ``--slow-share`` of streams send each of their first 12 chunks (the first
  one too) ``--pace-seconds`` apart, under the stall limit, so the answer takes 4-8 times the
  stall limit but never goes silent for it. The client must never cut one.

llmock's own knobs do not give both, so this script runs its own LLM server
(bench/faulty_llm_server.py), started on the stack's LLM port before the stack (which then
leaves that port alone). A stream is slow when its request fingerprint falls in the slow share,
so the request log alone tells which ones were. Every figure comes from that log, never from the
product; the product's own count of timeouts is printed beside them as a cross-check.

A stall is caught when the client hung up within its limit (+ 1 s) of silence: mid-stream, the
time llmock spent in the stall plus the chunk pause before it; before the first chunk, the time
since the request arrived. It is late when cut after that, missed when the client sat through
it. Accuracy = caught / stalls. A false timeout is a slow stream the client hung up on.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any

from pydantic import BaseModel

from bench.faulty_llm_server import CHAT_PATH, FaultPlan, faulty_llm_server, is_slow
from bench.harness import (
    Workers,
    bench_parser,
    embedded_stack,
    finish,
    publish,
    stack_settings,
    start_job,
    summary,
)
from bench.server_bill import forget_requests, server_requests
from bench.timeouts_realistic import RealisticFigures, realistic_figures, realistic_report
from longtask.connections import connect_temporal
from longtask.policies import TaskType, TimeoutPolicy
from longtask.settings import Settings
from longtask.states import TaskState
from longtask.tooling.corpus import at_least_one, write_corpus

# A cut this much past the limit still counts as caught: a busy worker's loop is late that much.
TOLERANCE_SECONDS = 1.0
# The paced profile's one limit for every call, as it was before limits per task type.
PINNED_LIMIT: dict[str, Any] = {"stall_timeout_seconds": 2.0, "learn_hang_limits": False}


class TimeoutFigures(BaseModel):
    documents: int
    completed_documents: int
    state: str
    seconds: float
    stall_limit_seconds: float
    pace_seconds: float
    streamed_requests: int
    stalls: int
    stalls_before_first_chunk: int
    # Cut within the limit (+ tolerance) of the last thing the client heard; cut later; never.
    stalls_caught: int
    stalls_late: int
    stalls_missed: int
    accuracy: float
    # Seconds of silence before the cut: mid-stream (against the stall limit), before the
    # first chunk (against the attempt's first-chunk limit), and silence / limit for all.
    mid_stream_cut_seconds: dict[str, float] | None
    first_chunk_cut_seconds: dict[str, float] | None
    cut_vs_limit: dict[str, float] | None
    slow_requests: int
    slow_seconds: dict[str, float] | None
    false_timeouts: int
    false_timeout_share: float
    # Streams cut that were neither stalled nor slow (should be none).
    other_cuts: int
    # What the product booked as timed-out attempts: caught + late stalls + false timeouts.
    product_timeouts: int


def stall_chunk(record: dict[str, Any]) -> int | None:
    """The chunk a stall held back (0: before the first one), or None for a stream not stalled."""
    fault = str(record.get("fault") or "")
    if not fault.startswith("stream:stall@"):
        return None
    return int(fault.rsplit("@", 1)[1])


def _summary(values: list[float]) -> dict[str, float] | None:
    return summary(values) if values else None


def log_figures(
    records: list[dict[str, Any]], plan: FaultPlan, policy: TimeoutPolicy
) -> dict[str, Any]:
    """The stall and slow-stream figures of a request log, oldest request first."""
    streamed = [r for r in records if r["path"].endswith(CHAT_PATH) and r["stream"]]
    # A stall too short to have streamed 400 characters is asked for again with the same body,
    # so earlier requests with the same fingerprint are its earlier attempts.
    attempts: Counter[str] = Counter()
    mid_stream: list[float] = []
    first_chunk: list[float] = []
    ratios: list[float] = []
    stalls = late = missed = slow = false_timeouts = other_cuts = 0
    slow_seconds: list[float] = []
    hang = policy.configured_hang_limits(TaskType.DEFAULT, "")
    for record in streamed:
        attempt = attempts[record["fingerprint"]]
        attempts[record["fingerprint"]] += 1
        chunk = stall_chunk(record)
        if chunk is not None:
            stalls += 1
            if record["completed"]:
                missed += 1
                continue
            if chunk == 0:
                # Silent since the request: the client's first-chunk watchdog started with it.
                silence = record["ended_at"] - record["started_at"]
                limit = policy.first_chunk_limit(
                    TaskType.DEFAULT, attempt, hang.first_chunk_seconds
                )
                first_chunk.append(silence)
            else:
                # Silent since the chunk before: its pause, then the stall the client cut.
                silence = (record["stall_waited"] or 0.0) + plan.chunk_delay_ms / 1000
                limit = hang.silence_seconds
                mid_stream.append(silence)
            ratios.append(silence / limit)
            if silence > limit + TOLERANCE_SECONDS:
                late += 1
        elif is_slow(record["fingerprint"], plan.slow_share):
            slow += 1
            slow_seconds.append(record["ended_at"] - record["started_at"])
            if not record["completed"]:
                false_timeouts += 1
        elif not record["completed"]:
            other_cuts += 1
    caught = stalls - missed - late
    return {
        "streamed_requests": len(streamed),
        "stalls": stalls,
        "stalls_before_first_chunk": len(first_chunk),
        "stalls_caught": caught,
        "stalls_late": late,
        "stalls_missed": missed,
        "accuracy": round(caught / stalls, 4) if stalls else 1.0,
        "mid_stream_cut_seconds": _summary(mid_stream),
        "first_chunk_cut_seconds": _summary(first_chunk),
        "cut_vs_limit": _summary(ratios),
        "slow_requests": slow,
        "slow_seconds": _summary(slow_seconds),
        "false_timeouts": false_timeouts,
        "false_timeout_share": round(false_timeouts / slow, 4) if slow else 0.0,
        "other_cuts": other_cuts,
    }


async def measure(
    settings: Settings, corpus: Path, documents: int, plan: FaultPlan
) -> TimeoutFigures | RealisticFigures:
    write_corpus(corpus, documents)
    with Workers(settings) as workers:
        workers.start()
        client = await connect_temporal(settings)
        forget_requests(settings)
        started = time.monotonic()
        _, handle = await start_job(client, settings, corpus, "timeouts")
        result = await finish(handle)
        seconds = time.monotonic() - started
    policy = settings.timeout_policy()
    if plan.profile == "realistic":
        return RealisticFigures(
            documents=documents,
            completed_documents=sum(d.state is TaskState.COMPLETED for d in result.documents),
            state=result.state.value,
            seconds=round(seconds, 1),
            product_timeouts=sum(stats.timeouts for stats in result.calls.values()),
            **await realistic_figures(settings, server_requests(settings), policy),
        )
    return TimeoutFigures(
        documents=documents,
        completed_documents=sum(d.state is TaskState.COMPLETED for d in result.documents),
        state=result.state.value,
        seconds=round(seconds, 1),
        stall_limit_seconds=policy.configured_hang_limits(TaskType.DEFAULT, "").silence_seconds,
        pace_seconds=plan.pace_seconds,
        product_timeouts=sum(stats.timeouts for stats in result.calls.values()),
        **log_figures(server_requests(settings), plan, policy),
    )


def report(figures: TimeoutFigures) -> str:
    limit = figures.stall_limit_seconds
    lines = [
        f"timeouts: {figures.documents} documents, {figures.completed_documents} of them "
        f"completed in {figures.seconds} s; stall limit {limit:g} s; "
        f"{figures.streamed_requests} streamed calls: {figures.stalls} stalled for 30-60 s, "
        f"{figures.slow_requests} slow (a chunk every {figures.pace_seconds:g} s)",
        f"  stalls caught: {figures.stalls_caught} of {figures.stalls} "
        f"({figures.stalls_before_first_chunk} before the first chunk), late "
        f"{figures.stalls_late}, missed {figures.stalls_missed}: accuracy "
        f"{figures.accuracy:.1%} (article: 99.7%); the product booked "
        f"{figures.product_timeouts} timeouts",
    ]
    mid, first, ratio = (
        figures.mid_stream_cut_seconds,
        figures.first_chunk_cut_seconds,
        figures.cut_vs_limit,
    )
    if ratio is not None:
        parts = []
        if mid is not None:
            parts.append(f"mid-stream median {mid['median']:.2f} s, p95 {mid['p95']:.2f} s")
        if first is not None:
            parts.append(f"before the first chunk median {first['median']:.2f} s")
        lines.append(
            f"  cut after silence: {'; '.join(parts)}; vs its limit: median "
            f"{ratio['median']:.2f}x, p95 {ratio['p95']:.2f}x"
        )
    slow = figures.slow_seconds
    took = (
        f", {slow['median']:.1f} s each (median, {slow['median'] / limit:.1f}x the stall limit)"
        if slow is not None
        else ""
    )
    lines.append(
        f"  slow answers: {figures.slow_requests}{took}; cut by mistake: "
        f"{figures.false_timeouts} (false-timeout share {figures.false_timeout_share:.1%}); "
        f"other cuts: {figures.other_cuts}"
    )
    return "\n".join(lines)


def share(raw: str) -> float:
    value = float(raw)
    if not 0 <= value <= 1:
        raise argparse.ArgumentTypeError(f"must be between 0 and 1, got {value}")
    return value


def parser() -> argparse.ArgumentParser:
    root = bench_parser("timeouts", __doc__)
    root.add_argument("--documents", type=at_least_one, default=40, help="one-page documents")
    root.add_argument("--stall-share", type=share, default=0.1, help="streams that hang")
    root.add_argument("--slow-share", type=share, default=0.1, help="streams paced slowly")
    root.add_argument(
        "--pace-seconds", type=float, default=1.2, help="pause before each slow chunk"
    )
    root.add_argument(
        "--max-stalls-per-call",
        type=at_least_one,
        default=2,
        help="stalled attempts of one call at most (the product makes 4)",
    )
    root.add_argument("--seed", type=int, default=1, help="seed of the stalls")
    root.add_argument(
        "--profile",
        choices=["paced", "realistic"],
        default="paced",
        help="paced: slow streams against a 2 s limit; realistic: real models' pace",
    )
    return root


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="bench-timeouts-") as folder:
        realistic = args.profile == "realistic"
        pinned: dict[str, Any] = {} if realistic else PINNED_LIMIT
        settings = stack_settings(
            Path(folder) / "stack", latency_ms=200, chunk_delay_ms=20, **pinned
        )
        hang = settings.timeout_policy().configured_hang_limits(TaskType.DEFAULT, "")
        if not realistic and args.pace_seconds >= hang.silence_seconds:
            print("timeouts: --pace-seconds must stay under the stall limit", file=sys.stderr)
            return 2
        plan = FaultPlan(
            stall_share=args.stall_share,
            slow_share=args.slow_share,
            pace_seconds=args.pace_seconds,
            max_stalls_per_call=args.max_stalls_per_call,
            latency_ms=settings.llm_server_latency_ms,
            chunk_delay_ms=settings.llm_server_chunk_delay_ms,
            seed=args.seed,
            profile=args.profile,
            reasoning_model=settings.model_reasoning,
        )
        # The stack finds its LLM port answering and leaves it to this server.
        with faulty_llm_server(settings, plan), embedded_stack(settings):
            figures = asyncio.run(measure(settings, Path(folder) / "corpus", args.documents, plan))
    human = report(figures) if isinstance(figures, TimeoutFigures) else realistic_report(figures)
    publish(figures, human, args.json)
    if figures.completed_documents < figures.documents:
        print(f"timeouts: the job ended {figures.state}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
