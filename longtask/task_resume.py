"""A new run of an ended task from one of its checkpoints, and the result of a run."""

from __future__ import annotations

from typing import Any

from redis.asyncio import Redis
from temporalio.client import (
    Client,
    WorkflowExecutionStatus,
    WorkflowFailureError,
    WorkflowHandle,
)
from temporalio.exceptions import ApplicationError, CancelledError

from longtask.checkpoint_reader import load_checkpoint
from longtask.checkpoints import Checkpoint, DocumentVariables
from longtask.client_errors import CheckpointNotFoundError, TaskRefusedError, UsageError
from longtask.cost import TokenUsage
from longtask.models import ResumePoint, TaskInput, TaskResult
from longtask.settings import Settings
from longtask.states import TaskState
from longtask.task_ids import is_checkpoint_of
from longtask.task_start import checked_budget, documents_seen, ui_details, ui_summary


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


async def previous_input(handle: WorkflowHandle[Any, Any], client: Client) -> TaskInput:
    """The input the task's last run started with, read from the first event of its history."""
    async for event in handle.fetch_history_events(page_size=1):
        started = event.workflow_execution_started_event_attributes
        values = await client.data_converter.decode(started.input.payloads)
        return TaskInput.model_validate(values[0])
    raise TaskRefusedError(f"task {handle.id} has no history to resume from")


def checkpoint_usage(checkpoint: Checkpoint) -> TokenUsage:
    return checkpoint.metadata.usage


async def resumed_from(
    redis: Redis, task_id: str, checkpoint: Checkpoint | None
) -> Checkpoint | None:
    """The checkpoint to resume from when ``checkpoint`` is the newest: a run cut before it had
    read the checkpoint it resumed from knows nothing of its own, and names that one."""
    for _ in range(10):  # each hop is one resume cut that early: a few at most
        if checkpoint is None or checkpoint.state.step_results:
            return checkpoint
        variables = DocumentVariables.model_validate(checkpoint.state.variables)
        earlier = variables.resume_from
        if earlier is None or variables.finished:
            return checkpoint
        older = await load_checkpoint(redis, task_id, earlier)
        if older is None:
            return checkpoint
        checkpoint = older
    return checkpoint


def checkpoint_problem(task_id: str, checkpoint_id: str | None) -> None:
    """Refuse a checkpoint id that is not one of ``task_id``'s own."""
    if checkpoint_id is not None and not is_checkpoint_of(checkpoint_id, task_id):
        raise UsageError(
            f"checkpoint {checkpoint_id!r} is not one of task {task_id}'s (they are named "
            f"{task_id}_<milliseconds>); see `ltm checkpoints {task_id}` or leave out --checkpoint"
        )


async def resume_task_run(
    client: Client,
    settings: Settings,
    redis: Redis,
    task_id: str,
    checkpoint_id: str | None,
    budget_usd: float | None = None,
    budget_tokens: int | None = None,
) -> str:
    """Start a new run of the ended task ``task_id`` from a checkpoint; a sentence saying so."""
    # Imported here: the workflow module pulls in the whole workflow code.
    from workflows.document_task import DocumentTaskWorkflow

    checkpoint_problem(task_id, checkpoint_id)
    handle = client.get_workflow_handle(task_id)
    description = await handle.describe()
    if description.status == WorkflowExecutionStatus.RUNNING:
        raise TaskRefusedError(
            f"task {task_id} is running; a new run from a checkpoint needs it ended "
            f"(`ltm cancel {task_id}` first), and a paused one resumes without --checkpoint"
        )
    if description.status == WorkflowExecutionStatus.COMPLETED:
        ended = await outcome(client.get_workflow_handle(task_id, result_type=TaskResult))
        if ended is None or ended.state is not TaskState.BUDGET_EXCEEDED:
            raise TaskRefusedError(f"task {task_id} completed; there is nothing to resume")
    checkpoint = await load_checkpoint(redis, task_id, checkpoint_id)
    if checkpoint_id is None:
        checkpoint = await resumed_from(redis, task_id, checkpoint)
    if checkpoint is None:
        which = f"checkpoint {checkpoint_id} is not" if checkpoint_id else "no checkpoint is"
        raise CheckpointNotFoundError(
            f"task {task_id}: {which} in Redis; `ltm checkpoints {task_id}` lists those kept"
        )
    previous = await previous_input(handle, client)
    budget = checked_budget(budget_usd, budget_tokens, previous.budget)
    if budget.exceeded_by(checkpoint_usage(checkpoint), previous.prices):
        raise TaskRefusedError(
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
    documents = documents_seen(task.paths)
    new_run = await client.start_workflow(
        DocumentTaskWorkflow.run,
        task,
        id=task_id,
        task_queue=settings.task_queue,
        memo={"resumed_from_run": description.run_id, "resumed_from_checkpoint": checkpoint.id},
        static_summary=ui_summary(task, documents),
        static_details=ui_details(task, documents),
    )
    return (
        f"task {task_id}: new run {new_run.result_run_id} from checkpoint {checkpoint.id} "
        f"({checkpoint.progress:.2f} %), after run {description.run_id}"
    )
