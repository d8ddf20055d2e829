"""Rich terminal views of a task: live progress bars and the final reports.

Rich reads ``[...]`` in a string as markup. Names, model names, answers and error messages come
from outside (a file named ``[red]notes.md``, a report containing ``[/bold]``): they are
escaped, or passed as ``Text``, so they print as they are and never crash the view.
"""

from __future__ import annotations

import asyncio
from datetime import timedelta
from pathlib import Path
from typing import Any

from rich import box
from rich.console import Console, Group
from rich.live import Live
from rich.markup import escape
from rich.panel import Panel
from rich.progress_bar import ProgressBar
from rich.table import Table
from rich.text import Text
from temporalio.client import WorkflowExecutionStatus, WorkflowHandle
from temporalio.service import RPCError

from longtask.models import TaskResult, TaskStatus
from longtask.progress import ENDED_NODE, WAITING_NODE, ProgressRecord
from longtask.states import TaskState

ROLLED_UP = frozenset({ENDED_NODE, WAITING_NODE})
# Up to this many documents the reports are printed in full; beyond, they are in files.
PRINTED_REPORTS = 10

POLL_SECONDS = 0.5
BAR_WIDTH = 24
# A query waits for a worker to answer; without one, give up soon and say so.
QUERY_TIMEOUT = timedelta(seconds=5)


def _eta(seconds: float | None, state: TaskState) -> str:
    # While paused no step runs: an ETA from the last rate would be wrong.
    if state is TaskState.PAUSED:
        return "ETA paused"
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


def _steps_text(record: ProgressRecord) -> str:
    """Steps done, or the phase of a run still finding its documents (never ``0/0 steps``)."""
    steps = f"{record.step}/{record.total} steps"
    phase = record.metadata.get("phase")
    if phase is None:
        return steps
    return f"{phase}..." if record.total == 0 else f"{phase}... {steps} so far"


def task_view(status: TaskStatus) -> Group:
    """The task's figures and bars, readable at 80 columns: figures wrap between each other,
    never inside one, and only a long document name is shortened."""
    record = status.record
    retries = sum(s.errors + s.timeouts for s in status.calls.values())
    figures = [
        f"{status.documents_done + status.documents_failed}/{status.documents} docs",
        _steps_text(record),
        f"elapsed {record.elapsed_seconds:.0f}s",
        _eta(record.eta_seconds, status.state),
        f"${status.cost_so_far:.6f}",
        f"retries {retries}",
    ]
    head = Text(f"task {record.task_id}  {status.state.value}", overflow="fold")
    line = Text("  ".join(figures), overflow="fold")
    bars = Table.grid(padding=(0, 1), expand=True)
    bars.add_column(ratio=1, no_wrap=True, overflow="ellipsis")
    bars.add_column(width=BAR_WIDTH, no_wrap=True)
    bars.add_column(justify="right", no_wrap=True)
    bars.add_column(justify="right", no_wrap=True)
    rows = [("all documents", record.progress, f"{record.step}/{record.total}")]
    rows += [
        (f"  {d.name}", d.percent(), f"{d.steps_done()}/{d.steps_total()}")
        for d in status.tree.children
        if d.name not in ROLLED_UP
    ]
    for name, percent, steps in rows:
        bar = ProgressBar(total=100, completed=percent, width=BAR_WIDTH)
        bars.add_row(Text(name), bar, f"{percent:6.2f}%", f"{steps} steps")
    return Group(head, line, bars)


async def show_live(handle: WorkflowHandle[Any, Any], console: Console) -> None:
    """The task's figures and a bar for the task and for each document until the task closes."""
    with Live(console=console, auto_refresh=False, transient=False) as live:
        while True:
            description = await handle.describe()
            status = await query_status(handle)
            if status is not None:
                live.update(task_view(status), refresh=True)
            if description.status != WorkflowExecutionStatus.RUNNING:
                break
            await asyncio.sleep(POLL_SECONDS)
    if not console.is_terminal:
        # Printed to a file or pipe, the last view ends without a line break of its own.
        console.line()


def print_result(
    result: TaskResult,
    console: Console,
    report_folder: Path | None = None,
    prices: dict[str, float] | None = None,
) -> None:
    """Reports (in full for a few documents), the ledger at the task's ``prices`` and the
    outcome; for a large task, where its report files are."""
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
    console.print(ledger_table(result, prices))
    files = [d.report_file for d in result.documents if d.report_file]
    if not shown and files and report_folder is not None:
        # One line, unbroken, so it can be copied.
        folder = (report_folder / files[0]).parent
        console.print(f"reports: {folder}/ ({len(files)} files)", soft_wrap=True, markup=False)
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


def ledger_table(result: TaskResult, prices: dict[str, float] | None = None) -> Table:
    """Tokens and money per step, model, attempt and outcome, in pipeline order, with totals.
    Numbers never wrap; at 80 columns the step and its model share a column, folding onto a
    second line, so the numbers keep their room."""
    table = Table(title="cost ledger", box=box.SIMPLE_HEAD, pad_edge=False, padding=(0, 1, 0, 0))
    table.add_column("step  model", overflow="fold", min_width=9)
    table.add_column("status", overflow="fold", min_width=7)
    for column in ("try", "calls", "prompt", "output", "saved", "cost $"):
        table.add_column(column, justify="right", no_wrap=True)
    rows = result.ledger.pipeline_rows()
    for entry in rows:
        table.add_row(
            Text(f"{entry.step}  {entry.model}"), entry.status, str(entry.attempt),
            f"{entry.calls:,}", f"{entry.prompt_tokens:,}", f"{entry.completion_tokens:,}",
            f"{entry.saved_tokens:,}", f"{entry.cost(prices):.6f}",
        )  # fmt: skip
    table.add_section()
    table.add_row(
        "total", "", "", f"{sum(e.calls for e in rows):,}",
        f"{sum(e.prompt_tokens for e in rows):,}", f"{sum(e.completion_tokens for e in rows):,}",
        f"{sum(e.saved_tokens for e in rows):,}", f"{sum(e.cost(prices) for e in rows):.6f}",
    )  # fmt: skip
    return table
