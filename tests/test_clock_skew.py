"""A worker whose clock runs ahead never decides which checkpoint is the newest."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import libfaketime
import pytest
from redis.asyncio import Redis
from temporalio.client import Client

from longtask.checkpoints import epoch_ms_of
from longtask.settings import Settings
from longtask.states import TaskState
from longtask.tooling.servers import LlmServer
from longtask.tooling.worker_process import WorkerProcess
from tests.tasks import read_json, read_list, read_text, start, write_documents

REPORT_MODEL = {"model": "gpt-4.1"}
# A long report streamed at 20 ms a chunk: several partial-answer checkpoints on the way.
REPORT = " ".join(f"finding-{i:03d}" for i in range(400)) + "."
AHEAD = "+120s"


def faked_clock_env() -> dict[str, str]:
    """Environment that sets a process's wall clock 120 s ahead (libfaketime, LD_PRELOAD)."""
    library = Path(libfaketime.__file__).parent / "vendor/libfaketime/src/libfaketime.so.1"
    assert library.exists(), library
    return {
        "LD_PRELOAD": str(library),
        "FAKETIME": AHEAD,
        "FAKETIME_DONT_FAKE_MONOTONIC": "1",
        "FAKETIME_DONT_RESET": "1",
    }


@pytest.fixture(scope="module")
def paced_llm() -> Iterator[LlmServer]:
    with LlmServer("--stream-chunk-delay-ms", "20") as server:
        yield server


async def test_partial_answers_from_a_clock_ahead_never_hide_later_checkpoints(
    client: Client,
    settings: Settings,
    paced_llm: LlmServer,
    redis: Redis,
    workers: list[WorkerProcess],
    tmp_path: Path,
) -> None:
    paced_llm.reset()
    on_paced = settings.model_copy(update={"llm_base_url": paced_llm.base_url})
    paced_llm.add({"type": "reply", "text": REPORT, "match": REPORT_MODEL})
    paced_llm.add({"type": "reply", "text": REPORT, "match": REPORT_MODEL})
    workers.append(WorkerProcess(on_paced, tmp_path / "ahead.log", extra_env=faked_clock_env()))
    paths = write_documents(tmp_path / "docs", count=2, pages=2)
    task, handle = await start(client, on_paced, paths, document_concurrency=1)

    result = await handle.result()
    assert result.state is TaskState.COMPLETED
    read_at_ms = int(time.time() * 1000)

    listed = await read_list(redis, f"task:{task.task_id}:checkpoints")
    partials = []
    for checkpoint_id in listed:
        checkpoint = await read_json(redis, f"checkpoint:{checkpoint_id}")
        if checkpoint.get("partial_response"):
            partials.append(checkpoint_id)
        # No id from the worker's clock: none lies in the future.
        assert epoch_ms_of(checkpoint_id) <= read_at_ms, checkpoint_id
    assert partials, "the reports streamed without a partial-answer checkpoint"
    latest = await read_text(redis, f"task:{task.task_id}:latest")
    final = await read_json(redis, f"checkpoint:{latest}")
    assert final["state"]["variables"]["state"] == "completed"
    assert final["progress"] == 100.0
    # Every checkpoint the task took after the first report is in the list, in order.
    stamps = [epoch_ms_of(checkpoint_id) for checkpoint_id in listed]
    assert stamps == sorted(stamps, reverse=True)
