"""LTM_MIRROR_MESSAGES=false: the Redis mirror keeps ids, structure and counters, and no text."""

from __future__ import annotations

import uuid
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from redis.asyncio import Redis
from temporalio.client import Client
from temporalio.worker import Worker

from activities.mirror import WITHHELD, resume_state_of, without_text, write_checkpoint_to
from longtask.checkpoints import Checkpoint, CheckpointState, MirrorWrite, ProgressSnapshot
from longtask.progress import build_record
from longtask.settings import Settings
from longtask.states import TaskState
from longtask.tooling.servers import LlmServer
from longtask.tooling.worker_process import WorkerProcess
from tests.tasks import read_json, read_list, read_text, start

REPORT_MODEL = {"model": "gpt-4.1"}


async def redis_values(redis: Redis) -> str:
    """Every key and value in the database, whatever its type, as one text."""
    readers: dict[str, Callable[[str], Awaitable[Any]]] = {
        "string": redis.get,
        "list": lambda key: redis.lrange(key, 0, -1),
        "hash": redis.hgetall,
        "set": redis.smembers,
        "zset": lambda key: redis.zrange(key, 0, -1, withscores=True),
    }
    values: list[str] = []
    async for key in redis.scan_iter():
        kind = await redis.type(key)
        assert kind in readers or kind == "none", f"{key!r} has type {kind!r}, not read here"
        if kind in readers:
            values.append(f"{key!r} {await readers[kind](key)!r}")
    return "\n".join(values)


def private_document(folder: Path, marker: str) -> Path:
    """A one-page document every passage of which carries ``marker``."""
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "board-memo.txt"
    path.write_text(
        "\n\n".join(
            f"Confidential {marker}: in region {n} the unannounced plan moves {n * 7} staff."
            for n in range(12)
        )
    )
    return path


def script_answers(llm: LlmServer, marker: str) -> str:
    """A reasoning answer and a 400-word report that carry ``marker``, the report cut once
    after 150 chunks, so a partial answer and an error go to the mirror too."""
    report = " ".join(f"{marker}-finding-{i:03d}" for i in range(400)) + "."
    word_100 = len(" ".join(report.split(" ")[:100]))
    reasoning = {"model": "gemini-2.5-flash"}
    llm.add({"type": "reply", "text": f"Reasoning over {marker} passages.", "match": reasoning})
    llm.add({"type": "reply", "text": report, "match": REPORT_MODEL})
    llm.add(
        {"type": "stream_fault", "kind": "disconnect", "after_chunks": 150, "match": REPORT_MODEL}
    )
    llm.add({"type": "reply", "text": report[word_100:], "match": REPORT_MODEL})
    return report


async def checkpoints_of(redis: Redis, task_id: str) -> list[dict[str, Any]]:
    ids = await read_list(redis, f"task:{task_id}:checkpoints")
    return [await read_json(redis, f"checkpoint:{i}") for i in ids]


async def test_with_messages_off_no_text_of_the_task_reaches_redis(
    client: Client,
    settings: Settings,
    llm: LlmServer,
    redis: Redis,
    workers: list[WorkerProcess],
    tmp_path: Path,
) -> None:
    marker = f"secret{uuid.uuid4().hex[:8]}"
    document = private_document(tmp_path / "docs", marker)
    report = script_answers(llm, marker)
    # Configured the way an operator would: by the worker's environment.
    env = {"LTM_MIRROR_MESSAGES": "false"}
    workers.append(WorkerProcess(settings, tmp_path / "worker.log", extra_env=env))
    task, handle = await start(client, settings, [document])
    result = await handle.result()

    # The task itself is untouched: the whole report comes back through Temporal.
    assert result.state is TaskState.COMPLETED
    assert result.documents[0].report == report

    everything = await redis_values(redis)
    assert marker not in everything  # passages, page summaries, reasoning, report, partials
    ours = await checkpoints_of(redis, task.task_id)
    ours_text = str(ours)
    assert "Connection error" not in ours_text and "Simulated success" not in ours_text

    # Ids, structure, progress and counters stay.
    latest = await read_text(redis, f"task:{task.task_id}:latest")
    final = await read_json(redis, f"checkpoint:{latest}")
    assert final["progress"] == 100.0
    assert final["metadata"]["cost_so_far"] == result.cost_so_far
    variables = final["state"]["variables"]
    assert variables["state"] == "completed"
    assert variables["documents"] == ["board-memo.txt"]
    steps = final["state"]["step_results"]
    assert {r["step"] for r in steps} == {"embed", "summarize", "reason", "report"}
    assert all(set(r) == {"document", "path", "step"} for r in steps)
    messages = final["state"]["messages"]
    assert [m["step"] for m in messages] == ["reason", "report"]
    assert all("content" not in m for m in messages)
    # The cut report left a partial checkpoint: its length and its error's presence only.
    partials = [c for c in ours if "partial_for" in c["metadata"]]
    assert partials and all("partial_response" not in c for c in partials)
    assert all(c["metadata"]["partial_for"]["step"] == "report" for c in partials)
    assert all("partial_chars" in c["metadata"] for c in partials)
    assert any(c.get("error") == WITHHELD for c in partials)
    snapshot = await read_json(redis, f"task:{task.task_id}:checkpoint")
    assert snapshot["status"]["progress"] == 100.0


async def test_by_default_the_mirror_carries_the_text(
    client: Client, settings: Settings, worker: Worker, llm: LlmServer, redis: Redis, tmp_path: Path
) -> None:
    """The same task with the default setting: the scan above does find the text when it is
    there, so its silence with the setting off means something."""
    marker = f"open{uuid.uuid4().hex[:8]}"
    document = private_document(tmp_path / "docs", marker)
    script_answers(llm, marker)
    task, handle = await start(client, settings, [document])
    assert (await handle.result()).state is TaskState.COMPLETED

    ours = str(await checkpoints_of(redis, task.task_id))
    assert f"Confidential {marker}: in region" in ours  # key passages of the embed step
    assert f"Reasoning over {marker} passages." in ours
    assert f"{marker}-finding-399." in ours
    assert "Connection error" in ours
    assert marker in await redis_values(redis)


STEP = {"document": "a.pdf", "path": "/in/a.pdf", "step": "summarize"}
MESSAGE = {"role": "assistant", "document": "a.pdf", "step": "reason"}


def a_write(task_id: str) -> MirrorWrite:
    """A checkpoint with text in every field that can hold some."""
    record = build_record(task_id, 3, 10, 2.0, {"state": "failed"})
    where = {"document": "a.pdf", "path": "/in/a.pdf", "step": "report"}
    state = CheckpointState(
        messages=[{**MESSAGE, "content": "the merger closes in May"}],
        variables={"state": "failed", "failed": {"b.pdf": "summarize step: the merger"}},
        current_step=3,
        step_results=[{**STEP, "outputs": ["the merger closes"]}],
    )
    return MirrorWrite(
        checkpoint=Checkpoint(
            id=f"{task_id}_1800000000000",
            task_id=task_id,
            timestamp="2027-01-15T08:00:00Z",
            progress=record.progress,
            state=state,
            metadata={"cost_so_far": 0.5, "tokens": 900, "partial_for": where},
            partial_response="The merger",
            error="report step of a.pdf: provider said 'the merger is secret'",
        ),
        snapshot=ProgressSnapshot(timestamp=1.0, status=record),
    )


async def test_every_text_field_is_left_out_and_resume_then_redoes_the_steps(
    redis: Redis,
) -> None:
    task_id = f"privacy-{uuid.uuid4().hex[:8]}"
    write = a_write(task_id)
    assert await write_checkpoint_to(redis, write, mirror_messages=False)
    stored = await read_text(redis, f"checkpoint:{write.checkpoint.id}")
    assert "merger" not in stored
    kept = Checkpoint.model_validate_json(stored)
    assert kept.state.messages == [MESSAGE]
    assert [r.model_dump(exclude_none=True) for r in kept.state.step_results] == [STEP]
    assert kept.state.variables == {"state": "failed", "failed": {"b.pdf": WITHHELD}}
    assert kept.partial_response is None and kept.error == WITHHELD
    assert kept.metadata.partial_chars == len("The merger")
    assert (kept.metadata.cost_so_far, kept.metadata.tokens) == (0.5, 900)
    # Nothing to skip or continue from such a checkpoint: a resumed run makes those calls again.
    resumed = resume_state_of(kept)
    assert not resumed.results and not resumed.partials
    # The full checkpoint, as written with the setting on (the default), keeps all of it.
    assert resume_state_of(write.checkpoint).partials
    assert without_text(write).checkpoint.state.variables["state"] == "failed"
    other = a_write(f"privacy-{uuid.uuid4().hex[:8]}")
    assert await write_checkpoint_to(redis, other, mirror_messages=True)
    assert "merger" in await read_text(redis, f"checkpoint:{other.checkpoint.id}")
