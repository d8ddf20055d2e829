"""The example task of examples/translate.py, loaded by module path and started by name:
it runs end to end, carries its glossary from chapter to chapter, and replays."""

from __future__ import annotations

import asyncio
import uuid
from pathlib import Path

import pytest
from redis.asyncio import Redis
from temporalio.client import Client
from temporalio.worker import Replayer

from examples.translate import Translate
from longtask.agent import AgentStatus, resume_task_by_name, start_task_by_name
from longtask.cost import TaskBudget
from longtask.payload_store import data_converter
from longtask.search_attributes import TASK_COST, TASK_PROGRESS, TASK_STATE
from longtask.settings import Settings
from longtask.states import TaskState
from longtask.task_list import TaskFilter, TaskSummary, list_tasks
from longtask.tooling.servers import LlmServer
from tests.agents import latest_checkpoint, running_worker
from tests.conftest import PAYLOAD_THRESHOLD

CHAPTERS = {
    "01-harbour.txt": "The ship left the harbour at dawn, and Captain Ilsa Marrow watched Tern.",
    "02-storm.txt": "A storm came up. The crew of the Tern trusted Marrow.",
    "03-home.txt": "They came home to Valdby, where the harbour master waited.",
}


async def test_the_example_task_translates_a_folder_and_carries_its_glossary(
    client: Client,
    settings: Settings,
    llm: LlmServer,
    redis: Redis,
    tmp_path: Path,
    payload_dir: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    folder = tmp_path / "book"
    folder.mkdir()
    for name, text in CHAPTERS.items():
        (folder / name).write_text(text, encoding="utf-8")
    # A worker loads the task by module path, as docs/agents.md says.
    monkeypatch.setenv("LTM_TASK_MODULES", "examples.translate")
    ours = settings.model_copy(update={"task_queue": f"translate-{uuid.uuid4().hex[:8]}"})
    async with running_worker(client, ours, redis):
        handle = await start_task_by_name(
            client, ours, "Translate", {"folder": str(folder), "language": "German"}
        )
        outcome = await handle.result()

    assert outcome.state is TaskState.COMPLETED, outcome.reason
    # Its page in the Temporal UI says what it is; `ltm list` and the UI's columns find it.
    described = await handle.describe()
    summary = await described.static_summary()
    assert summary is not None and len(summary) <= 120
    assert summary.startswith("Translate: folder=") and summary.endswith(", language=German")
    details = await described.static_details()
    assert details is not None and f"- `folder`: {folder}" in details and "(Translate)" in details
    attributes = described.typed_search_attributes
    assert attributes.get(TASK_STATE) == "completed"
    assert attributes.get(TASK_PROGRESS) == 100.0
    assert attributes.get(TASK_COST) == outcome.cost_so_far > 0
    listed: list[TaskSummary] = []
    for _ in range(50):  # visibility is written a moment after the task closes
        listed = await list_tasks(client, TaskFilter(state=TaskState.COMPLETED, limit=1000))
        if any(task.task_id == handle.id for task in listed):
            break
        await asyncio.sleep(0.2)
    [found] = [task for task in listed if task.task_id == handle.id]
    assert (found.kind, found.progress, found.cost_usd) == ("Translate", 100.0, outcome.cost_so_far)
    translation = outcome.result
    assert translation is not None
    assert sorted(translation.chapters) == sorted(CHAPTERS)
    assert all(text.strip() for text in translation.chapters.values())
    assert translation.glossary == ["Captain", "Ilsa", "Marrow", "Tern", "Valdby"]
    # Each chapter was asked once, streamed, with the names the chapters before it met.
    systems = [
        r["body"]["messages"][0]["content"]
        for r in llm.requests()
        if r["path"].endswith("/chat/completions")
    ]
    assert len(systems) == 3
    assert "German" in systems[0] and "none yet" in systems[0]
    assert "Captain, Ilsa, Marrow, Tern" in systems[1]
    assert "Valdby" not in systems[2] and "Marrow" in systems[2]
    # The glossary and the chapters are the checkpoint's variables (SPEC section 5).
    checkpoint = await latest_checkpoint(redis, handle.id)
    assert checkpoint is not None and checkpoint.progress == 100.0
    assert checkpoint.state.variables["glossary"] == translation.glossary
    assert sorted(checkpoint.state.variables["chapters"]) == sorted(CHAPTERS)

    history = await handle.fetch_history()
    replayer = Replayer(
        workflows=[Translate], data_converter=data_converter(payload_dir, PAYLOAD_THRESHOLD)
    )
    assert (await replayer.replay_workflow(history)).replay_failure is None


# A history too long by its events, or by its bytes (each call carries its conversation).
@pytest.mark.parametrize("limit", [{"max_history_events": 50}, {"max_history_bytes": 10_000}])
async def test_a_long_book_continues_as_new_runs_with_its_glossary(
    limit: dict[str, int],
    client: Client,
    settings: Settings,
    llm: LlmServer,
    redis: Redis,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    folder = tmp_path / "long-book"
    folder.mkdir()
    for number in range(8):
        text = f"Chapter {number}: the crew met Name{chr(97 + number)} at the harbour."
        (folder / f"{number:02d}.txt").write_text(text, encoding="utf-8")
    monkeypatch.setenv("LTM_TASK_MODULES", "examples.translate")
    # No workflow cache: every workflow task replays the run's whole history so far.
    ours = settings.model_copy(
        update={"task_queue": f"translate-{uuid.uuid4().hex[:8]}", "max_cached_workflows": 0}
    )
    async with running_worker(client, ours, redis):
        # A history this short holds a few chapters: the rest go to new runs of the task.
        handle = await start_task_by_name(
            client, ours, "Translate", {"folder": str(folder), **limit}
        )
        outcome = await handle.result()
        status = await handle.query("status", result_type=AgentStatus)
    assert outcome.state is TaskState.COMPLETED, outcome.reason
    assert outcome.result is not None and len(outcome.result.chapters) == 8
    assert status.record.metadata["runs"] >= 2
    assert outcome.result.glossary == [f"Name{chr(97 + n)}" for n in range(8)]
    # Every chapter asked once over all runs; the cost of every run is in the outcome.
    asked = [
        r["body"]["messages"][1]["content"]
        for r in llm.requests()
        if r["path"].endswith("/chat/completions")
    ]
    assert sorted(asked) == sorted(p.read_text() for p in folder.iterdir())
    assert outcome.ledger.calls() == 8


async def test_a_book_out_of_budget_resumes_by_name_with_its_chapters_kept(
    client: Client,
    settings: Settings,
    llm: LlmServer,
    redis: Redis,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    folder = tmp_path / "book"
    folder.mkdir()
    for name, text in CHAPTERS.items():
        (folder / name).write_text(text, encoding="utf-8")
    monkeypatch.setenv("LTM_TASK_MODULES", "examples.translate")
    ours = settings.model_copy(update={"task_queue": f"translate-{uuid.uuid4().hex[:8]}"})
    async with running_worker(client, ours, redis):
        # Dear tokens and a tiny budget: the first chapter spends it all.
        handle = await start_task_by_name(
            client,
            ours,
            "Translate",
            {
                "folder": str(folder),
                "prices": {ours.model_intermediate: 1000.0},
                "budget": {"max_cost_usd": 0.001},
            },
        )
        stopped = await handle.result()
        assert stopped.state is TaskState.BUDGET_EXCEEDED, stopped.reason
        checkpoint = await latest_checkpoint(redis, handle.id)
        assert checkpoint is not None
        assert sorted(checkpoint.state.variables["chapters"]) == ["01-harbour.txt"]

        again = await resume_task_by_name(client, ours, redis, handle.id, budget=TaskBudget())
        finished = await again.result()
    assert finished.state is TaskState.COMPLETED, finished.reason
    assert finished.result is not None and sorted(finished.result.chapters) == sorted(CHAPTERS)
    assert finished.result.glossary == ["Captain", "Ilsa", "Marrow", "Tern", "Valdby"]
    # The chapter translated before the budget ran out was not asked again.
    asked = [
        r["body"]["messages"][1]["content"]
        for r in llm.requests()
        if r["path"].endswith("/chat/completions")
    ]
    assert sorted(asked) == sorted(CHAPTERS.values())
