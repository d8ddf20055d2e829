"""Inputs and outputs that cross Temporal: workflow input and result, step requests and results."""

from __future__ import annotations

import hashlib
import re
from datetime import datetime
from pathlib import PurePath
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from longtask.cost import DEFAULT_PRICES_PER_MILLION, CostLedger, Price, TaskBudget, TokenUsage
from longtask.policies import StepKind, TimeoutPolicy
from longtask.progress import ProgressNode, ProgressRecord
from longtask.states import TaskState, TaskStateMachine, Transition
from longtask.text import embed_batches


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
    # A deadline of inf or nan would never pass (nor fire): every number here is finite.
    model_config = ConfigDict(allow_inf_nan=False)

    task_id: str
    paths: list[str] = Field(min_length=1)
    models: ModelRoute
    policy: TimeoutPolicy = Field(default_factory=TimeoutPolicy)
    heartbeat_timeout_seconds: float = Field(2.0, gt=0)
    # Documents in flight at most, and documents one batch activity carries at most.
    document_concurrency: int = 4
    batch_documents: int = Field(16, ge=1, le=256)
    call_concurrency: int = 8
    budget: TaskBudget = Field(default_factory=TaskBudget)
    # US dollars per million tokens per model (SPEC section 7), fixed for the task's lifetime.
    prices: dict[str, Price] = Field(default_factory=lambda: dict(DEFAULT_PRICES_PER_MILLION))
    deadline_seconds: float = Field(24 * 3600, gt=0)
    resume_from: ResumePoint | None = None
    # Past this many history events the task continues as a new run, carrying its state.
    max_history_events: int = Field(20_000, ge=50, le=50_000)
    # Publish state, progress and cost as search attributes (only where they are registered).
    search_attributes: bool = False
    # Check each model of the route with one tiny call before any document's first step, so
    # an unknown model or a refused key ends the task before anything is paid for. Off for
    # tasks begun before the check existed.
    check_models: bool = False
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

    def calls(self, kind: StepKind) -> int:
        """Provider calls a step makes for this document: the steps it adds to the total."""
        if kind is StepKind.EMBED:
            return embed_batches(self.chunks)
        if kind is StepKind.SUMMARIZE:
            return self.pages
        return 1


_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")


def _safe(name: str) -> str:
    return _UNSAFE.sub("_", name).strip("._") or "_"


def report_file_of(task_id: str, document: DocumentRef) -> str:
    """Where a document's report goes, relative to the report folder; the same on every
    worker, and distinct for documents of the same name in different folders."""
    return f"{_safe(task_id)}/{document.index:06d}-{_safe(PurePath(document.name).stem)}.md"


def documents_digest(documents: list[DocumentRef]) -> str:
    """Names the exact list of documents a task works on (paths and contents, in order)."""
    lines = "\n".join(f"{d.index}|{d.path}|{d.sha256}" for d in documents)
    return hashlib.sha256(lines.encode()).hexdigest()


class LoadRequest(BaseModel):
    paths: list[str]


class ResumeRequest(BaseModel):
    task_id: str
    checkpoint_id: str


class ResumeState(BaseModel):
    """What a checkpoint says is already done, keyed by ``step_key(path, step)``.

    Large tasks list their finished documents as index ranges of the document list whose
    digest is ``documents_digest`` instead of every step result (see TaskBook.checkpoint).
    """

    results: dict[str, list[str]] = Field(default_factory=dict)
    partials: dict[str, str] = Field(default_factory=dict)
    usage: TokenUsage = Field(default_factory=TokenUsage)
    ledger: CostLedger = Field(default_factory=CostLedger)
    finished: str = ""
    documents_digest: str = ""
    # The task's elapsed time at the checkpoint: the resumed run's clock goes on from it.
    elapsed_seconds: float = Field(0.0, ge=0)


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
    ledger: CostLedger = Field(default_factory=CostLedger)
    model: str = ""


class ModelCheckResult(BaseModel):
    """What checking a task's models cost: one tiny call per model, booked like any other."""

    usage: TokenUsage = Field(default_factory=TokenUsage)
    ledger: CostLedger = Field(default_factory=CostLedger)


class BatchRequest(BaseModel):
    """Several documents, each through every step, in one activity (see activities/batch.py)."""

    task_id: str
    batch: int
    documents: list[DocumentRef]
    models: ModelRoute
    policy: TimeoutPolicy
    call_concurrency: int = 8
    # Step results and cut streams of an earlier run, keyed by ``step_key(path, step)``.
    done: dict[str, list[str]] = Field(default_factory=dict)
    partials: dict[str, str] = Field(default_factory=dict)
    # Set when the batch takes more documents from its task as its own end (workflows/
    # document_task.py, ``take_documents``): at most ``places`` of them side by side, at most
    # ``most`` in all. Unset: every document of ``documents`` at once, and no more.
    places: int | None = Field(None, ge=1)
    most: int | None = Field(None, ge=1)
    # A large task keeps no page summaries or key passages of an ended document, and reads
    # its report from the report file: its outcome leaves them out (history stays small).
    compact_outcomes: bool = False
    # The batch asks for documents with ASK_DOCUMENTS_SIGNAL and reads the answer with
    # TAKEN_DOCUMENTS_QUERY; unset, with TAKE_DOCUMENTS_UPDATE (tasks begun before).
    asks_by_signal: bool = False


class DocumentOutcome(BaseModel):
    """How one document of a batch ended, with every step it ran."""

    index: int
    state: TaskState
    report: str = ""
    report_file: str = ""
    error: str = ""
    error_type: str = ""
    steps: list[StepResult] = Field(default_factory=list)


class BatchResult(BaseModel):
    """How a batch ended. A batch cut by a cancel answers with what it had; one that fails for
    good carries what its steps paid, without their texts, in its failure's details."""

    batch: int
    outcomes: list[DocumentOutcome]
    # Steps of documents the batch did not end: finished ones with their outputs (a later run
    # skips them), the others without outputs, for the tokens and attempts they paid.
    unended: list[StepResult] = Field(default_factory=list)


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
    # Tokens the step paid so far: the task's cost and budget follow running steps too.
    usage: TokenUsage = Field(default_factory=TokenUsage)


class TakeDocuments(BaseModel):
    """A running batch hands its task the documents it ended since it last asked and asks
    for ``want`` more for its free places, or (``again``, a new attempt of the batch) for
    those it took before and has not ended."""

    batch: int
    want: int = Field(0, ge=0)
    again: bool = False
    ended: list[DocumentOutcome] = Field(default_factory=list)
    # The progress of its running steps, in place of a signal of its own.
    events: list[ProgressEvent] = Field(default_factory=list)
    # Names an ask sent as a signal: its answer is read by this id, and a signal sent twice
    # (a retried RPC) is answered once.
    ask_id: str = ""


class TakenDocuments(BaseModel):
    """Documents handed to a batch, with what an earlier run of the task finished of them;
    ``ended``: documents of the batch the task already has (a new attempt skips them)."""

    documents: list[DocumentRef] = Field(default_factory=list)
    done: dict[str, list[str]] = Field(default_factory=dict)
    partials: dict[str, str] = Field(default_factory=dict)
    ended: list[int] = Field(default_factory=list)
    # False once the task is paused or stopping: the batch starts none of the documents it
    # holds in reserve (they go back to the task when it ends) and takes no more.
    go: bool = True


class DocumentReport(BaseModel):
    name: str
    state: TaskState
    # Large tasks keep report text out of the workflow: it is in ``report_file`` (relative to
    # the report folder, LTM_REPORT_DIR).
    report: str = ""
    report_file: str = ""
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
    ledger: CostLedger = Field(default_factory=CostLedger)
    documents: int = 0
    documents_done: int = 0
    documents_failed: int = 0


class TaskResult(BaseModel):
    task_id: str
    state: TaskState
    documents: list[DocumentReport]
    usage: TokenUsage
    cost_so_far: float
    calls: dict[StepKind, CallStats] = Field(default_factory=dict)
    ledger: CostLedger = Field(default_factory=CostLedger)
    reason: str = ""


class CarriedState(BaseModel):
    """What a run hands to the next when its history grows long (continue-as-new)."""

    resume: ResumeState
    machine: TaskStateMachine
    reports: dict[int, DocumentReport] = Field(default_factory=dict)
    stats: dict[str, CallStats] = Field(default_factory=dict)
    ledger: CostLedger = Field(default_factory=CostLedger)
    messages: list[dict[str, Any]] = Field(default_factory=list)
    started_at: datetime
    last_checkpoint_ms: int = 0
    runs: int = 1
    # Progress when the previous run ended: what the next run shows until it has found the
    # documents again.
    steps_done: int = 0
    steps_total: int = 0
    documents: int = 0
    documents_digest: str = ""


TaskInput.model_rebuild()
