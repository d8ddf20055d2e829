"""The Redis mirror's key layout and checkpoint JSON, in one place."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from pydantic import BaseModel, Field

from longtask.progress import ProgressRecord

CHECKPOINT_TTL_SECONDS = 7 * 24 * 3600
PROGRESS_TTL_SECONDS = 24 * 3600
CHECKPOINT_LIST_LENGTH = 100


def checkpoint_key(checkpoint_id: str) -> str:
    return f"checkpoint:{checkpoint_id}"


def latest_key(task_id: str) -> str:
    return f"task:{task_id}:latest"


def checkpoint_list_key(task_id: str) -> str:
    return f"task:{task_id}:checkpoints"


def progress_key(task_id: str) -> str:
    return f"task:{task_id}:checkpoint"


def checkpoint_id_for(task_id: str, epoch_ms: int) -> str:
    return f"{task_id}_{epoch_ms}"


def epoch_ms_of(checkpoint_id: str) -> int:
    """The millisecond stamp at the end of a checkpoint id (task ids may contain '_')."""
    return int(checkpoint_id.rsplit("_", 1)[1])


def next_checkpoint_ms(now: datetime, previous_ms: int) -> int:
    """Unique and increasing within a task even when two checkpoints share a millisecond."""
    return max(int(now.timestamp() * 1000), previous_ms + 1)


class CheckpointState(BaseModel):
    messages: list[dict[str, Any]] = Field(default_factory=list)
    variables: dict[str, Any] = Field(default_factory=dict)
    current_step: int = 0
    step_results: list[dict[str, Any]] = Field(default_factory=list)


class Checkpoint(BaseModel):
    """Checkpoint JSON; ``partial_response`` and ``error`` appear only when they apply."""

    id: str
    task_id: str
    timestamp: str
    progress: float
    state: CheckpointState
    metadata: dict[str, Any] = Field(default_factory=dict)
    partial_response: str | None = None
    error: str | None = None

    def to_json(self) -> str:
        return self.model_dump_json(exclude_none=True)


class ProgressSnapshot(BaseModel):
    """Value of ``task:{task_id}:checkpoint``: when, and the progress record."""

    timestamp: float
    status: ProgressRecord


class MirrorWrite(BaseModel):
    """One checkpoint and the progress snapshot that goes with it, written together."""

    checkpoint: Checkpoint
    snapshot: ProgressSnapshot
    # The task's last checkpoint (a terminal state or a hand-over): it must not be refused.
    final: bool = False


def iso_utc(moment: datetime) -> str:
    return moment.astimezone(UTC).isoformat().replace("+00:00", "Z")
