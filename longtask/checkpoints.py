"""The Redis mirror's key layout and checkpoint JSON, in one place."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from longtask.cost import LedgerEntry, TokenUsage
from longtask.progress import ProgressNode, ProgressRecord

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


class StepRecord(BaseModel):
    """One finished step or call in a checkpoint's ``step_results``.

    The document task names its document (``document``, ``path``) and step kind; a long task
    its call number, kind (``model``, ``embed``, ``tool``) and model. ``outputs`` is left out
    of a mirror that keeps no text (LTM_MIRROR_MESSAGES=false).
    """

    model_config = ConfigDict(extra="allow")

    step: str
    outputs: list[str] | None = None
    document: str | None = None
    path: str | None = None
    call: int | None = None
    kind: str | None = None
    model: str | None = None


class DocumentVariables(BaseModel):
    """The document task's ``variables``: its state, its documents and how each ended.

    A task of at most 100 documents names them and their reports' states; a larger one counts
    them and lists the finished ones as index ranges (``finished``, ``documents_digest``). A
    run still finding its documents says so (``phase``) and carries what earlier runs did.
    """

    model_config = ConfigDict(extra="allow")

    state: str | None = None
    paths: list[str] | None = None
    phase: str | None = None
    documents: list[str] | int | None = None
    reports: dict[str, str] | None = None
    documents_digest: str | None = None
    finished: str | None = None
    failed: dict[str, str] | None = None
    failed_count: int | None = None
    resume_from: str | None = None


class PartialOf(BaseModel):
    """Which streamed answer a checkpoint's ``partial_response`` is the text so far of."""

    model_config = ConfigDict(extra="allow")

    step: str
    document: str | None = None
    path: str | None = None
    call: str | None = None


class CheckpointMetadata(BaseModel):
    """A checkpoint's ``metadata``: model, cost and tokens, the ledger, and for a long task its
    state, call count and progress tree."""

    model_config = ConfigDict(extra="allow")

    model: str = ""
    cost_so_far: float = 0.0
    tokens: int = 0
    usage: TokenUsage = Field(default_factory=TokenUsage)
    ledger: list[LedgerEntry] = Field(default_factory=list)
    # The task's elapsed time at the checkpoint: a resumed run's clock goes on from it.
    elapsed_seconds: float | None = None
    state: str | None = None
    calls: int | None = None
    progress_tree: ProgressNode | None = None
    # A checkpoint of a streamed answer's text so far, and how long that text is.
    partial_for: PartialOf | None = None
    partial_chars: int | None = None


class CheckpointState(BaseModel):
    messages: list[dict[str, Any]] = Field(default_factory=list)
    # The task's own state: a long task's ``ctx.variables``; ``DocumentVariables`` for the
    # document task.
    variables: dict[str, Any] = Field(default_factory=dict)
    current_step: int = 0
    step_results: list[StepRecord] = Field(default_factory=list)


class Checkpoint(BaseModel):
    """Checkpoint JSON; ``partial_response`` and ``error`` appear only when they apply."""

    id: str
    task_id: str
    timestamp: str
    progress: float
    state: CheckpointState
    metadata: CheckpointMetadata = Field(default_factory=CheckpointMetadata)
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
