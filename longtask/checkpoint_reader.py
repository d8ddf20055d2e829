"""Reading the Redis mirror: the small read API for outside readers and for resuming tasks.

resume_task(redis, task_id)
    {"can_resume": true, "checkpoint_id", "progress", "state", "metadata"}
    or {"can_resume": false, "reason": "no checkpoint found"}
load_checkpoint(redis, task_id, checkpoint_id=None)
    the task's newest checkpoint, or the one named; None when Redis holds no such checkpoint
list_checkpoints(redis, task_id)
    the ids of the task's checkpoints, newest first (at most the newest 100)
"""

from __future__ import annotations

from typing import Any

from redis.asyncio import Redis

from longtask.checkpoints import Checkpoint, checkpoint_key, checkpoint_list_key, latest_key
from longtask.task_ids import is_checkpoint_of


async def load_checkpoint(
    redis: Redis, task_id: str, checkpoint_id: str | None = None
) -> Checkpoint | None:
    """A checkpoint of ``task_id``: the newest, or ``checkpoint_id`` if it belongs to the task."""
    if checkpoint_id is None:
        latest = await redis.get(latest_key(task_id))
        if latest is None:
            return None
        checkpoint_id = latest.decode() if isinstance(latest, bytes) else latest
    if not is_checkpoint_of(checkpoint_id, task_id):
        return None
    raw = await redis.get(checkpoint_key(checkpoint_id))
    if raw is None:
        return None
    checkpoint = Checkpoint.model_validate_json(raw)
    # The id says whose it is; the body must agree, or it is not this task's to carry on.
    return checkpoint if checkpoint.task_id == task_id else None


async def list_checkpoints(redis: Redis, task_id: str) -> list[str]:
    """The ids of ``task_id``'s checkpoints, newest first; only the task's own."""
    ids = await redis.lrange(checkpoint_list_key(task_id), 0, -1)
    names = [i.decode() if isinstance(i, bytes) else str(i) for i in ids]
    return [name for name in names if is_checkpoint_of(name, task_id)]


async def resume_task(redis: Redis, task_id: str) -> dict[str, Any]:
    """Whether ``task_id`` can resume, and from where."""
    checkpoint = await load_checkpoint(redis, task_id)
    if checkpoint is None:
        return {"can_resume": False, "reason": "no checkpoint found"}
    return {
        "can_resume": True,
        "checkpoint_id": checkpoint.id,
        "progress": checkpoint.progress,
        "state": checkpoint.state.model_dump(),
        "metadata": checkpoint.metadata,
    }
