"""A soak: one long job through worker kills, Redis and Temporal restarts and provider faults.

  python -m bench.soak                           # 1,000 documents, the default fault schedule
  python -m bench.soak --documents 20 --workers 2 --redis-restarts 1 --temporal-restarts 0

One embedded stack (file-backed Temporal dev server, Redis, llmock) and a few worker processes
run one task over generated documents. While it runs:
  - a random worker is SIGKILLed every few seconds and a new one started;
  - Redis is stopped and started again empty, at points spread over the job's progress;
  - the Temporal dev server is stopped and started again on its SQLite file (its history
    survives; the workers must find it again by themselves);
  - llmock injects random provider faults (429, 500, 503; streams disconnected, truncated,
    stalled, malformed), and answers every report with one long scripted text, so cut report
    streams are long enough to be continued from their saved text.
Faults stop once 90 % of the steps are done, so the end is reached. Then it checks, against
sources outside the product: every document reported exactly once, no report text doubled,
the ledger equal to the LLM server's bill, the server's verdict clean, no nondeterminism in
any worker log and every run of the task replaying, and the Redis mirror equal to the end.
It exits non-zero when any check fails.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import shutil
import signal
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

from pydantic import BaseModel, Field
from temporalio.client import WorkflowHandle

from bench.harness import (
    Workers,
    bench_parser,
    embedded_stack,
    publish,
    stack_settings,
    start_job,
)
from bench.server_bill import add_behaviors, server_requests
from bench.soak_checks import (
    Check,
    Tokens,
    continued_partials,
    first_few,
    histories_replay,
    in_flight_at_a_kill,
    ledger_by_model,
    ledger_matches_bill,
    log_complete,
    mirror_matches,
    no_text_twice,
    nondeterminism_in_logs,
    reports_once,
    server_bill_by_model,
    server_verdict,
    streams_cut_by_faults,
    task_histories,
    total_of,
    verdict_clean,
)
from bench.soak_faults import Injected, SoakPlan, count_faults, run_with_faults
from bench.soak_services import PortTaken, ProviderFaults, ensure_ours, faulty_llm_server
from longtask.connections import connect_redis, connect_temporal
from longtask.models import TaskResult
from longtask.settings import Settings
from longtask.states import TaskState
from longtask.task_resume import outcome
from longtask.tooling.corpus import at_least_one, write_corpus

# One id per soak: a stack whose store outlives a run refuses an id already used.
TASK_ID = f"soak-{uuid.uuid4().hex[:8]}"
# Fresh ports for the stack when one was taken before its service started.
STACK_ATTEMPTS = 3


class SoakFigures(BaseModel):
    documents: int
    workers: int
    seconds: float
    state: str
    runs: int
    injected: Injected
    documents_lost: int
    # Read from an ended task only.
    continued_streams: int = 0
    ledger: Tokens = Field(default_factory=Tokens)
    bill: Tokens = Field(default_factory=Tokens)
    # Billed calls a SIGKILLed worker held when it died: the most the ledger may lack.
    in_flight_at_kills: Tokens = Field(default_factory=Tokens)
    verdict_findings_explained: int = 0
    checks: dict[str, list[str]]
    passed: bool


def _report_texts(result: TaskResult, folder: Path) -> dict[str, str]:
    texts = {}
    for report in result.documents:
        path = folder / report.report_file
        if report.report_file and path.is_file():
            texts[report.name] = path.read_text(encoding="utf-8")
    return texts


async def _final_result(handle: WorkflowHandle[Any, TaskResult]) -> TaskResult:
    result = await outcome(handle)
    if result is None:
        raise RuntimeError("the task was cancelled")
    return result


async def check_result(
    settings: Settings,
    plan: SoakPlan,
    result: TaskResult,
    corpus: list[Path],
    records: list[dict[str, Any]],
    kill_times: list[float],
) -> tuple[list[Check], dict[str, Any]]:
    """The checks of an ended task that read the stack, and the figures they read."""
    scripted = plan.scripted_report()
    partials = continued_partials(records, settings.model_final)
    booked = ledger_by_model(result)
    billed = server_bill_by_model(records, settings.model_final, scripted)
    lost = server_bill_by_model(
        [r for r in records if in_flight_at_a_kill(r, kill_times)], settings.model_final, scripted
    )
    verdict = await server_verdict(settings)
    (settings.state_dir / "server-verdict.json").write_text(json.dumps(verdict))
    verdict_check, explained = verdict_clean(verdict, records, settings.model_final, scripted)
    redis = connect_redis(settings)
    try:
        mirror = await mirror_matches(redis, result)
    finally:
        await redis.aclose()
    checks = [
        reports_once(result, corpus, settings.report_folder()),
        no_text_twice(_report_texts(result, settings.report_folder()), partials, scripted),
        ledger_matches_bill(booked, billed, lost, streams_cut_by_faults(records)),
        log_complete(records),
        verdict_check,
        mirror,
    ]
    figures = {
        "state": result.state.value,
        "documents_lost": _lost(result, corpus),
        "continued_streams": len(partials),
        "ledger": total_of(booked.values()),
        "bill": total_of(billed.values()),
        "in_flight_at_kills": total_of(lost.values()),
        "verdict_findings_explained": explained,
    }
    return checks, figures


def _lost(result: TaskResult, corpus: list[Path]) -> int:
    completed = {r.name for r in result.documents if r.state is TaskState.COMPLETED}
    return sum(1 for path in corpus if path.name not in completed)


def _unreported(settings: Settings, plan: SoakPlan) -> int:
    """Documents with no report file yet, for a task that did not end."""
    written = list((settings.report_folder() / TASK_ID).glob("*.md"))
    return plan.documents - len(written)


async def soak(settings: Settings, plan: SoakPlan, corpus_folder: Path) -> SoakFigures:
    corpus = write_corpus(corpus_folder, plan.documents)
    # Every report answer is one long text: a cut report stream is long enough to continue.
    add_behaviors(
        settings,
        {
            "type": "reply",
            "text": plan.scripted_report(),
            "match": {"model": settings.model_final},
            "times": None,
        },
    )
    injected = Injected()
    with Workers(settings) as workers:
        for _ in range(plan.workers):
            workers.start()
        client = await connect_temporal(settings)
        started = time.monotonic()
        _, handle = await start_job(client, settings, corpus_folder, TASK_ID)
        stuck = await run_with_faults(settings, plan, workers, handle, injected)
        seconds = time.monotonic() - started
        records = await asyncio.to_thread(server_requests, settings)
        # Kept beside the logs: the evidence behind a failed check.
        (settings.state_dir / "server-requests.json").write_text(json.dumps(records))
        count_faults(records, injected)
        histories = await task_histories(client, TASK_ID)
        checks = [await histories_replay(client, histories)]
        figures: dict[str, Any] = {"runs": len(histories)}
        if stuck is None:
            result = await _final_result(handle)
            (settings.state_dir / "task-result.json").write_text(result.model_dump_json(indent=2))
            ended, read = await check_result(
                settings, plan, result, corpus, records, injected.kill_times
            )
            checks += ended
            figures.update(read)
        else:
            checks.append(Check(name="the task ended", problems=[stuck]))
            figures.update(state="running", documents_lost=_unreported(settings, plan))
    logs = sorted((settings.state_dir / "logs").glob("worker-*.log"))
    checks += [
        nondeterminism_in_logs(logs),
        Check(name="every query of the task answered", problems=first_few(injected.query_failures)),
        Check(name="no worker ended by itself", problems=injected.workers_exited_unbidden),
    ]
    return SoakFigures(
        documents=plan.documents,
        workers=plan.workers,
        seconds=round(seconds, 1),
        injected=injected,
        checks={check.name: check.problems for check in checks},
        passed=all(check.passed for check in checks),
        **figures,
    )


def report(figures: SoakFigures) -> str:
    injected = figures.injected
    faults = ", ".join(f"{n} {kind}" for kind, n in injected.provider_faults.items()) or "none"
    lines = [
        f"soak: {figures.documents} documents, {figures.workers} workers, "
        f"{figures.seconds} s, task {figures.state} in {figures.runs} run(s)",
        f"  injected and survived: {injected.worker_kills} worker SIGKILLs "
        f"({injected.streams_cut_by_kills} calls cut by them), "
        f"{injected.redis_restarts} Redis restarts (empty), "
        f"{injected.temporal_restarts} Temporal restarts",
        f"  provider faults: {faults}",
        f"  continued streams: {figures.continued_streams}; documents lost: "
        f"{figures.documents_lost}",
        f"  ledger {figures.ledger.model_dump()} / server bill {figures.bill.model_dump()}",
        f"  of the bill, in flight in killed workers: {figures.in_flight_at_kills.model_dump()}",
    ]
    for name, problems in figures.checks.items():
        lines.append(f"  {'ok  ' if not problems else 'FAIL'} {name}")
        lines += [f"         {problem}" for problem in problems]
    lines.append(f"soak: {'passed' if figures.passed else 'FAILED'}")
    return "\n".join(lines)


def parser() -> argparse.ArgumentParser:
    root = bench_parser("soak", __doc__)
    root.add_argument("--documents", type=at_least_one, default=1000, help="one-page documents")
    root.add_argument("--workers", type=at_least_one, default=3, help="worker processes")
    root.add_argument(
        "--kill-every",
        type=float,
        nargs=2,
        default=(4.0, 8.0),
        metavar=("MIN", "MAX"),
        help="seconds between two worker kills, drawn between MIN and MAX",
    )
    root.add_argument(
        "--max-kills", type=int, default=1_000_000, help="stop killing workers after this many"
    )
    root.add_argument("--redis-restarts", type=int, default=3, help="restarts of Redis, empty")
    root.add_argument("--temporal-restarts", type=int, default=2, help="Temporal restarts")
    root.add_argument(
        "--fault-scale",
        type=float,
        default=1.0,
        help="multiplies every provider fault probability (0: no provider faults)",
    )
    root.add_argument(
        "--chunk-delay-ms",
        type=int,
        default=5,
        help="pause between streamed chunks: how long the job runs",
    )
    root.add_argument("--latency-ms", type=int, default=20, help="LLM server latency per call")
    root.add_argument("--report-words", type=at_least_one, default=150, help="words per report")
    root.add_argument(
        "--limit-seconds", type=float, default=600, help="give up on the job after this long"
    )
    root.add_argument("--seed", type=int, default=1, help="seed of the kill schedule")
    root.add_argument(
        "--folder", type=Path, help="keep the stack's logs and data here (default: removed)"
    )
    return root


def _provider_faults(scale: float) -> ProviderFaults:
    faults = ProviderFaults()
    return ProviderFaults(
        http={status: rate * scale for status, rate in faults.http.items() if rate * scale > 0},
        stream={kind: rate * scale for kind, rate in faults.stream.items() if rate * scale > 0},
    )


def run(args: argparse.Namespace, folder: Path) -> SoakFigures | None:
    plan = SoakPlan(
        documents=args.documents,
        workers=args.workers,
        kill_every=tuple(args.kill_every),
        max_kills=args.max_kills,
        redis_restarts=args.redis_restarts,
        temporal_restarts=args.temporal_restarts,
        report_words=args.report_words,
        limit_seconds=args.limit_seconds,
        seed=args.seed,
    )
    for _ in range(STACK_ATTEMPTS):
        settings = stack_settings(
            folder / "stack",
            latency_ms=args.latency_ms,
            chunk_delay_ms=args.chunk_delay_ms,
            document_concurrency=min(32, args.documents),
            batch_documents=8,
        )
        try:
            with (
                faulty_llm_server(settings, _provider_faults(args.fault_scale)),
                embedded_stack(settings),
            ):
                ensure_ours(settings)
                return asyncio.run(soak(settings, plan, folder / "corpus"))
        except PortTaken as taken:
            print(f"soak: {taken}; again on other ports", file=sys.stderr)
            shutil.rmtree(settings.state_dir, ignore_errors=True)
        except RuntimeError as error:
            print(f"soak: {error}", file=sys.stderr)
            return None
    print(f"soak: no free ports in {STACK_ATTEMPTS} attempts", file=sys.stderr)
    return None


def _stop_on_sigterm(signum: int, frame: object) -> None:
    # `timeout` and test runners send SIGTERM: leave through the `with` blocks, so the
    # stack and the workers are stopped, instead of dying with them still running.
    raise SystemExit(128 + signum)


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    signal.signal(signal.SIGTERM, _stop_on_sigterm)
    if args.folder is not None:
        args.folder.mkdir(parents=True, exist_ok=True)
        figures = run(args, args.folder)
    else:
        with tempfile.TemporaryDirectory(prefix="bench-soak-") as folder:
            figures = run(args, Path(folder))
    if figures is None:
        return 1
    publish(figures, report(figures), args.json)
    return 0 if figures.passed else 1


if __name__ == "__main__":
    sys.exit(main())
