"""Rich terminal views of a task: live progress bars and the final reports."""

from __future__ import annotations

import asyncio
from datetime import timedelta
from typing import Any

from rich.console import Console
from rich.panel import Panel
from rich.progress import BarColumn, Progress, TaskID, TextColumn
from temporalio.client import WorkflowExecutionStatus, WorkflowHandle
from temporalio.service import RPCError

from longtask.models import TaskResult, TaskStatus

POLL_SECONDS = 0.5
# A query waits for a worker to answer; without one, give up soon and say so.
QUERY_TIMEOUT = timedelta(seconds=5)


def _eta(seconds: float | None) -> str:
    return "ETA ?" if seconds is None else f"ETA {seconds:.0f}s"


async def query_status(handle: WorkflowHandle[Any, Any]) -> TaskStatus | None:
    """The task's own answer, or None when no worker can answer right now."""
    try:
        status: TaskStatus = await handle.query(
            "status", result_type=TaskStatus, rpc_timeout=QUERY_TIMEOUT
        )
        return status
    except RPCError:
        return None


async def show_live(handle: WorkflowHandle[Any, Any], console: Console) -> None:
    """Bars for the task and for each document until the task closes."""
    columns = (
        TextColumn("{task.description}", justify="left"),
        BarColumn(),
        TextColumn("{task.percentage:>6.2f}%"),
        TextColumn("{task.fields[info]}"),
    )
    with Progress(*columns, console=console, transient=False) as bars:
        task_bar: TaskID | None = None
        document_bars: dict[str, TaskID] = {}
        while True:
            description = await handle.describe()
            status = await query_status(handle)
            if status is not None:
                record = status.record
                retries = sum(s.errors + s.timeouts for s in status.calls.values())
                info = (
                    f"{record.step}/{record.total} steps  {_eta(record.eta_seconds)}  "
                    f"${status.cost_so_far:.6f}  retries {retries}  {status.state.value}"
                )
                if task_bar is None:
                    task_bar = bars.add_task(f"task {record.task_id}", total=100, info="")
                bars.update(task_bar, completed=record.progress, info=info)
                for document in status.tree.children:
                    if document.name not in document_bars:
                        document_bars[document.name] = bars.add_task(
                            f"  {document.name}", total=100, info=""
                        )
                    bars.update(
                        document_bars[document.name],
                        completed=document.percent(),
                        info=f"{document.steps_done()}/{document.steps_total()} steps",
                    )
            if description.status != WorkflowExecutionStatus.RUNNING:
                return
            await asyncio.sleep(POLL_SECONDS)


def print_result(result: TaskResult, console: Console) -> None:
    for document in result.documents:
        if document.report:
            console.print(Panel(document.report, title=f"report: {document.name}"))
        else:
            console.print(Panel(document.error, title=f"{document.name}: {document.state.value}"))
    console.print(
        f"task {result.task_id} {result.state.value}: {len(result.documents)} document(s), "
        f"{result.usage.total_tokens} tokens, cost so far ${result.cost_so_far:.6f}",
        soft_wrap=True,
    )
