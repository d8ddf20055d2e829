"""Mirroring a streamed answer's text so far to Redis as checkpoints with ``partial_response``.

A partial checkpoint is the task's latest checkpoint with the text so far added, so an outside
reader sees the answer grow and a resumed task can continue it. It is written by the running
step, off the stream's path: a slow or absent Redis never holds the answer up.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from datetime import UTC, datetime

from redis.asyncio import Redis
from temporalio import activity

from activities.mirror import write_checkpoint_to
from longtask.checkpoints import (
    Checkpoint,
    MirrorWrite,
    PartialOf,
    ProgressSnapshot,
    checkpoint_id_for,
    checkpoint_key,
    epoch_ms_of,
    iso_utc,
    latest_key,
    progress_key,
)
from longtask.progress import build_record

EVERY_CHUNKS = 500
EVERY_SECONDS = 3.0
WRITE_TIMEOUT = 2.0


async def write_partial(
    redis: Redis,
    task_id: str,
    where: dict[str, str],
    text: str,
    error: str | None = None,
    mirror_messages: bool = True,
) -> bool:
    """One partial checkpoint derived from the task's latest; False if it could not be."""
    latest = await redis.get(latest_key(task_id))
    base_json = await redis.get(checkpoint_key(str(latest))) if latest else None
    if base_json is None:
        # Nothing to add the text to (Redis lost the mirror): the task's next checkpoint
        # rebuilds it, and the text stays safe in the step's heartbeat details meanwhile.
        return False
    snapshot_json = await redis.get(progress_key(task_id))
    now = datetime.now(UTC)
    # The id follows the checkpoint the text extends, whatever this worker's clock says: a
    # clock ahead of the task's would otherwise rank it above every later checkpoint.
    ms = epoch_ms_of(str(latest)) + 1
    base = Checkpoint.model_validate_json(base_json)
    checkpoint = base.model_copy(
        update={
            "id": checkpoint_id_for(task_id, ms),
            "timestamp": iso_utc(now),
            "partial_response": text,
            "error": error,
            "metadata": base.metadata.model_copy(
                update={"partial_for": PartialOf.model_validate(where)}
            ),
        }
    )
    snapshot = (
        ProgressSnapshot.model_validate_json(snapshot_json)
        if snapshot_json
        else ProgressSnapshot(timestamp=0, status=build_record(task_id, 0, 0, 0))
    )
    snapshot = snapshot.model_copy(update={"timestamp": now.timestamp()})
    write = MirrorWrite(checkpoint=checkpoint, snapshot=snapshot)
    return await write_checkpoint_to(redis, write, mirror_messages)


class PartialMirror:
    """Writes the growing answer every 500 chunks or 3 s, one write at a time, never blocking."""

    def __init__(
        self,
        redis: Redis | None,
        task_id: str,
        where: dict[str, str],
        mirror_messages: bool = True,
    ) -> None:
        self._redis = redis
        self._mirror_messages = mirror_messages
        self._task_id = task_id
        self._where = where
        self._last_chunks = 0
        self._last_at = time.monotonic()
        self._writing: asyncio.Task[None] | None = None

    def offer(self, text: str, chunks: int) -> None:
        due = chunks - self._last_chunks >= EVERY_CHUNKS or (
            time.monotonic() - self._last_at >= EVERY_SECONDS
        )
        if not due or (self._writing is not None and not self._writing.done()):
            return
        self._last_chunks = chunks
        self._last_at = time.monotonic()
        self._writing = asyncio.create_task(self._write(text, None))

    async def failed(self, text: str, error: str) -> None:
        """Save the text so far with the error, before the error is raised."""
        if text:
            await self._write(text, error)

    async def _write(self, text: str, error: str | None) -> None:
        if self._redis is None:
            return
        try:
            async with asyncio.timeout(WRITE_TIMEOUT):
                await write_partial(
                    self._redis, self._task_id, self._where, text, error, self._mirror_messages
                )
        except Exception as problem:
            activity.logger.warning("partial answer not mirrored: %s", problem)

    async def close(self) -> None:
        if self._writing is not None and not self._writing.done():
            self._writing.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._writing
