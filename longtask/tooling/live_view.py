"""Rich terminal views of a task: live progress bars and the final reports.

Rich reads ``[...]`` in a string as markup. Names, model names, answers and error messages come
from outside (a file named ``[red]notes.md``, a report containing ``[/bold]``): they are
escaped, or passed as ``Text``, so they print as they are and never crash the view.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable
from datetime import timedelta
from pathlib import Path
from typing import Any, TypeVar

from pydantic import BaseModel
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

from longtask.agent import AgentStatus, TaskOutcome
from longtask.cost import CostLedger
from longtask.engine.names import DOCUMENT_TASK
from longtask.models import TaskResult, TaskStatus
from longtask.progress import ENDED_NODE, WAITING_NODE, ProgressNode, ProgressRecord
from longtask.states import TaskState

ROLLED_UP = frozenset({ENDED_NODE, WAITING_NODE})
# Up to this many documents the reports are printed in full; beyond, they are in files.
PRINTED_REPORTS = 10

POLL_SECONDS = 0.5
StatusT = TypeVar("StatusT", TaskStatus, AgentStatus)
BAR_WIDTH = 24
# A query waits for a worker to answer; without one, give up soon and say so.
QUERY_TIMEOUT = timedelta(seconds=5)


def _eta(seconds: float | None, state: TaskState) -> str:
    # While paused no step runs: an ETA from the last rate would be wrong.
    if state is TaskState.PAUSED:
        return "ETA paused"
    return "ETA ?" if seconds is None else f"ETA {seconds:.0f}s"


async def query_status(handle: WorkflowHandle[Any, Any]) -> TaskStatus | None:
    """The document task's own answer, or None when no worker can answer right now."""
    return await _query(handle, TaskStatus)


async def query_agent_status(handle: WorkflowHandle[Any, Any]) -> AgentStatus | None:
    """A long task's own answer (longtask.agent), or None when no worker can answer now."""
    return await _query(handle, AgentStatus)


async def _query(handle: WorkflowHandle[Any, Any], answer: type[StatusT]) -> StatusT | None:
    try:
        status: StatusT = await handle.query(
            "status", result_type=answer, rpc_timeout=QUERY_TIMEOUT
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
        *_timing_and_cost(record, status.state, status.cost_so_far),
        f"retries {retries}",
    ]
    head = f"task {record.task_id}  {status.state.value}"
    return Group(*figure_lines(head, figures), progress_bars("all documents", record, status.tree))


def agent_view(name: str, status: AgentStatus) -> Group:
    """A long task of one's own: its figures and bars, for its parts if it has any; readable
    at 80 columns like the document task's."""
    record = status.record
    figures = [*_timing_and_cost(record, status.state, status.cost_so_far), f"calls {status.calls}"]
    head = f"task {record.task_id} ({name})  {status.state.value}"
    return Group(*figure_lines(head, figures), progress_bars("all steps", record, status.tree))


def _timing_and_cost(record: ProgressRecord, state: TaskState, cost: float) -> list[str]:
    """Steps, elapsed time, ETA and cost: the figures every task shows."""
    elapsed = f"elapsed {record.elapsed_seconds:.0f}s"
    return [_steps_text(record), elapsed, _eta(record.eta_seconds, state), f"${cost:.6f}"]


def figure_lines(head: str, figures: list[str]) -> tuple[Text, Text]:
    """The task's id and state, then its figures, which wrap between each other."""
    return Text(head, overflow="fold"), Text("  ".join(figures), overflow="fold")


def progress_bars(title: str, record: ProgressRecord, tree: ProgressNode) -> Table:
    """A bar for the whole task, then one for each of its parts still shown on its own."""
    bars = Table.grid(padding=(0, 1), expand=True)
    bars.add_column(ratio=1, no_wrap=True, overflow="ellipsis")
    bars.add_column(width=BAR_WIDTH, no_wrap=True)
    bars.add_column(justify="right", no_wrap=True)
    bars.add_column(justify="right", no_wrap=True)
    rows = [(title, record.progress, f"{record.step}/{record.total}")]
    rows += [
        (f"  {d.name}", d.percent(), f"{d.steps_done()}/{d.steps_total()}")
        for d in tree.children
        if d.name not in ROLLED_UP
    ]
    for name, percent, steps in rows:
        bar = ProgressBar(total=100, completed=percent, width=BAR_WIDTH)
        bars.add_row(Text(name), bar, f"{percent:6.2f}%", f"{steps} steps")
    return bars


async def show_live(
    handle: WorkflowHandle[Any, Any],
    console: Console,
    task_name: str = DOCUMENT_TASK,
    unanswered: Callable[[], Awaitable[None]] | None = None,
) -> None:
    """The task's figures and a bar for the task and for each of its parts until the task
    closes; ``unanswered`` is called once if the task's status query goes unanswered (no
    worker runs it) before it ever answered."""
    answered = False
    with Live(console=console, auto_refresh=False, transient=False) as live:
        while True:
            description = await handle.describe()
            view: Group | None = None
            if task_name == DOCUMENT_TASK:
                status = await query_status(handle)
                view = None if status is None else task_view(status)
            else:
                agent_status = await query_agent_status(handle)
                view = None if agent_status is None else agent_view(task_name, agent_status)
            if view is not None:
                live.update(view, refresh=True)
            elif not answered and unanswered is not None:
                await unanswered()
                unanswered = None
            answered = answered or view is not None
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
        markup=False,  # wrapped between words at 80 columns, never inside a number
    )


def print_outcome(name: str, outcome: TaskOutcome[Any], console: Console) -> None:
    """How a long task of one's own ended: its result as JSON, its ledger, and one line."""
    if outcome.result is not None:
        result = outcome.result
        data = result.model_dump(mode="json") if isinstance(result, BaseModel) else result
        console.print(Text(json.dumps(data, indent=2, ensure_ascii=False)))
    console.print(ledger_table(outcome.ledger))
    if outcome.reason and outcome.state is not TaskState.COMPLETED:
        console.print(f"{outcome.state.value}: {outcome.reason}", soft_wrap=True, markup=False)
    console.print(
        f"task {outcome.task_id} ({name}) {outcome.state.value}: "
        f"{outcome.usage.total_tokens} tokens, cost so far ${outcome.cost_so_far:.6f}",
        markup=False,  # wrapped between words at 80 columns, never inside a number
    )


def ledger_table(ledger: TaskResult | CostLedger, prices: dict[str, float] | None = None) -> Table:
    """Tokens and money per step, model, attempt and outcome, in pipeline order, with totals.
    Numbers never wrap; at 80 columns the step and its model share a column, folding onto a
    second line, so the numbers keep their room."""
    table = Table(title="cost ledger", box=box.SIMPLE_HEAD, pad_edge=False, padding=(0, 1, 0, 0))
    table.add_column("step  model", overflow="fold", min_width=9)
    table.add_column("status", overflow="fold", min_width=7)
    for column in ("try", "calls", "prompt", "output", "saved", "cost $"):
        table.add_column(column, justify="right", no_wrap=True)
    if isinstance(ledger, TaskResult):
        ledger = ledger.ledger
    rows = ledger.pipeline_rows()
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
