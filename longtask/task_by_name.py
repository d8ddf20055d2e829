"""Long tasks of one's own (LTM_TASK_MODULES) from a client: started by name with JSON
parameters, their status and outcome read, an ended one resumed from a checkpoint."""

from __future__ import annotations

import json
import os
import sys
from typing import Any

from pydantic import ValidationError
from redis.asyncio import Redis
from temporalio.client import Client, WorkflowFailureError, WorkflowHandle
from temporalio.exceptions import ApplicationError, CancelledError, WorkflowAlreadyStartedError

from longtask.agent import (
    NoCheckpointError,
    TaskOutcome,
    resume_task_by_name,
    start_task_by_name,
)
from longtask.client_errors import (
    CheckpointNotFoundError,
    TaskIdTakenError,
    TaskRefusedError,
    UsageError,
)
from longtask.cost import TaskBudget
from longtask.engine.names import RESEARCH_TASK
from longtask.research import resume_research
from longtask.settings import Settings
from longtask.states import TaskState
from longtask.task_ids import task_id_problem
from longtask.task_start import checked_budget, refuse_taken_id
from longtask.tooling.live_view import query_agent_status

MODULES_HINT = (
    "set LTM_TASK_MODULES to the modules that define your tasks (e.g. "
    "LTM_TASK_MODULES=examples.translate), here and on the workers"
)


def import_from_here() -> None:
    """Let LTM_TASK_MODULES name modules of the current folder, as `python -m` and
    `python worker.py` run from it do (the installed `ltm` script starts elsewhere)."""
    here = os.getcwd()
    if here not in sys.path:
        sys.path.append(here)


def parse_params(text: str) -> dict[str, Any]:
    """A task's parameters from ``--input``: a JSON object."""
    try:
        params = json.loads(text)
    except ValueError as error:
        raise UsageError(
            f'--input is not JSON ({error}); give an object such as \'{{"folder": "book"}}\''
        ) from None
    if not isinstance(params, dict):
        raise UsageError(
            f"--input must be a JSON object of the task's parameters, not {type(params).__name__}"
        )
    return params


def validation_problem(name: str, error: ValidationError) -> str:
    """One line naming each parameter the task's input model refused, and why."""
    problems = "; ".join(
        f"{'.'.join(str(part) for part in item['loc']) or 'input'}: {item['msg']}"
        for item in error.errors()
    )
    return f"--input for {name}: {problems}; fix the parameters and start it again"


async def start_named_task(
    client: Client,
    settings: Settings,
    name: str,
    params: dict[str, Any],
    task_id: str | None = None,
    new_run: bool = False,
    budget: TaskBudget | None = None,
) -> str:
    """Start the long task ``name`` of LTM_TASK_MODULES with ``params``; its id. An id already
    used is refused unless ``new_run``, as for the document agent."""
    params = dict(params)
    if task_id is not None:
        params["task_id"] = task_id
    chosen = params.get("task_id")
    if chosen is not None:
        problem = task_id_problem(str(chosen))
        if problem is not None:
            raise UsageError(problem)
        await refuse_taken_id(client, str(chosen), new_run)
    if budget is not None:
        params["budget"] = budget.model_dump()
    import_from_here()
    try:
        handle = await start_task_by_name(client, settings, name, params)
    except ValidationError as error:
        raise UsageError(validation_problem(name, error)) from None
    except RuntimeError as error:  # a module of LTM_TASK_MODULES that does not import
        raise UsageError(f"{error}; check LTM_TASK_MODULES") from None
    except ValueError as error:  # no task of that name
        raise UsageError(
            f"{str(error).removesuffix(' (set LTM_TASK_MODULES)')}; {MODULES_HINT}"
        ) from None
    except WorkflowAlreadyStartedError:  # started by someone else since the check
        raise TaskIdTakenError(
            f"task id {chosen} is taken by a running task; choose another --task-id"
        ) from None
    return handle.id


async def agent_outcome(handle: WorkflowHandle[Any, Any]) -> TaskOutcome[Any]:
    """How a long task ended (waiting for the end); a failed or cancelled one as an outcome
    without a result, its cost and ledger from its last status."""
    try:
        outcome: TaskOutcome[Any] = await handle.result()
        return outcome
    except WorkflowFailureError as failure:
        cause = failure.cause
        if isinstance(cause, CancelledError):
            ended = TaskOutcome[Any](task_id=handle.id, state=TaskState.CANCELLED)
        elif isinstance(cause, ApplicationError):
            ended = TaskOutcome[Any](
                task_id=handle.id, state=TaskState.FAILED, reason=cause.message
            )
        else:
            raise
    # A cancelled or failed task returns no outcome: its bookkeeping is in its status.
    status = await query_agent_status(handle)
    if status is not None:
        spent = {"usage": status.usage, "cost_so_far": status.cost_so_far}
        ended = ended.model_copy(update={**spent, "ledger": status.ledger})
    return ended


async def resume_named_task(
    client: Client,
    settings: Settings,
    redis: Redis,
    name: str,
    task_id: str,
    checkpoint_id: str | None,
    budget: tuple[float | None, int | None],
) -> str:
    """A new run of the ended long task ``task_id`` from its newest checkpoint (or the one
    named), each budget limit named replacing the old one; a sentence saying so."""
    handle = client.get_workflow_handle(task_id, result_type=TaskOutcome[Any])
    ended = await agent_outcome(handle)
    if ended.state is TaskState.COMPLETED:
        raise TaskRefusedError(f"task {task_id} completed; there is nothing to resume")
    overrides: dict[str, Any] = {"checkpoint_id": checkpoint_id}
    if budget != (None, None):
        overrides["budget"] = checked_budget(*budget, await started_budget(handle, client))
    import_from_here()
    try:
        if name == RESEARCH_TASK:  # built in, not one of LTM_TASK_MODULES
            new_run = await resume_research(client, settings, redis, task_id, **overrides)
        else:
            new_run = await resume_task_by_name(client, settings, redis, task_id, **overrides)
    except NoCheckpointError:
        which = f"checkpoint {checkpoint_id} is not" if checkpoint_id else "no checkpoint is"
        raise CheckpointNotFoundError(
            f"task {task_id}: {which} in Redis; `ltm checkpoints {task_id}` lists those kept"
        ) from None
    except RuntimeError as error:
        raise UsageError(f"{error}; check LTM_TASK_MODULES") from None
    except ValueError as error:
        raise UsageError(
            f"{str(error).removesuffix(' (set LTM_TASK_MODULES)')}; {MODULES_HINT}"
        ) from None
    return f"task {task_id} ({name}): new run {new_run.result_run_id} from its checkpoint"


async def started_budget(handle: WorkflowHandle[Any, Any], client: Client) -> TaskBudget:
    """The budget the task's last run started with."""
    async for event in handle.fetch_history_events(page_size=1):
        started = event.workflow_execution_started_event_attributes
        [request] = await client.data_converter.decode(started.input.payloads)
        if isinstance(request, dict):
            return TaskBudget.model_validate(request.get("budget") or {})
    return TaskBudget()
