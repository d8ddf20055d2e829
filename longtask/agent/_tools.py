"""Tools: a user's async functions that a long task (or its model) calls, each run as an
activity with its own timeout, attempts and non-retryable errors."""

from __future__ import annotations

import inspect
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any, Protocol, get_type_hints

from pydantic import BaseModel
from temporalio import workflow
from temporalio.common import RetryPolicy

# Every tool's activity is named after it (TOOL_ACTIVITY_PREFIX + its name): renaming a tool
# breaks the tasks that call it. A tool called with arguments its model refuses fails with
# INVALID_TOOL_ARGUMENTS: retrying the same arguments cannot help.
from longtask.engine.names import INVALID_TOOL_ARGUMENTS, TOOL_ACTIVITY_PREFIX


class ToolEnv(Protocol):
    """What the worker gives a tool that asks for it (a second parameter)."""

    task_id: str
    call_id: str
    # What the task gave every tool (TaskContext.tool_context).
    context: dict[str, Any]
    # A folder of this task's own on the worker (under LTM_STATE_DIR, shared like reports).
    workdir: Path

    async def embed(self, texts: list[str]) -> list[list[float]]:
        """Vectors for ``texts`` from the task's embedding model; tokens go to the ledger."""
        ...


# ``async def`` or plain ``def`` (run in a thread by the worker).
ToolFunction = Callable[..., Awaitable[Any] | Any]


@dataclass(frozen=True)
class Tool:
    """A registered tool: its name, its arguments' model, its function and its options."""

    name: str
    description: str
    args_model: type[BaseModel]
    function: ToolFunction
    wants_env: bool
    timeout_seconds: float
    max_attempts: int
    retry_seconds: float
    non_retryable: tuple[str, ...]

    @property
    def activity_name(self) -> str:
        return f"{TOOL_ACTIVITY_PREFIX}{self.name}"

    def definition(self) -> dict[str, Any]:
        """The tool as a model is offered it (OpenAI tool-calling format)."""
        schema = self.args_model.model_json_schema()
        schema.pop("title", None)
        return {
            "type": "function",
            "function": {"name": self.name, "description": self.description, "parameters": schema},
        }

    def retry_policy(self) -> RetryPolicy:
        return RetryPolicy(
            initial_interval=timedelta(seconds=self.retry_seconds),
            backoff_coefficient=2.0,
            maximum_attempts=self.max_attempts,
            non_retryable_error_types=[INVALID_TOOL_ARGUMENTS, *self.non_retryable],
        )


_TOOLS: dict[str, Tool] = {}


def registered_tools() -> list[Tool]:
    """Every tool defined so far in this process (the worker registers them all)."""
    return list(_TOOLS.values())


def _error_name(error: type[BaseException] | str) -> str:
    return error if isinstance(error, str) else error.__name__


def tool(
    name: str | None = None,
    *,
    timeout: float = 60.0,
    max_attempts: int = 3,
    retry_seconds: float = 1.0,
    non_retryable: Sequence[type[BaseException] | str] = (),
) -> Callable[[ToolFunction], Tool]:
    """Make ``[async] def f(args: ArgsModel[, env: ToolEnv])`` a tool.

    Args:
        name: the tool's name for models and its activity (``tool.NAME``); the function's by
            default. Stable: renaming it breaks running tasks.
        timeout: seconds one attempt may take.
        max_attempts: attempts in all, the first included.
        retry_seconds: wait before the second attempt, doubled for each later one.
        non_retryable: exceptions (or their class names) that fail the call at once.

    Returns:
        A decorator returning the registered ``Tool``.
    """

    def register(function: ToolFunction) -> Tool:
        parameters = list(inspect.signature(function).parameters)
        hints = get_type_hints(function)
        args_model = hints.get(parameters[0]) if parameters else None
        if not (isinstance(args_model, type) and issubclass(args_model, BaseModel)):
            raise TypeError(
                f"tool {function.__name__}: its first parameter must be a pydantic model"
            )
        made = Tool(
            name=name or function.__name__,
            description=inspect.getdoc(function) or "",
            args_model=args_model,
            function=function,
            wants_env=len(parameters) > 1,
            timeout_seconds=timeout,
            max_attempts=max_attempts,
            retry_seconds=retry_seconds,
            non_retryable=tuple(_error_name(e) for e in non_retryable),
        )
        # A workflow sandbox imports the task's module again: its copy of the function
        # cannot do I/O, and the worker's activities must keep the real one.
        if not workflow.unsafe.in_sandbox():
            _TOOLS[made.name] = made
        return made

    return register
