"""Command line client of the long task manager.

python starter.py run PATH...        start a task, show live progress, print the reports
python starter.py start PATH...      start a task and print its id
python starter.py watch ID           live progress of a running task
python starter.py status ID [--json] the progress record plus the state
python starter.py cancel ID          cancel a task (its checkpoints stay)
python starter.py pause ID           start no new step until resumed
python starter.py resume ID [--checkpoint CID]
                                     continue a paused task, or start a new run of a failed,
                                     cancelled, timed-out or terminated one from a checkpoint
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import sys
import uuid
from pathlib import Path
from typing import Any

from redis.asyncio import Redis
from rich.console import Console
from temporalio.client import (
    Client,
    WorkflowExecutionStatus,
    WorkflowFailureError,
    WorkflowHandle,
)
from temporalio.exceptions import ApplicationError, CancelledError

from longtask.checkpoint_reader import load_checkpoint
from longtask.checkpoints import Checkpoint, ProgressSnapshot, progress_key
from longtask.connections import connect_redis, connect_temporal
from longtask.cost import TaskBudget, TokenUsage
from longtask.live_view import print_result, query_status, show_live
from longtask.models import ModelRoute, ResumePoint, TaskInput, TaskResult
from longtask.process_exit import exit_now
from longtask.progress import ProgressRecord, progress_text
from longtask.search_attributes import registered
from longtask.settings import Settings, SettingsError, load_settings
from longtask.states import TaskState
from longtask.task_ids import is_checkpoint_of, task_id_problem
from workflows.document_task import DocumentTaskWorkflow

MODEL_KINDS = ("embedding", "intermediate", "reasoning", "final")


class UsageError(Exception):
    """Bad command-line input; the message says what to do."""


def task_input(
    settings: Settings,
    paths: list[str],
    task_id: str | None,
    models: dict[str, str | None] | None = None,
    budget: TaskBudget | None = None,
) -> TaskInput:
    if all(not Path(path).exists() for path in paths):
        # Nothing here to start on: relative paths are resolved on this machine, so the task
        # could only fail at its first step.
        raise UsageError(
            "\n".join(f"{path}: no such file or folder; check the path" for path in paths)
        )
    problem = None if task_id is None else task_id_problem(task_id)
    if problem is not None:
        raise UsageError(problem)
    return TaskInput(
        task_id=task_id or f"task-{uuid.uuid4().hex[:12]}",
        paths=[str(Path(p).resolve()) for p in paths],
        models=ModelRoute(
            embedding=settings.model_embedding,
            intermediate=settings.model_intermediate,
            reasoning=settings.model_reasoning,
            final=settings.model_final,
        ).model_copy(update={k: v for k, v in (models or {}).items() if v}),
        policy=settings.timeout_policy(),
        heartbeat_timeout_seconds=settings.heartbeat_timeout_seconds,
        document_concurrency=settings.document_concurrency,
        batch_documents=settings.batch_documents,
        call_concurrency=settings.call_concurrency,
        deadline_seconds=settings.task_deadline_seconds,
        budget=budget or settings_budget(settings),
        prices=settings.prices,
        check_models=settings.check_models,
    )


def missing_paths(paths: list[str]) -> list[str]:
    """A warning for each path this machine cannot see, when others of the task exist."""
    return [
        f"{path}: no such file or folder here; check the path (the task starts anyway: if "
        "its worker cannot see it either, it reports it failed and goes on with the others)"
        for path in paths
        if not Path(path).exists()
    ]


def checkpoint_usage(checkpoint: Checkpoint) -> TokenUsage:
    return TokenUsage.model_validate(checkpoint.metadata.get("usage") or {})


def settings_budget(settings: Settings) -> TaskBudget:
    return TaskBudget(max_cost_usd=settings.budget_usd, max_tokens=settings.budget_tokens)


def budget_of(args: argparse.Namespace, fallback: TaskBudget) -> TaskBudget:
    """The budget the command line names, each limit not named keeping ``fallback``'s."""
    if args.budget_usd is None and args.budget_tokens is None:
        return fallback
    usd_ok = args.budget_usd is None or (math.isfinite(args.budget_usd) and args.budget_usd > 0)
    if not usd_ok or (args.budget_tokens is not None and args.budget_tokens <= 0):
        raise UsageError("a budget must be a finite number greater than 0")
    return TaskBudget(
        max_cost_usd=fallback.max_cost_usd if args.budget_usd is None else args.budget_usd,
        max_tokens=fallback.max_tokens if args.budget_tokens is None else args.budget_tokens,
    )


async def start_task(client: Client, settings: Settings, task: TaskInput) -> str:
    task = task.model_copy(update={"search_attributes": await registered(client)})
    await client.start_workflow(
        DocumentTaskWorkflow.run,
        task,
        id=task.task_id,
        task_queue=settings.task_queue,
    )
    return task.task_id


async def outcome(handle: WorkflowHandle[Any, Any]) -> TaskResult | None:
    """The task's result; a failed or timed-out task carries it in its error's details."""
    try:
        result: TaskResult = await handle.result()
        return result
    except WorkflowFailureError as failure:
        cause = failure.cause
        if isinstance(cause, ApplicationError) and cause.details:
            return TaskResult.model_validate(cause.details[0])
        if isinstance(cause, CancelledError):
            return None
        raise


async def status_json(settings: Settings, client: Client, task_id: str) -> dict[str, Any]:
    """The progress record plus ``state``: from the task itself, else from the Redis mirror."""
    status = await query_status(client.get_workflow_handle(task_id))
    if status is not None:
        calls = {kind.value: stats.model_dump() for kind, stats in status.calls.items()}
        return {
            **status.record.model_dump(mode="json"),
            "state": status.state.value,
            "cost_so_far": status.cost_so_far,
            "documents": status.documents,
            "documents_done": status.documents_done,
            "documents_failed": status.documents_failed,
            "calls": calls,
            "ledger": [entry.model_dump() for entry in status.ledger.rows()],
        }
    redis = connect_redis(settings)
    try:
        raw = await redis.get(progress_key(task_id))
    finally:
        await redis.aclose()
    if raw is None:
        raise UsageError(f"task {task_id}: no worker answered and Redis holds no progress")
    record = ProgressSnapshot.model_validate_json(raw).status
    return {**record.model_dump(mode="json"), "state": record.metadata.get("state", "unknown")}


def status_line(task_id: str, status: dict[str, Any]) -> str:
    """``status`` for people: state, progress, elapsed time and ETA on one line."""
    eta = status["eta_seconds"]
    return (
        f"{task_id}: {status['state']} {progress_text(ProgressRecord.model_validate(status))}, "
        f"elapsed {status['elapsed_seconds']} s, "
        f"ETA {'unknown' if eta is None else f'{eta} s'}"
    )


async def previous_input(handle: WorkflowHandle[Any, Any], client: Client) -> TaskInput:
    """The input the task's last run started with, read from its history."""
    history = await handle.fetch_history()
    started = history.events[0].workflow_execution_started_event_attributes
    values = await client.data_converter.decode(started.input.payloads)
    return TaskInput.model_validate(values[0])


async def resumed_from(
    redis: Redis, task_id: str, checkpoint: Checkpoint | None
) -> Checkpoint | None:
    """The checkpoint to resume from when ``checkpoint`` is the newest: a run cut before it had
    read the checkpoint it resumed from knows nothing of its own, and names that one."""
    for _ in range(10):  # each hop is one resume cut that early: a few at most
        if checkpoint is None or checkpoint.state.step_results:
            return checkpoint
        earlier = checkpoint.state.variables.get("resume_from")
        if not isinstance(earlier, str) or checkpoint.state.variables.get("finished"):
            return checkpoint
        older = await load_checkpoint(redis, task_id, earlier)
        if older is None:
            return checkpoint
        checkpoint = older
    return checkpoint


async def resume(
    client: Client,
    settings: Settings,
    task_id: str,
    checkpoint_id: str | None,
    args: argparse.Namespace | None = None,
) -> str:
    """Continue a paused task, or start a new run of an ended one from a checkpoint."""
    if checkpoint_id is not None and not is_checkpoint_of(checkpoint_id, task_id):
        raise UsageError(
            f"checkpoint {checkpoint_id!r} is not one of task {task_id}'s "
            f"(they are named {task_id}_<milliseconds>); see `status` or leave out --checkpoint"
        )
    handle = client.get_workflow_handle(task_id)
    description = await handle.describe()
    if description.status == WorkflowExecutionStatus.RUNNING:
        status = await query_status(handle)
        if status is None or status.state is not TaskState.PAUSED:
            raise UsageError(f"task {task_id} is running; only a paused or ended task resumes")
        await handle.execute_update("resume", result_type=str)
        return f"task {task_id} resumed"
    if description.status == WorkflowExecutionStatus.COMPLETED:
        ended = await outcome(client.get_workflow_handle(task_id, result_type=TaskResult))
        if ended is None or ended.state is not TaskState.BUDGET_EXCEEDED:
            raise UsageError(f"task {task_id} completed; there is nothing to resume")
    redis = connect_redis(settings)
    try:
        checkpoint = await load_checkpoint(redis, task_id, checkpoint_id)
        if checkpoint_id is None:
            checkpoint = await resumed_from(redis, task_id, checkpoint)
    finally:
        await redis.aclose()
    if checkpoint is None:
        which = checkpoint_id or "no checkpoint"
        raise UsageError(f"task {task_id}: {which} found in Redis; see `status` or --checkpoint")
    previous = await previous_input(handle, client)
    budget = previous.budget if args is None else budget_of(args, previous.budget)
    if budget.exceeded_by(checkpoint_usage(checkpoint), previous.prices):
        raise UsageError(
            f"task {task_id} has spent its budget; resume it with a larger --budget-usd "
            "or --budget-tokens"
        )
    task = previous.model_copy(
        update={
            "resume_from": ResumePoint(
                checkpoint_id=checkpoint.id, previous_run_id=description.run_id
            ),
            "budget": budget,
            "carried": None,
        }
    )
    new_run = await client.start_workflow(
        DocumentTaskWorkflow.run,
        task,
        id=task_id,
        task_queue=settings.task_queue,
        memo={"resumed_from_run": description.run_id, "resumed_from_checkpoint": checkpoint.id},
    )
    return (
        f"task {task_id}: new run {new_run.result_run_id} from checkpoint {checkpoint.id} "
        f"({checkpoint.progress:.2f} %), after run {description.run_id}"
    )


async def watch(client: Client, task_id: str, console: Console) -> int:
    handle = client.get_workflow_handle(task_id, result_type=TaskResult)
    await show_live(handle, console)
    result = await outcome(handle)
    if result is None:
        console.print(f"task {task_id} cancelled", markup=False)
        return 1
    print_result(result, console)
    return 0 if result.state is TaskState.COMPLETED else 1


async def dispatch(args: argparse.Namespace, settings: Settings) -> int:
    console = Console()
    # Bad input is refused before any connection is attempted.
    task = None
    if args.command in ("run", "start"):
        models = {kind: getattr(args, f"model_{kind}") for kind in MODEL_KINDS}
        budget = budget_of(args, settings_budget(settings))
        task = task_input(settings, args.paths, args.task_id, models, budget)
        # Warned, not refused: the worker may see files this machine does not.
        for warning in missing_paths(args.paths):
            print(f"starter: warning: {warning}", file=sys.stderr)
    client = await connect_temporal(settings)
    if task is not None:
        task_id = await start_task(client, settings, task)
        if args.command == "start":
            print(task_id)
            return 0
        ui = f"http://{settings.temporal_host_port[0]}:{settings.temporal_ui_port}"
        console.print(
            f"task {task_id} started; watch it in the Temporal UI: {ui}",
            soft_wrap=True,
            markup=False,
        )
        return await watch(client, task_id, console)
    if args.command == "watch":
        return await watch(client, args.task_id, console)
    if args.command == "status":
        status = await status_json(settings, client, args.task_id)
        if args.json:
            print(json.dumps(status, indent=2))
        else:
            print(status_line(args.task_id, status))
        return 0
    if args.command == "pause":
        state = await client.get_workflow_handle(args.task_id).execute_update(
            "pause", result_type=str
        )
        print(f"task {args.task_id} {state}")
        return 0
    if args.command == "resume":
        print(await resume(client, settings, args.task_id, args.checkpoint, args))
        return 0
    if args.command == "cancel":
        await client.get_workflow_handle(args.task_id).cancel()
        print(f"cancel requested for {args.task_id}")
        return 0
    raise UsageError(f"unknown command {args.command}")


def parser() -> argparse.ArgumentParser:
    root = argparse.ArgumentParser(description="Long task manager client.")
    commands = root.add_subparsers(dest="command", required=True)
    for name, text in (("run", "start a task and watch it"), ("start", "start a task")):
        command = commands.add_parser(name, help=text)
        command.add_argument("paths", nargs="+", help=".txt, .md or .pdf files, or folders")
        command.add_argument("--task-id", help="id to give the task (default: generated)")
        for kind in MODEL_KINDS:
            command.add_argument(
                f"--model-{kind}", help=f"model for the {kind} steps of this task (LTM_MODEL_*)"
            )
        add_budget_options(command)
    commands.add_parser("watch", help="live progress").add_argument("task_id")
    status = commands.add_parser("status", help="progress record and state")
    status.add_argument("task_id")
    status.add_argument("--json", action="store_true", help="machine-readable output")
    commands.add_parser("cancel", help="cancel a task").add_argument("task_id")
    commands.add_parser("pause", help="start no new step until resumed").add_argument("task_id")
    resumed = commands.add_parser(
        "resume", help="continue a paused task, or rerun an ended one from a checkpoint"
    )
    resumed.add_argument("task_id")
    resumed.add_argument("--checkpoint", help="checkpoint id to start from (default: the newest)")
    add_budget_options(resumed)
    return root


def add_budget_options(command: argparse.ArgumentParser) -> None:
    command.add_argument(
        "--budget-usd", type=float, help="stop the task once it has cost this much (LTM_BUDGET_USD)"
    )
    command.add_argument(
        "--budget-tokens", type=int, help="stop the task after this many tokens (LTM_BUDGET_TOKENS)"
    )


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    try:
        settings = load_settings()
        return asyncio.run(dispatch(args, settings))
    except (SettingsError, UsageError) as error:
        print(f"starter: {error}", file=sys.stderr)
        return 2
    except RuntimeError as error:
        print(f"starter: {error} (is the stack up? try `make up`)", file=sys.stderr)
        return 1


if __name__ == "__main__":
    exit_now(main())
