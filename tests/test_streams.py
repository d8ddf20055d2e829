"""Streamed answers cut by a fault or a dead worker are continued, not paid for again."""

from __future__ import annotations

import asyncio
import signal
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from redis.asyncio import Redis
from temporalio.client import Client, WorkflowHandle
from temporalio.worker import Worker

from activities.continuation import estimate_tokens
from activities.reporting import ActivityHeartbeat, StepHeartbeat
from longtask.settings import Settings
from longtask.states import TaskState
from longtask.tooling.servers import LlmServer
from longtask.tooling.worker_process import WorkerProcess
from tests.conftest import EXAMPLES
from tests.tasks import read_json, read_list, start

DOCUMENT = EXAMPLES / "incident-postmortem.txt"
REPORT_MODEL = {"model": "gpt-4.1"}
# A long report: 400 numbered words, so any cut and any repeat would show.
REPORT = " ".join(f"finding-{i:03d}" for i in range(400)) + "."


def tail_from(text: str, saved: str, overlap: int = 40) -> str:
    """What a model continuing ``saved`` sends: the rest, repeating the last few words."""
    assert text.startswith(saved), "the saved text is not a prefix of the answer"
    return text[max(len(saved) - overlap, 0) :]


async def report_partials(redis: Redis, task_id: str) -> list[str]:
    texts = []
    for checkpoint_id in await read_list(redis, f"task:{task_id}:checkpoints"):
        checkpoint = await read_json(redis, f"checkpoint:{checkpoint_id}")
        if checkpoint.get("metadata", {}).get("partial_for", {}).get("step") == "report":
            texts.append(checkpoint["partial_response"])
    return texts


async def test_a_stream_cut_by_a_dropped_connection_is_continued(
    client: Client, settings: Settings, worker: Worker, llm: LlmServer, redis: Redis
) -> None:
    # The first attempt gets about 150 words, then the connection drops. The continuation
    # starts back at word 100, repeating the last ~50 words, as models sometimes do.
    word_100 = len(" ".join(REPORT.split(" ")[:100]))
    llm.add({"type": "reply", "text": REPORT, "match": REPORT_MODEL})
    llm.add(
        {"type": "stream_fault", "kind": "disconnect", "after_chunks": 150, "match": REPORT_MODEL}
    )
    llm.add({"type": "reply", "text": REPORT[word_100:], "match": REPORT_MODEL})
    task, handle = await start(client, settings, [DOCUMENT])
    result = await handle.result()

    assert result.state is TaskState.COMPLETED
    assert result.documents[0].report == REPORT
    asked = [r for r in llm.requests() if r["model"] == "gpt-4.1"]
    assert len(asked) == 2
    continued = asked[1]["body"]["messages"]
    assert continued[-2]["role"] == "assistant" and REPORT.startswith(continued[-2]["content"])
    assert result.usage.saved_completion_tokens["gpt-4.1"] == estimate_tokens(
        continued[-2]["content"]
    )
    # The partial text was saved with the error before the retry.
    partials = await report_partials(redis, task.task_id)
    assert partials and all(REPORT.startswith(text) for text in partials)


@pytest.fixture(scope="module")
def slow_llm() -> Iterator[LlmServer]:
    """A server that paces its streams like real generation: 20 ms a chunk."""
    with LlmServer("--stream-chunk-delay-ms", "20") as server:
        yield server


async def pending_report_heartbeat(
    handle: WorkflowHandle[Any, Any], client: Client
) -> StepHeartbeat | None:
    description = await handle.describe()
    for pending in description.raw_description.pending_activities:
        if pending.activity_type.name == "process_documents" and pending.heartbeat_details.payloads:
            values = await client.data_converter.decode(pending.heartbeat_details.payloads)
            steps = ActivityHeartbeat.model_validate(values[0]).steps
            return steps.get("0:report")
    return None


async def test_a_worker_killed_mid_stream_costs_only_the_rest_of_the_answer(
    client: Client,
    settings: Settings,
    slow_llm: LlmServer,
    redis: Redis,
    workers: list[WorkerProcess],
    tmp_path: Path,
) -> None:
    slow_llm.reset()
    on_slow = settings.model_copy(update={"llm_base_url": slow_llm.base_url})
    slow_llm.add({"type": "reply", "text": REPORT, "match": REPORT_MODEL})
    first = WorkerProcess(on_slow, tmp_path / "first.log")
    workers.append(first)
    task, handle = await start(client, on_slow, [DOCUMENT])

    saved = None
    for _ in range(600):
        heartbeat = await pending_report_heartbeat(handle, client)
        if heartbeat and heartbeat.partial_text and len(heartbeat.partial_text.split()) >= 300:
            saved = heartbeat
            break
        await asyncio.sleep(0.05)
    assert saved is not None, "the report never got far enough to be cut"
    first.process.send_signal(signal.SIGKILL)
    first.process.wait(timeout=10)
    # The newest details the server holds are what the next attempt continues from.
    await asyncio.sleep(0.5)
    kept = await pending_report_heartbeat(handle, client)
    assert kept is not None and kept.partial_text
    slow_llm.add(
        {"type": "reply", "text": tail_from(REPORT, kept.partial_text), "match": REPORT_MODEL}
    )

    workers.append(WorkerProcess(on_slow, tmp_path / "second.log"))
    result = await handle.result()

    assert result.documents[0].report == REPORT
    report_usage = result.usage.completion_tokens["gpt-4.1"]
    whole = estimate_tokens(REPORT)
    # Only the continuation was paid for: far less than the whole report again.
    assert report_usage < whole / 2
    assert result.usage.saved_completion_tokens["gpt-4.1"] == estimate_tokens(kept.partial_text)
    partials = await report_partials(redis, task.task_id)
    assert partials and all(REPORT.startswith(text) for text in partials)
