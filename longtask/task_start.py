"""Starting a task: its input from the settings, its page in the Temporal UI, its id checked."""

from __future__ import annotations

import math
import uuid
from pathlib import Path

from temporalio.client import Client, WorkflowExecutionStatus
from temporalio.exceptions import WorkflowAlreadyStartedError
from temporalio.service import RPCError, RPCStatusCode

from longtask.client_errors import TaskIdTakenError, UsageError
from longtask.cost import TaskBudget
from longtask.models import ModelRoute, TaskInput
from longtask.search_attributes import registered
from longtask.settings import Settings
from longtask.task_ids import task_id_problem

DOCUMENT_SUFFIXES = (".txt", ".md", ".pdf")
# The UI shows the summary on one line; the details hold the rest.
SUMMARY_CHARS = 180
DETAILS_PATHS = 10


def task_input(
    settings: Settings,
    paths: list[str],
    task_id: str | None,
    models: dict[str, str | None] | None = None,
    budget: TaskBudget | None = None,
) -> TaskInput:
    """The input of a new task: the settings' defaults, then what the caller names."""
    if all(not Path(path).exists() for path in paths):
        # Nothing here to start on: relative paths are resolved on this machine, so the task
        # could only fail at its first step.
        raise UsageError(
            "; ".join(f"{path}: no such file or folder; check the path" for path in paths)
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


def settings_budget(settings: Settings) -> TaskBudget:
    return TaskBudget(max_cost_usd=settings.budget_usd, max_tokens=settings.budget_tokens)


def checked_budget(usd: float | None, tokens: int | None, fallback: TaskBudget) -> TaskBudget:
    """The budget named, each limit not named keeping ``fallback``'s."""
    if usd is None and tokens is None:
        return fallback
    if (usd is not None and not (math.isfinite(usd) and usd > 0)) or (
        tokens is not None and tokens <= 0
    ):
        raise UsageError("a budget must be a finite number greater than 0")
    return TaskBudget(
        max_cost_usd=fallback.max_cost_usd if usd is None else usd,
        max_tokens=fallback.max_tokens if tokens is None else tokens,
    )


def missing_paths(paths: list[str]) -> list[str]:
    """A warning for each path this machine cannot see, when others of the task exist."""
    return [
        f"{path}: no such file or folder here; check the path (the task starts anyway: if "
        "its worker cannot see it either, it reports it failed and goes on with the others)"
        for path in paths
        if not Path(path).exists()
    ]


def documents_seen(paths: list[str]) -> int:
    """How many documents this machine sees under ``paths`` (the workers may see others)."""
    count = 0
    for name in paths:
        path = Path(name)
        if path.is_dir():
            count += sum(
                1 for p in path.rglob("*") if p.suffix.lower() in DOCUMENT_SUFFIXES and p.is_file()
            )
        elif path.is_file():
            count += 1
    return count


def ui_summary(task: TaskInput, documents: int) -> str:
    """One line for the task's page in the Temporal UI: what it works on."""
    first = Path(task.paths[0]).name or task.paths[0]
    more = f" and {len(task.paths) - 1} more path(s)" if len(task.paths) > 1 else ""
    text = f"{documents} document(s) from {first}{more} -> {task.models.final}"
    return text if len(text) <= SUMMARY_CHARS else text[: SUMMARY_CHARS - 1] + "…"


def ui_details(task: TaskInput, documents: int) -> str:
    """Markdown for the task's page: paths, documents, models and budget."""
    shown = task.paths[:DETAILS_PATHS]
    hidden = len(task.paths) - len(shown)
    paths = "\n".join(f"- `{p}`" for p in shown) + (f"\n- ... {hidden} more" if hidden else "")
    models = ", ".join(f"{kind} `{name}`" for kind, name in task.models.model_dump().items())
    usd, tokens = task.budget.max_cost_usd, task.budget.max_tokens
    budget = " / ".join(
        part
        for part in (
            None if usd is None else f"${usd:g}",
            None if tokens is None else f"{tokens} tokens",
        )
        if part
    )
    lines = [
        f"**Task** `{task.task_id}`",
        f"**Documents** {documents} seen by the starter",
        f"**Paths**\n{paths}",
        f"**Models** {models}",
        f"**Budget** {budget or 'none'}",
    ]
    if task.resume_from is not None:
        lines.append(f"**Resumed from** checkpoint `{task.resume_from.checkpoint_id}`")
    return "\n\n".join(lines)


async def refuse_taken_id(client: Client, task_id: str, new_run: bool) -> None:
    """Refuse an id a task already has: a second task under it would share its Redis keys and
    report folder. An ended task's id may start again only when the caller asks (``new_run``)."""
    try:
        description = await client.get_workflow_handle(task_id).describe()
    except RPCError as error:
        if error.status == RPCStatusCode.NOT_FOUND:
            return
        raise
    if description.status == WorkflowExecutionStatus.RUNNING:
        raise TaskIdTakenError(
            f"task id {task_id} is taken by a running task; choose another --task-id "
            f"or follow it with `ltm watch {task_id}`"
        )
    if not new_run:
        ended = description.status.name.lower() if description.status else "ended"
        raise TaskIdTakenError(
            f"task id {task_id} was used by a task that ended {ended}; choose another "
            f"--task-id, pass --new-run to start it again from zero, or `ltm resume {task_id}`"
        )


async def start_task(
    client: Client, settings: Settings, task: TaskInput, new_run: bool = False
) -> str:
    """Start ``task`` on the settings' task queue; its id must be free unless ``new_run``."""
    # Imported here: the workflow module pulls in the whole workflow code, which only a start
    # needs.
    from workflows.document_task import DocumentTaskWorkflow

    await refuse_taken_id(client, task.task_id, new_run)
    task = task.model_copy(update={"search_attributes": await registered(client)})
    documents = documents_seen(task.paths)
    try:
        await client.start_workflow(
            DocumentTaskWorkflow.run,
            task,
            id=task.task_id,
            task_queue=settings.task_queue,
            static_summary=ui_summary(task, documents),
            static_details=ui_details(task, documents),
        )
    except WorkflowAlreadyStartedError:  # started by someone else since the check
        raise TaskIdTakenError(
            f"task id {task.task_id} is taken by a running task; choose another --task-id"
        ) from None
    return task.task_id
