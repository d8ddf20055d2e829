"""The Redis mirror read with raw Redis commands only, checked against the documented layout."""

from __future__ import annotations

import asyncio
import random
from datetime import UTC, datetime

from redis.asyncio import Redis

from activities.mirror import write_checkpoint_to
from longtask.checkpoints import Checkpoint, CheckpointState, MirrorWrite, ProgressSnapshot, iso_utc
from longtask.progress import build_record
from tests.tasks import read_json, read_list, read_text

T0_MS = 1_800_000_000_000


def write_for(task_id: str, ms: int, step: int = 1) -> MirrorWrite:
    record = build_record(task_id, step, 10, 3.0, {"state": "running"})
    moment = datetime.fromtimestamp(ms / 1000, tz=UTC)
    return MirrorWrite(
        checkpoint=Checkpoint(
            id=f"{task_id}_{ms}",
            task_id=task_id,
            timestamp=iso_utc(moment),
            progress=record.progress,
            state=CheckpointState(
                messages=[{"role": "assistant", "content": "so far"}],
                variables={"documents": ["a.pdf"]},
                current_step=step,
                step_results=[{"step": "summarize", "outputs": ["..."]}],
            ),
            metadata={"model": "gpt-4.1", "cost_so_far": 0.0012},
        ),
        snapshot=ProgressSnapshot(timestamp=ms / 1000, status=record),
    )


async def test_one_write_lays_out_every_key_with_its_expiry(redis: Redis) -> None:
    task = f"task_with_underscores_{random.randrange(10**9)}"
    assert await write_checkpoint_to(redis, write_for(task, T0_MS, step=4))
    checkpoint_id = f"{task}_{T0_MS}"
    assert await read_text(redis, f"task:{task}:latest") == checkpoint_id
    assert await redis.type(f"checkpoint:{checkpoint_id}") == "string"
    stored = await read_json(redis, f"checkpoint:{checkpoint_id}")
    assert set(stored) == {"id", "task_id", "timestamp", "progress", "state", "metadata"}
    assert stored["id"] == checkpoint_id and stored["task_id"] == task
    assert stored["timestamp"].endswith("Z")
    assert datetime.fromisoformat(stored["timestamp"]).timestamp() * 1000 == T0_MS
    assert set(stored["state"]) == {"messages", "variables", "current_step", "step_results"}
    assert stored["state"]["current_step"] == 4
    assert stored["progress"] == 40.0
    assert stored["metadata"]["cost_so_far"] == 0.0012
    assert 604790 < await redis.ttl(f"checkpoint:{checkpoint_id}") <= 604800
    # `latest` never outlives the checkpoint it names.
    assert await redis.ttl(f"task:{task}:latest") <= await redis.ttl(f"checkpoint:{checkpoint_id}")
    assert await redis.type(f"task:{task}:checkpoints") == "list"
    assert await read_list(redis, f"task:{task}:checkpoints") == [checkpoint_id]
    progress = await read_json(redis, f"task:{task}:checkpoint")
    assert set(progress) == {"timestamp", "status"}
    assert progress["timestamp"] == T0_MS / 1000
    assert set(progress["status"]) == {
        "task_id", "progress", "step", "total", "elapsed_seconds", "eta_seconds", "metadata"
    }  # fmt: skip
    assert 86390 < await redis.ttl(f"task:{task}:checkpoint") <= 86400


async def test_list_is_newest_first_and_stops_at_100(redis: Redis) -> None:
    task = f"long-{random.randrange(10**9)}"
    for offset in range(105):
        await write_checkpoint_to(redis, write_for(task, T0_MS + offset))
    ids = await read_list(redis, f"task:{task}:checkpoints")
    assert len(ids) == 100
    assert ids[0] == f"{task}_{T0_MS + 104}" and ids[-1] == f"{task}_{T0_MS + 5}"
    assert await read_text(redis, f"task:{task}:latest") == ids[0]


async def test_a_stale_writer_never_moves_latest_back(redis: Redis) -> None:
    task = f"stale-{random.randrange(10**9)}"
    assert await write_checkpoint_to(redis, write_for(task, T0_MS + 10, step=5))
    assert not await write_checkpoint_to(redis, write_for(task, T0_MS + 3, step=2))
    # A second writer of the very same checkpoint finds it there and adds nothing.
    assert await write_checkpoint_to(redis, write_for(task, T0_MS + 10, step=5))
    assert await read_list(redis, f"task:{task}:checkpoints") == [f"{task}_{T0_MS + 10}"]
    assert await read_text(redis, f"task:{task}:latest") == f"{task}_{T0_MS + 10}"
    assert await redis.exists(f"checkpoint:{task}_{T0_MS + 3}") == 0
    status = (await read_json(redis, f"task:{task}:checkpoint"))["status"]
    assert status["step"] == 5


async def test_concurrent_writers_leave_the_newest_and_a_sorted_list(redis: Redis) -> None:
    task = f"race-{random.randrange(10**9)}"
    stamps = [T0_MS + i for i in range(60)]
    random.shuffle(stamps)
    await asyncio.gather(*(write_checkpoint_to(redis, write_for(task, ms)) for ms in stamps))
    assert await read_text(redis, f"task:{task}:latest") == f"{task}_{T0_MS + 59}"
    listed = [int(i.rsplit("_", 1)[1]) for i in await read_list(redis, f"task:{task}:checkpoints")]
    assert listed == sorted(listed, reverse=True)
    for checkpoint_id in await read_list(redis, f"task:{task}:checkpoints"):
        assert await redis.exists(f"checkpoint:{checkpoint_id}") == 1
