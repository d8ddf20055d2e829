"""starter.py as a user runs it: start, status --json while running, cancel, run, bad input."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
from temporalio.client import Client
from temporalio.worker import Worker

from longtask.settings import Settings
from longtask.tooling.servers import LlmServer
from tests.conftest import EXAMPLES, ROOT

RECORD_FIELDS = {
    "task_id", "progress", "step", "total", "elapsed_seconds", "eta_seconds", "metadata"
}  # fmt: skip
STATUS_EXTRAS = {
    "state", "calls", "cost_so_far", "documents", "documents_done", "documents_failed", "ledger"
}  # fmt: skip


async def starter(settings: Settings, *args: str) -> subprocess.CompletedProcess[str]:
    """Run the CLI in a thread: the test's worker shares this event loop and must keep going."""
    return await asyncio.to_thread(run_starter, settings, *args)


def run_starter(settings: Settings, *args: str) -> subprocess.CompletedProcess[str]:
    env = {
        **os.environ,
        "LTM_TEMPORAL_ADDRESS": settings.temporal_address,
        "LTM_TASK_QUEUE": settings.task_queue,
        "LTM_REDIS_URL": settings.redis_url,
        "LTM_PAYLOAD_DIR": str(settings.payload_folder),
    }
    return subprocess.run(
        [sys.executable, str(ROOT / "starter.py"), *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


async def test_start_status_and_cancel(
    client: Client, settings: Settings, worker: Worker, llm: LlmServer
) -> None:
    # Slow calls keep the task running while the CLI, slow to start on a loaded machine, looks.
    llm.add({"type": "delay", "seconds": 4, "times": None})
    started = await starter(settings, "start", str(EXAMPLES))
    assert started.returncode == 0, started.stderr
    task_id = started.stdout.strip()
    assert task_id.startswith("task-")

    deadline = time.monotonic() + 30
    while True:
        shown = await starter(settings, "status", task_id, "--json")
        assert shown.returncode == 0, shown.stderr
        status = json.loads(shown.stdout)
        if status["total"] > 0 or time.monotonic() > deadline:
            break
    assert set(status) == RECORD_FIELDS | STATUS_EXTRAS
    assert status["state"] == "running"
    assert status["task_id"] == task_id
    assert 0 <= status["progress"] < 100

    cancelled = await starter(settings, "cancel", task_id)
    assert cancelled.returncode == 0
    watched = await starter(settings, "watch", task_id)
    assert watched.returncode == 1
    assert "cancelled" in watched.stdout


async def test_run_prints_each_report_and_the_cost(
    client: Client, settings: Settings, worker: Worker, llm: LlmServer
) -> None:
    done = await starter(settings, "run", str(EXAMPLES), "--model-final", "house-final-model")
    assert done.returncode == 0, done.stderr
    # The task's own model route: every report went to the model named for this task.
    # One call checks the model as the task starts (LTM_CHECK_MODELS, on by default), then
    # one report per document.
    assert llm.count("/chat/completions", "house-final-model") == 1 + 3
    assert llm.count("/chat/completions", "gpt-4.1") == 0
    for name in ("heat-pump-field-study.pdf", "incident-postmortem.txt"):
        assert f"report: {name}" in done.stdout
    # The closing line wraps between words at 80 columns.
    closing = " ".join(done.stdout.split())
    assert "completed: 3 document(s)" in closing and "cost so far $" in closing


def test_missing_path_is_refused_before_anything_starts(tmp_path: Path) -> None:
    settings = Settings()
    refused = run_starter(settings, "start", str(tmp_path / "nope"))
    assert refused.returncode == 2
    assert "no such file or folder" in refused.stderr


def test_a_budget_that_is_no_number_is_refused_in_one_line() -> None:
    settings = Settings()
    for value in ("inf", "nan", "-1"):
        refused = run_starter(settings, "start", str(EXAMPLES), "--budget-usd", value)
        assert refused.returncode == 2, value
        assert "budget" in refused.stderr and "Traceback" not in refused.stderr, value


def test_a_task_id_with_a_trailing_newline_is_refused(settings: Settings) -> None:
    refused = run_starter(settings, "start", str(EXAMPLES), "--task-id", "rc\n")
    assert refused.returncode == 2
    assert "task id 'rc\\n'" in refused.stderr


async def test_markup_in_names_models_and_answers_is_printed_as_it_is(
    client: Client,
    settings: Settings,
    worker: Worker,
    llm: LlmServer,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Rich reads "[...]" as markup: a closing tag that opens nothing would crash `run`, an
    opening one would vanish."""
    document = tmp_path / "[red]notes.md"
    document.write_text("Minutes.\n\nThe [red] team met [/red] twice and agreed on a plan.")
    model = "[/i]final"
    answer = "Plan [/bold] agreed [red]"
    llm.add({"type": "reply", "text": answer, "times": None})  # every chat answer
    monkeypatch.setenv("COLUMNS", "200")  # wide enough for the ledger's model column
    done = await starter(settings, "run", str(document), "--model-final", model)
    assert done.returncode == 0, done.stderr
    assert "Traceback" not in done.stderr
    assert "report: [red]notes.md" in done.stdout  # shown, not taken for a colour
    assert answer in done.stdout
    assert model in done.stdout  # its row of the cost ledger
