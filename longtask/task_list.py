"""Listing tasks from Temporal's visibility store, by the search attributes each task publishes."""

from __future__ import annotations

import math
from datetime import datetime

from pydantic import BaseModel
from temporalio.client import Client

from longtask.client_errors import UsageError
from longtask.engine.names import DOCUMENT_TASK
from longtask.search_attributes import TASK_COST, TASK_PROGRESS, TASK_STATE
from longtask.states import TaskState


class TaskFilter(BaseModel):
    """Which tasks to list; every limit is inclusive and None means no limit."""

    state: TaskState | None = None
    min_progress: float | None = None
    max_progress: float | None = None
    min_cost_usd: float | None = None
    max_cost_usd: float | None = None
    limit: int = 50

    def query(self) -> str:
        """The visibility query (Temporal's SQL-like list filter) for these limits."""
        # Document tasks, and every long task that publishes its state (longtask.agent): not
        # the other workflows a shared namespace may hold.
        parts = [f"(WorkflowType = '{DOCUMENT_TASK}' OR {TASK_STATE.name} IS NOT NULL)"]
        if self.state is not None:
            parts.append(f"{TASK_STATE.name} = '{self.state.value}'")
        for name, operator, value in (
            (TASK_PROGRESS.name, ">=", self.min_progress),
            (TASK_PROGRESS.name, "<=", self.max_progress),
            (TASK_COST.name, ">=", self.min_cost_usd),
            (TASK_COST.name, "<=", self.max_cost_usd),
        ):
            if value is not None:
                if not math.isfinite(value):
                    raise UsageError(f"{name} limit {value}: give a finite number")
                parts.append(f"{name} {operator} {value!r}")
        return " AND ".join(parts)


class TaskSummary(BaseModel):
    """One task as the list shows it; state, progress and cost are None until published."""

    task_id: str
    run_id: str
    # The task's workflow: DocumentTask, ResearchTask, or a long task's own name.
    kind: str
    state: str | None
    progress: float | None
    cost_usd: float | None
    temporal_status: str
    started: datetime
    closed: datetime | None


def parse_state(name: str) -> TaskState:
    try:
        return TaskState(name)
    except ValueError:
        known = ", ".join(state.value for state in TaskState)
        raise UsageError(f"unknown state {name!r}; use one of {known}") from None


async def list_tasks(client: Client, task_filter: TaskFilter) -> list[TaskSummary]:
    """Tasks matching ``task_filter``, newest first, at most its limit."""
    found: list[TaskSummary] = []
    async for execution in client.list_workflows(task_filter.query(), limit=task_filter.limit):
        attributes = execution.typed_search_attributes
        found.append(
            TaskSummary(
                task_id=execution.id,
                run_id=execution.run_id,
                kind=execution.workflow_type,
                state=attributes.get(TASK_STATE),
                progress=attributes.get(TASK_PROGRESS),
                cost_usd=attributes.get(TASK_COST),
                temporal_status=execution.status.name.lower() if execution.status else "unknown",
                started=execution.start_time,
                closed=execution.close_time,
            )
        )
    return found
