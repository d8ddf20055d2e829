"""The live view and the cost ledger at 80 columns: every number whole, rows in pipeline order,
totals, no ETA while paused, the report folder of a large task."""

from __future__ import annotations

import uuid
from pathlib import Path

from rich.console import Console
from temporalio.client import Client
from temporalio.worker import Worker

from longtask.cli.output import print_status, status_figures
from longtask.client import TaskClient
from longtask.cost import CostLedger, TokenUsage
from longtask.models import DocumentReport, TaskResult
from longtask.settings import Settings
from longtask.states import TaskState
from longtask.tooling.live_view import ledger_table, print_result, task_view
from longtask.tooling.servers import LlmServer
from tests.conftest import EXAMPLES
from tests.tasks import wait_for_status

# The 10,000-document task's ledger (README), out of order, with long model names.
BIG_ROWS = [
    ("report", "gpt-4.1", 1, "success", 10_000, 841_803, 166_292, 0),
    ("embed", "deepseek-v3.2", 2, "success", 2, 274, 0, 0),
    ("reason", "gemini-2.5-flash-preview-thinking", 1, "success", 10_000, 1_824_996, 191_059, 0),
    ("summarize", "deepseek-v3.2", 1, "server_error", 12, 1_503_523, 183_241, 17_404),
    ("embed", "deepseek-v3.2", 1, "timeout", 9_998, 1_284_328, 0, 0),
    ("check", "gpt-4.1", 1, "success", 1, 9, 1, 0),
]


def rendered(renderable: object) -> str:
    console = Console(width=80, record=True, file=open("/dev/null", "w"))  # noqa: SIM115
    console.print(renderable)
    text = console.export_text()
    assert all(len(line) <= 80 for line in text.splitlines()), text
    return text


def big_result(documents: list[DocumentReport] | None = None) -> TaskResult:
    ledger = CostLedger()
    for step, model, attempt, status, calls, prompt, completion, saved in BIG_ROWS:
        ledger.record(step, model, attempt, status, prompt, completion, saved, calls)
    return TaskResult(
        task_id="scale10k",
        state=TaskState.COMPLETED,
        documents=documents or [],
        usage=TokenUsage(),
        cost_so_far=14.352871,
        ledger=ledger,
    )


def test_the_ledger_fits_80_columns_with_every_number_whole() -> None:
    result = big_result()
    text = rendered(ledger_table(result))
    rows = result.ledger.pipeline_rows()
    for entry in rows:
        for figure in (entry.calls, entry.prompt_tokens, entry.completion_tokens):
            assert f"{figure:,}" in text
        assert f"{entry.cost():.6f}" in text
    assert [e.step for e in rows] == ["check", "embed", "embed", "summarize", "reason", "report"]
    total_line = next(line for line in text.splitlines() if line.lstrip().startswith("total"))
    assert f"{sum(e.calls for e in rows):,}" in total_line
    assert f"{sum(e.prompt_tokens for e in rows):,}" in total_line
    assert f"{sum(e.cost() for e in rows):.6f}" in total_line
    # Pipeline order on screen too: the first line of each step comes in that order.
    firsts = [text.index(f" {step} ") for step in ("embed", "summarize", "reason", "report")]
    assert firsts == sorted(firsts)


def test_a_large_task_names_its_report_folder(tmp_path: Path) -> None:
    documents = [
        DocumentReport(
            name=f"doc-{i}.txt", state=TaskState.COMPLETED, report_file=f"scale10k/{i:06d}.md"
        )
        for i in range(11)
    ]
    console = Console(width=80, record=True, file=open("/dev/null", "w"))  # noqa: SIM115
    print_result(big_result(documents), console, tmp_path)
    assert f"reports: {tmp_path / 'scale10k'}/ (11 files)" in console.export_text(styles=False)


async def test_the_live_view_fits_80_columns_and_shows_no_eta_while_paused(
    client: Client, settings: Settings, worker: Worker, llm: LlmServer
) -> None:
    llm.add({"type": "delay", "seconds": 2, "times": None})  # slow enough to pause
    tasks = TaskClient(client, settings)
    long_id = f"a-task-with-a-rather-long-id-{uuid.uuid4().hex}"
    task_id = await tasks.start([str(EXAMPLES)], task_id=long_id)
    handle = tasks.handle(task_id)
    status = await wait_for_status(handle, lambda s: s.record.total > 0)
    text = rendered(task_view(status))
    record = status.record
    for figure in (
        f"{record.step}/{record.total} steps",
        f"${status.cost_so_far:.6f}",
        f"{record.progress:6.2f}%".strip(),
        f"{status.documents_done + status.documents_failed}/{status.documents} docs",
        task_id,
    ):
        assert figure in text, figure

    await tasks.pause(task_id)
    paused = await wait_for_status(handle, lambda s: s.state is TaskState.PAUSED)
    text = rendered(task_view(paused))
    assert "ETA paused" in text and "ETA ?" not in text
    await tasks.cancel(task_id)


def test_the_status_line_wraps_between_figures_never_inside_one() -> None:
    status = {
        "task_id": "task-87173ae18df6", "progress": 33.33, "step": 1, "total": 3,
        "elapsed_seconds": 1.0, "eta_seconds": None, "metadata": {}, "state": "paused",
        "task": "Translate", "cost_so_far": 0.000018,
    }  # fmt: skip
    console = Console(width=80, record=True, file=open("/dev/null", "w"))  # noqa: SIM115
    print_status("task-87173ae18df6", status, console)
    lines = console.export_text().splitlines()
    assert len(lines) == 2 and all(len(line) <= 80 for line in lines)
    for figure in status_figures("task-87173ae18df6", status):
        assert any(figure in line for line in lines), figure
    assert "ETA paused" in lines[1]


def test_the_closing_line_wraps_between_words_at_80_columns() -> None:
    result = big_result().model_copy(update={"task_id": f"weekly-{'x' * 40}"})
    text = rendered_result(result)
    closing = text[text.index(f"task {result.task_id}") :]
    assert all(len(line) <= 80 for line in closing.splitlines())
    assert "$14.352871" in closing and "cost so far $14.352871" in " ".join(closing.split())


def rendered_result(result: TaskResult) -> str:
    console = Console(width=80, record=True, file=open("/dev/null", "w"))  # noqa: SIM115
    print_result(result, console)
    return console.export_text(styles=False)
