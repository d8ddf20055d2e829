"""Rich terminal views of a task: live progress bars and the final reports.

Rich reads ``[...]`` in a string as markup. Names, model names, answers and error messages come
from outside (a file named ``[red]notes.md``, a report containing ``[/bold]``): they are
escaped, or passed as ``Text``, so they print as they are and never crash the view.
"""

from __future__ import annotations

import asyncio
from datetime import timedelta
from typing import Any

from rich.console import Console
from rich.markup import escape
from rich.panel import Panel
from rich.progress import BarColumn, Progress, TaskID, TextColumn
from rich.table import Table
from rich.text import Text
from temporalio.client import WorkflowExecutionStatus, WorkflowHandle
from temporalio.service import RPCError

from longtask.models import TaskResult, TaskStatus
from longtask.progress import ENDED_NODE, WAITING_NODE, progress_text
from longtask.states import TaskState

ROLLED_UP = frozenset({ENDED_NODE, WAITING_NODE})
# Up to this many documents the reports are printed in full; beyond, they are in files.
PRINTED_REPORTS = 10

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
                    f"{status.documents_done + status.documents_failed}/{status.documents} docs  "
                    f"{progress_text(record)}  {_eta(record.eta_seconds)}  "
                    f"${status.cost_so_far:.6f}  retries {retries}  {status.state.value}"
                )
                if task_bar is None:
                    task_bar = bars.add_task(f"task {escape(record.task_id)}", total=100, info="")
                bars.update(task_bar, completed=record.progress, info=info)
                in_flight = [d for d in status.tree.children if d.name not in ROLLED_UP]
                for name in set(document_bars) - {d.name for d in in_flight}:
                    bars.remove_task(document_bars.pop(name))  # ended: its bar goes
                for document in in_flight:
                    if document.name not in document_bars:
                        document_bars[document.name] = bars.add_task(
                            f"  {escape(document.name)}", total=100, info=""
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
    shown = result.documents if len(result.documents) <= PRINTED_REPORTS else []
    for document in shown:
        if document.report:
            title = f"report: {escape(document.name)}"
            console.print(Panel(Text(document.report), title=title))
        else:
            title = f"{escape(document.name)}: {document.state.value}"
            console.print(Panel(Text(document.error), title=title))
    if not shown:
        failed = [d for d in result.documents if d.state is not TaskState.COMPLETED]
        for document in failed[:PRINTED_REPORTS]:
            console.print(
                f"{document.name}: {document.state.value}: {document.error}", markup=False
            )
        if len(failed) > PRINTED_REPORTS:
            console.print(f"... and {len(failed) - PRINTED_REPORTS} more failed documents")
    print_ledger(result, console)
    done = sum(1 for d in result.documents if d.state is TaskState.COMPLETED)
    if result.reason and result.state is not TaskState.COMPLETED:
        console.print(f"{result.state.value}: {result.reason}", soft_wrap=True, markup=False)
    console.print(
        f"task {result.task_id} {result.state.value}: {len(result.documents)} document(s) "
        f"({done} reported), {result.usage.total_tokens} tokens, "
        f"cost so far ${result.cost_so_far:.6f}",
        soft_wrap=True,
        markup=False,
    )


def print_ledger(result: TaskResult, console: Console) -> None:
    """Tokens and money per step, model, attempt and outcome."""
    table = Table(title="cost ledger", show_lines=False)
    for column in ("step", "model", "attempt", "status", "calls", "prompt", "completion",
                   "saved", "cost $"):  # fmt: skip
        table.add_column(
            column, justify="left" if column in ("step", "model", "status") else "right"
        )
    for entry in result.ledger.rows():
        table.add_row(
            entry.step, Text(entry.model), str(entry.attempt), entry.status, str(entry.calls),
            str(entry.prompt_tokens), str(entry.completion_tokens), str(entry.saved_tokens),
            f"{entry.cost():.6f}",
        )  # fmt: skip
    console.print(table)
