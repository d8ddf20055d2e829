"""A 200-step task keeps its Temporal history small: big results live in the payload store."""

from __future__ import annotations

from pathlib import Path

from temporalio.client import Client
from temporalio.worker import Worker

from longtask.settings import Settings
from longtask.states import TaskState
from longtask.tooling.servers import LlmServer
from tests.tasks import start, write_documents

# Temporal's limits: 51,200 events and 50 MB per history, 2 MB per payload.
EVENT_LIMIT = 51_200
HISTORY_LIMIT = 50 * 1024 * 1024
PAYLOAD_LIMIT = 2 * 1024 * 1024
SUMMARY = "A realistic page summary of about two kilobytes. " * 42


async def test_a_200_step_task_stays_far_below_the_history_limits(
    client: Client, settings: Settings, worker: Worker, llm: LlmServer, tmp_path: Path
) -> None:
    llm.add({"type": "reply", "text": SUMMARY, "times": None, "match": {"model": "deepseek-v3.2"}})
    paths = write_documents(tmp_path / "docs", count=1, pages=200)
    files_before = sum(1 for _ in settings.payload_folder.rglob("*") if _.is_file())
    _, handle = await start(client, settings, paths)
    result = await handle.result()
    assert result.state is TaskState.COMPLETED

    history = await handle.fetch_history()
    steps = 200 + 7 + 2  # page summaries, embedding batches, reasoning, report
    summaries_bytes = 200 * len(SUMMARY)
    history_bytes = sum(event.ByteSize() for event in history.events)
    largest_event = max(event.ByteSize() for event in history.events)

    assert summaries_bytes > 400_000  # what would sit in the history three times over
    assert len(history.events) < EVENT_LIMIT / 50
    assert history_bytes < summaries_bytes / 2 < HISTORY_LIMIT
    assert largest_event < PAYLOAD_LIMIT / 10
    files_after = sum(1 for _ in settings.payload_folder.rglob("*") if _.is_file())
    assert files_after > files_before  # the summaries went to the payload store
    print(
        f"\n{steps} steps: {len(history.events)} events, {history_bytes / 1024:.0f} KiB of "
        f"history (largest event {largest_event / 1024:.0f} KiB) for "
        f"{summaries_bytes / 1024:.0f} KiB of summaries"
    )
