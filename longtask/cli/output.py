"""Plain views of `ltm status` and `ltm list` that fit 80 columns."""

from __future__ import annotations

from typing import Any

from rich import box
from rich.console import Console
from rich.table import Table
from rich.text import Text

from longtask.engine.names import DOCUMENT_TASK
from longtask.task_list import TaskSummary


def eta_text(eta_seconds: float | None, state: str) -> str:
    """The ETA as shown: none while paused, since no step runs and the rate means nothing."""
    if state == "paused":
        return "ETA paused"
    return "ETA unknown" if eta_seconds is None else f"ETA {eta_seconds:.0f} s"


def status_figures(task_id: str, status: dict[str, Any]) -> list[str]:
    """`ltm status` for people: state, progress, elapsed time, ETA and cost."""
    cost = status.get("cost_so_far")
    figures = [f"{status['progress']:.2f} %", f"{status['step']}/{status['total']} steps"]
    phase = (status.get("metadata") or {}).get("phase")
    if phase is not None:
        # A run still finding its documents: the phase, and figures only once there are any
        # (those a continued run carries over), never a bare 0.00 % (0/0 steps).
        figures = [f"{phase}..."] + ([f"{' '.join(figures)} so far"] if status["total"] else [])
    # A long task of one's own says which it is; the document agent's need not.
    name = f" ({status['task']})" if status.get("task") else ""
    parts = [
        f"{task_id}{name}: {status['state']}",
        *figures,
        f"elapsed {status['elapsed_seconds']:.0f} s",
        eta_text(status["eta_seconds"], status["state"]),
    ]
    if cost is not None:
        parts.append(f"${cost:.6f}")
    return parts


def status_line(task_id: str, status: dict[str, Any]) -> str:
    """The figures on one line."""
    return ", ".join(status_figures(task_id, status))


def print_status(task_id: str, status: dict[str, Any], console: Console) -> None:
    """The figures, wrapped between two of them, never inside one (`ETA` / `paused`)."""
    figures = status_figures(task_id, status)
    lines = [""]
    for index, figure in enumerate(figures):
        piece = figure if index == len(figures) - 1 else f"{figure},"
        if lines[-1] and len(lines[-1]) + 1 + len(piece) > console.width:
            lines.append(piece)
        else:
            lines[-1] = f"{lines[-1]} {piece}" if lines[-1] else piece
    for line in lines:
        console.print(Text(line, overflow="fold"))


def print_task_list(found: list[TaskSummary], console: Console) -> None:
    if not found:
        console.print("no task matches", markup=False)
        return
    table = Table(box=box.SIMPLE_HEAD, pad_edge=False)
    table.add_column("task", overflow="fold")
    table.add_column("state", overflow="fold")
    table.add_column("progress", justify="right", no_wrap=True)
    table.add_column("cost $", justify="right", no_wrap=True)
    table.add_column("started (UTC)", no_wrap=True)
    for task in found:
        table.add_row(
            Text(task.task_id if task.kind == DOCUMENT_TASK else f"{task.task_id} ({task.kind})"),
            task.state or task.temporal_status,
            "-" if task.progress is None else f"{task.progress:.2f} %",
            "-" if task.cost_usd is None else f"{task.cost_usd:.6f}",
            task.started.strftime("%Y-%m-%d %H:%M"),
        )
    console.print(table)
