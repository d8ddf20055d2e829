"""Starting long tasks from a client: any loaded task by its name, or a known one."""

from __future__ import annotations

import inspect
import json
import uuid
from typing import Any, get_type_hints

from redis.asyncio import Redis
from temporalio.client import Client, WorkflowHandle

from longtask.agent._book import carry_from_checkpoint
from longtask.agent._loading import load_task_modules, module_names
from longtask.agent._models import LongTaskInput, TaskOutcome
from longtask.agent._settings import AgentSettings
from longtask.checkpoint_reader import load_checkpoint
from longtask.cost import TaskBudget
from longtask.search_attributes import registered
from longtask.settings import Settings

# The Temporal UI shows about this much of a summary in its lists.
SUMMARY_CHARS = 120


def new_task_id() -> str:
    return f"task-{uuid.uuid4().hex[:12]}"


def task_defaults(settings: Settings) -> dict[str, Any]:
    """The fields of a long task's input that come from the settings: model routes, the
    timeout policy, the budget, the prices and the deadline (names only, never a key)."""
    return {
        "models": {
            "embedding": settings.model_embedding,
            "default": settings.model_intermediate,
            "reasoning": settings.model_reasoning,
            "final": settings.model_final,
        },
        "policy": settings.timeout_policy(),
        "heartbeat_timeout_seconds": settings.heartbeat_timeout_seconds,
        "budget": TaskBudget(max_cost_usd=settings.budget_usd, max_tokens=settings.budget_tokens),
        "prices": settings.prices,
        "deadline_seconds": settings.task_deadline_seconds,
    }


async def start_long_task(
    client: Client, settings: Settings, name: str, request: LongTaskInput, result_type: Any
) -> WorkflowHandle[Any, Any]:
    """Start workflow ``name`` with ``request``; its workflow id is the task id.

    The task publishes its state, progress and cost as search attributes (``ltm list``, the
    Temporal UI's columns) when the namespace has them registered, unless the request says.
    """
    if "search_attributes" not in request.model_fields_set:
        request = request.model_copy(update={"search_attributes": await registered(client)})
    return await client.start_workflow(
        name,
        request,
        id=request.task_id,
        task_queue=settings.task_queue,
        result_type=TaskOutcome[result_type],
        static_summary=ui_summary(name, request),
        static_details=ui_details(name, request),
    )


def own_parameters(request: LongTaskInput) -> dict[str, Any]:
    """The fields a task's input adds to ``LongTaskInput``: what this task works on."""
    return request.model_dump(mode="json", exclude=set(LongTaskInput.model_fields))


def _short(value: Any, chars: int) -> str:
    text = value if isinstance(value, str) else json.dumps(value, default=str)
    return text if len(text) <= chars else text[: chars - 1] + "…"


def ui_summary(name: str, request: LongTaskInput) -> str:
    """One line for the task's page in the Temporal UI: which task, on what."""
    own = ", ".join(f"{key}={_short(value, 40)}" for key, value in own_parameters(request).items())
    return _short(f"{name}: {own}" if own else name, SUMMARY_CHARS)


def ui_details(name: str, request: LongTaskInput) -> str:
    """Markdown for the task's page: its parameters, models, budget, and what it carries."""
    own = "\n".join(
        f"- `{key}`: {_short(value, 200)}" for key, value in own_parameters(request).items()
    )
    models = ", ".join(f"{kind} `{model}`" for kind, model in request.models.items())
    usd, tokens = request.budget.max_cost_usd, request.budget.max_tokens
    budget = " / ".join(
        part for part in (None if usd is None else f"${usd:g}",
                          None if tokens is None else f"{tokens} tokens") if part
    )  # fmt: skip
    lines = [
        f"**Task** `{request.task_id}` ({name})",
        f"**Parameters**\n{own or '- none'}",
        f"**Models** {models}",
        f"**Budget** {budget or 'none'}",
    ]
    carried = request.carried
    if carried is not None:
        lines.append(
            f"**Resumed** with {len(carried.messages)} message(s), "
            f"{len(carried.variables)} variable(s), {carried.calls} call(s) carried"
        )
    return "\n\n".join(lines)


def _task_named(name: str) -> type:
    """The long task of LTM_TASK_MODULES whose workflow is called ``name``."""
    tasks = load_task_modules(module_names(AgentSettings().task_modules))
    by_name = {getattr(t, "__temporal_workflow_definition").name: t for t in tasks}
    if name not in by_name:
        known = ", ".join(sorted(by_name)) or "none (set LTM_TASK_MODULES)"
        raise ValueError(f"no long task named {name!r}; known: {known}")
    return by_name[name]


def task_types_of(task_class: type) -> tuple[type[LongTaskInput], Any]:
    """The input model and result type a long task's ``work`` declares."""
    work = task_class.work  # type: ignore[attr-defined]
    hints = get_type_hints(work)
    parameters = list(inspect.signature(work).parameters)
    return hints[parameters[-1]], hints.get("return", Any)


async def start_task_by_name(
    client: Client, settings: Settings, name: str, params: dict[str, Any]
) -> WorkflowHandle[Any, Any]:
    """Start a long task of LTM_TASK_MODULES by its workflow name, with its own parameters
    (the rest of its input comes from the settings)."""
    input_type, result_type = task_types_of(_task_named(name))
    request = input_type.model_validate(
        {**task_defaults(settings), "task_id": new_task_id(), **params}
    )
    return await start_long_task(client, settings, name, request, result_type)


class NoCheckpointError(LookupError):
    """The task has no checkpoint in Redis to resume from (expired, or never taken)."""


async def resume_long_task(
    client: Client,
    settings: Settings,
    redis: Redis,
    task_id: str,
    input_type: type[LongTaskInput],
    result_type: Any,
    checkpoint_id: str | None = None,
    **overrides: Any,
) -> WorkflowHandle[Any, Any]:
    """A new run of an ended task (cancelled, failed, out of budget) from its newest
    checkpoint or the one named: same task id and input, its messages, variables, cost and
    progress carried; ``overrides`` change the input (e.g. a larger ``budget``)."""
    checkpoint = await load_checkpoint(redis, task_id, checkpoint_id)
    if checkpoint is None:
        raise NoCheckpointError(f"no checkpoint of task {task_id} to resume from")
    history = await client.get_workflow_handle(task_id).fetch_history()
    started = history.events[0].workflow_execution_started_event_attributes
    [request] = await client.data_converter.decode(started.input.payloads, [input_type])
    carried = carry_from_checkpoint(checkpoint)
    resumed = request.model_copy(update={"carried": carried, **overrides})
    return await start_long_task(client, settings, started.workflow_type.name, resumed, result_type)


async def resume_task_by_name(
    client: Client, settings: Settings, redis: Redis, task_id: str, **overrides: Any
) -> WorkflowHandle[Any, Any]:
    """``resume_long_task`` for a task of LTM_TASK_MODULES, its types found by its name."""
    history = await client.get_workflow_handle(task_id).fetch_history()
    name = history.events[0].workflow_execution_started_event_attributes.workflow_type.name
    input_type, result_type = task_types_of(_task_named(name))
    return await resume_long_task(
        client, settings, redis, task_id, input_type, result_type, **overrides
    )
