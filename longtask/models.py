"""Inputs and outputs that cross Temporal: workflow input and result, step requests and results."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from pydantic import BaseModel, Field

from longtask.cost import TokenUsage
from longtask.policies import StepKind, TimeoutPolicy
from longtask.progress import ProgressNode, ProgressRecord
from longtask.states import TaskState, TaskStateMachine, Transition


class ModelRoute(BaseModel):
    """Which model serves each step kind; names only, never credentials."""

    embedding: str
    intermediate: str
    reasoning: str
    final: str

    def for_step(self, kind: StepKind) -> str:
        return {
            StepKind.EMBED: self.embedding,
            StepKind.SUMMARIZE: self.intermediate,
            StepKind.REASON: self.reasoning,
            StepKind.REPORT: self.final,
        }[kind]


class CallStats(BaseModel):
    """Provider call attempts of a step or a task, by outcome."""

    attempts: int = 0
    successes: int = 0
    timeouts: int = 0
    errors: int = 0

    def add(self, status: str) -> None:
        self.attempts += 1
        if status == "success":
            self.successes += 1
        elif status == "timeout":
            self.timeouts += 1
        else:
            self.errors += 1

    def merge(self, other: CallStats) -> None:
        self.attempts += other.attempts
        self.successes += other.successes
        self.timeouts += other.timeouts
        self.errors += other.errors


class ResumePoint(BaseModel):
    """Where a new run of a task starts: a checkpoint of an earlier run."""

    checkpoint_id: str
    previous_run_id: str = ""


class TaskInput(BaseModel):
    task_id: str
    paths: list[str] = Field(min_length=1)
    models: ModelRoute
    policy: TimeoutPolicy = Field(default_factory=TimeoutPolicy)
    heartbeat_timeout_seconds: float = 2.0
    document_concurrency: int = 4
    call_concurrency: int = 8
    deadline_seconds: float = 24 * 3600
    resume_from: ResumePoint | None = None
    # Past this many history events the task continues as a new run, carrying its state.
    max_history_events: int = Field(20_000, ge=50, le=50_000)
    # Publish state, progress and cost as search attributes (only where they are registered).
    search_attributes: bool = False
    carried: CarriedState | None = None


class DocumentRef(BaseModel):
    """A document found on disk. Steps re-read the file and check its digest, so page text
    stays out of the workflow history."""

    index: int
    path: str
    name: str
    sha256: str
    pages: int
    chunks: int


class LoadRequest(BaseModel):
    paths: list[str]


class ResumeRequest(BaseModel):
    task_id: str
    checkpoint_id: str


class ResumeState(BaseModel):
    """What a checkpoint says is already done, keyed by ``step_key(path, step)``."""

    results: dict[str, list[str]] = Field(default_factory=dict)
    partials: dict[str, str] = Field(default_factory=dict)
    usage: TokenUsage = Field(default_factory=TokenUsage)


def step_key(path: str, step: StepKind | str) -> str:
    return f"{path}|{StepKind(step).value}"


class StepRequest(BaseModel):
    task_id: str
    document: DocumentRef
    model: str
    policy: TimeoutPolicy
    call_concurrency: int = 8
    summaries: list[str] = Field(default_factory=list)
    key_passages: list[str] = Field(default_factory=list)
    analysis: str = ""
    # Text a streamed step of an earlier run had when it was cut, to continue from.
    partial_response: str = ""


class StepResult(BaseModel):
    kind: StepKind
    document: int
    outputs: list[str]
    usage: TokenUsage
    stats: CallStats = Field(default_factory=CallStats)


class ProgressEvent(BaseModel):
    """Sent by a running step to its task workflow: how far it got, on which attempt."""

    document: int
    kind: StepKind
    done: int
    total: int
    done_items: list[int] = Field(default_factory=list)
    attempt: int = 1
    retrying: bool = False
    stats: CallStats = Field(default_factory=CallStats)


class DocumentReport(BaseModel):
    name: str
    state: TaskState
    report: str = ""
    error: str = ""


class TaskStatus(BaseModel):
    """What the task's query answers: the progress record plus state, log and the nested tree."""

    record: ProgressRecord
    state: TaskState
    transitions: list[Transition]
    tree: ProgressNode
    usage: TokenUsage
    cost_so_far: float
    retrying_steps: list[str] = Field(default_factory=list)
    calls: dict[StepKind, CallStats] = Field(default_factory=dict)


class TaskResult(BaseModel):
    task_id: str
    state: TaskState
    documents: list[DocumentReport]
    usage: TokenUsage
    cost_so_far: float
    calls: dict[StepKind, CallStats] = Field(default_factory=dict)


class CarriedState(BaseModel):
    """What a run hands to the next when its history grows long (continue-as-new)."""

    resume: ResumeState
    machine: TaskStateMachine
    reports: dict[int, DocumentReport] = Field(default_factory=dict)
    stats: dict[str, CallStats] = Field(default_factory=dict)
    messages: list[dict[str, Any]] = Field(default_factory=list)
    started_at: datetime
    last_checkpoint_ms: int = 0
    runs: int = 1


TaskInput.model_rebuild()
