"""`ltm start-task` / `run-task`: a long task of one's own (examples/translate.py) started by
name from the command line, followed, paused, resumed, cancelled and rerun, each error one line."""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from redis.asyncio import Redis
from temporalio.client import Client
from temporalio.worker import Worker

from longtask.agent import AgentStatus
from longtask.client import SyncTaskClient, TaskClient, TaskOutcome, UsageError
from longtask.settings import Settings
from longtask.states import TaskState
from longtask.tooling.live_view import agent_view
from longtask.tooling.servers import LlmServer
from tests.agents import running_worker, wait_for
from tests.cli_runs import ltm, one_line
from tests.test_views_80 import rendered

MODULES = {"LTM_TASK_MODULES": "examples.translate"}
CHAPTERS = {
    "01-harbour.txt": "The ship left the harbour at dawn, and Captain Ilsa Marrow watched Tern.",
    "02-storm.txt": "A storm came up. The crew of the Tern trusted Marrow.",
    "03-home.txt": "They came home to Valdby, where the harbour master waited.",
}


@pytest.fixture
def book(tmp_path: Path) -> Path:
    folder = tmp_path / "book"
    folder.mkdir()
    for name, text in CHAPTERS.items():
        (folder / name).write_text(text, encoding="utf-8")
    return folder


@pytest.fixture
async def ours(
    client: Client, settings: Settings, redis: Redis, monkeypatch: pytest.MonkeyPatch
) -> AsyncIterator[Settings]:
    """A worker that loads the example task by module path, as docs/agents.md says."""
    monkeypatch.setenv("LTM_TASK_MODULES", "examples.translate")
    queue = settings.model_copy(update={"task_queue": f"translate-{uuid.uuid4().hex[:8]}"})
    async with running_worker(client, queue, redis):
        yield queue


async def test_run_task_translates_a_folder_and_status_names_the_task(
    ours: Settings, llm: LlmServer, book: Path
) -> None:
    params = json.dumps({"folder": str(book), "language": "German"})
    ran = await ltm(ours, "run-task", "Translate", "--input", params, "--task-id", "book-de",
                    extra_env=MODULES)  # fmt: skip
    assert ran.returncode == 0, ran.stderr
    assert '"glossary": [' in ran.stdout and '"Valdby"' in ran.stdout
    assert "task book-de (Translate) completed" in ran.stdout
    assert "German" in llm.requests()[0]["body"]["messages"][0]["content"]

    status = await ltm(ours, "status", "book-de", "--json", extra_env=MODULES)
    record = json.loads(status.stdout)
    assert (record["task"], record["state"], record["progress"]) == ("Translate", "completed", 100)
    assert [row["step"] for row in record["ledger"]] == [f"translate {n}" for n in CHAPTERS]
    line = await ltm(ours, "status", "book-de", extra_env=MODULES)
    assert line.stdout.startswith("book-de (Translate): completed, 100.00 %, 3/3 steps")

    # The id is taken: refused in one line, as for the document agent.
    again = await ltm(ours, "start-task", "Translate", "--input", params, "--task-id", "book-de",
                      extra_env=MODULES)  # fmt: skip
    assert again.returncode == 1 and "--new-run" in one_line(again)


async def test_bad_names_json_and_parameters_are_one_line_each(ours: Settings, book: Path) -> None:
    unknown = await ltm(ours, "start-task", "Translat", extra_env=MODULES)
    assert unknown.returncode == 2
    assert "known: Translate" in one_line(unknown) and "LTM_TASK_MODULES" in one_line(unknown)
    unloaded = await ltm(ours, "start-task", "Translate", extra_env={"LTM_TASK_MODULES": ""})
    assert unloaded.returncode == 2 and "set LTM_TASK_MODULES" in one_line(unloaded)
    missing = await ltm(ours, "start-task", "Translate", extra_env={"LTM_TASK_MODULES": "no.such"})
    assert missing.returncode == 2 and "cannot import 'no.such'" in one_line(missing)
    not_json = await ltm(ours, "start-task", "Translate", "--input", "{folder: x}",
                         extra_env=MODULES)  # fmt: skip
    assert not_json.returncode == 2 and "--input is not JSON" in one_line(not_json)
    refused = await ltm(ours, "start-task", "Translate", "--input", '{"language": 3}',
                        extra_env=MODULES)  # fmt: skip
    assert refused.returncode == 2
    assert "folder: Field required" in one_line(refused)
    assert "language: Input should be a valid string" in one_line(refused)


async def test_pause_resume_cancel_and_a_new_run_of_a_task_of_ones_own(
    client: Client, ours: Settings, llm: LlmServer, book: Path
) -> None:
    # Every answer fails at first, retried after 5, 10 and 20 s: the task is under way for
    # half a minute whatever the machine's pace, so each command finds it as the test expects.
    llm.add({"type": "fail", "status": 503, "times": None})
    params = json.dumps({"folder": str(book)})
    started = await ltm(ours, "start-task", "Translate", "--input", params, extra_env=MODULES)
    assert started.returncode == 0, started.stderr
    task_id = started.stdout.strip()
    handle = client.get_workflow_handle(task_id)
    await wait_for(handle, lambda s: s.state is TaskState.RETRYING)

    paused = await ltm(ours, "pause", task_id)
    assert (paused.returncode, paused.stdout.strip()) == (0, f"task {task_id} paused")
    # The first chapter's retry now succeeds; paused, the task starts no other chapter.
    llm.reset()
    await wait_for(handle, lambda s: s.record.step == 1)
    llm.add({"type": "fail", "status": 503, "times": None})
    shown = await ltm(ours, "status", task_id)
    assert f"{task_id} (Translate): paused" in shown.stdout and "ETA paused" in shown.stdout
    view = rendered(agent_view("Translate", await handle.query("status", result_type=AgentStatus)))
    assert f"task {task_id} (Translate)  paused" in view and "ETA paused" in view
    twice = await ltm(ours, "pause", task_id)
    assert twice.returncode == 1 and "cannot be paused" in one_line(twice)
    resumed = await ltm(ours, "resume", task_id)
    assert resumed.returncode == 0, resumed.stderr

    cancelled = await ltm(ours, "cancel", task_id)
    assert cancelled.returncode == 0, cancelled.stderr
    watched = await ltm(ours, "watch", task_id)
    assert watched.returncode == 1
    assert f"task {task_id} (Translate) cancelled" in watched.stdout
    status = await handle.query("status", result_type=AgentStatus)
    assert f"cost so far ${status.cost_so_far:.6f}" in " ".join(watched.stdout.split())
    ended = await ltm(ours, "cancel", task_id)
    assert ended.returncode == 1 and "nothing to cancel" in one_line(ended)
    none = await ltm(ours, "resume", task_id, "--checkpoint", f"{task_id}_1", extra_env=MODULES)
    assert none.returncode == 1 and f"checkpoint {task_id}_1 is not in Redis" in one_line(none)

    llm.reset()
    rerun = await ltm(ours, "resume", task_id, extra_env=MODULES)
    assert rerun.returncode == 0, rerun.stderr
    assert rerun.stdout.startswith(f"task {task_id} (Translate): new run ")
    finished = await ltm(ours, "watch", task_id)
    assert finished.returncode == 0, finished.stderr
    assert f"task {task_id} (Translate) completed" in finished.stdout
    # Chapters translated before the cancel were not asked again by the new run.
    asked = [r["body"]["messages"][1]["content"] for r in llm.requests()
             if r["path"].endswith("/chat/completions")]  # fmt: skip
    assert len(asked) < len(CHAPTERS) and len(set(asked)) == len(asked)


async def test_the_python_client_starts_a_task_by_name_and_reads_its_outcome(
    client: Client, ours: Settings, book: Path
) -> None:
    tasks = TaskClient(client, ours)
    task_id = await tasks.start_task("Translate", {"folder": str(book)}, budget_usd=5)
    outcome = await tasks.outcome(task_id)
    assert outcome.state is TaskState.COMPLETED, outcome.reason
    assert outcome.result is not None
    assert outcome.result["glossary"] == ["Captain", "Ilsa", "Marrow", "Tern", "Valdby"]
    assert (await tasks.status(task_id))["task"] == "Translate"
    with pytest.raises(UsageError, match="its result is `outcome`"):
        await tasks.result(task_id)
    with pytest.raises(UsageError, match="known: Translate"):
        await tasks.start_task("Translat", {})

    def without_asyncio() -> tuple[list[float], TaskOutcome[Any]]:
        with SyncTaskClient.connect(ours) as synced:
            again = synced.start_task("Translate", {"folder": str(book), "language": "Dutch"})
            progress = [record.progress for record in synced.watch(again)]
            return progress, synced.outcome(again)

    progress, ended = await asyncio.to_thread(without_asyncio)
    assert progress[-1] == 100 and ended.state is TaskState.COMPLETED


async def test_a_worker_without_the_tasks_module_is_named_as_the_cause(
    client: Client, settings: Settings, worker: Worker, book: Path
) -> None:
    # The worker fixture loads no task module; the command line does.
    started = await ltm(settings, "start-task", "Translate", "--input",
                        json.dumps({"folder": str(book)}), extra_env=MODULES)  # fmt: skip
    assert started.returncode == 0, started.stderr
    handle = client.get_workflow_handle(started.stdout.strip())
    for _ in range(600):  # until the worker has failed the task's first workflow task
        pending = (await handle.describe()).raw_description.pending_workflow_task
        if pending.attempt >= 2:
            break
        await asyncio.sleep(0.1)
    for command in ("pause", "status"):
        refused = await ltm(settings, command, handle.id)
        assert refused.returncode == 1
        assert "its module in LTM_TASK_MODULES" in one_line(refused), command
    await handle.terminate("test over")
