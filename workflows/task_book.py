"""What a task knows about itself: state machine, progress tree, results, cost, attempts.

Kept by the task workflow and changed only by its handlers; deterministic and free of I/O, so
it is the same on every replay. Times come in as arguments from the workflow's clock.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from longtask.checkpoints import (
    Checkpoint,
    CheckpointState,
    MirrorWrite,
    ProgressSnapshot,
    checkpoint_id_for,
    iso_utc,
    next_checkpoint_ms,
)
from longtask.cost import TokenUsage
from longtask.models import (
    CallStats,
    CarriedState,
    DocumentRef,
    DocumentReport,
    ProgressEvent,
    ResumeState,
    StepResult,
    TaskInput,
    TaskResult,
    TaskStatus,
    step_key,
)
from longtask.policies import StepKind
from longtask.progress import ProgressNode, ProgressRecord, build_record
from longtask.states import TaskState, TaskStateMachine
from workflows.task_tree import apply_event, complete_step, document_node


def _key(document: int, kind: StepKind) -> str:
    return f"{document}:{kind.value}"


class TaskBook:
    def __init__(self, task: TaskInput, started_at: datetime) -> None:
        self.task = task
        self.started_at = started_at
        self.machine = TaskStateMachine()
        self.tree = ProgressNode(name=task.task_id)
        self.documents: list[DocumentRef] = []
        self.reports: dict[int, DocumentReport] = {}
        self.usage = TokenUsage()
        self.stats: dict[str, CallStats] = {}
        self.step_results: list[dict[str, Any]] = []
        self.messages: list[dict[str, Any]] = []
        self.finished_steps: set[str] = set()
        self.retrying: set[str] = set()
        self.last_model = ""
        self.last_checkpoint_ms = 0
        self.runs = 1
        self.resume = ResumeState()
        if task.carried is not None:
            self._take_over(task.carried)

    def _take_over(self, carried: CarriedState) -> None:
        """Pick up where the previous run of this task stopped (continue-as-new)."""
        self.started_at = carried.started_at
        self.machine = carried.machine
        self.reports = dict(carried.reports)
        self.stats = dict(carried.stats)
        self.messages = list(carried.messages)
        self.last_checkpoint_ms = carried.last_checkpoint_ms
        self.runs = carried.runs + 1
        self.take_results(carried.resume)

    def take_results(self, resume: ResumeState) -> None:
        """Steps an earlier run finished: skipped here, and their tokens already paid."""
        self.resume = resume
        self.usage.merge(resume.usage)

    def set_documents(self, documents: list[DocumentRef]) -> None:
        self.documents = documents
        self.tree.children = [document_node(document) for document in documents]

    def done_before(self, document: DocumentRef, kind: StepKind) -> list[str] | None:
        return self.resume.results.get(step_key(document.path, kind))

    def partial_before(self, document: DocumentRef, kind: StepKind) -> str:
        return self.resume.partials.get(step_key(document.path, kind), "")

    def go(self, target: TaskState, now: datetime, reason: str) -> None:
        self.machine.go(target, now, reason)

    def follow_retries(self, now: datetime) -> None:
        """Running and retrying differ only by whether some step retries a provider failure."""
        state = self.machine.state
        if state is TaskState.RUNNING and self.retrying:
            self.go(TaskState.RETRYING, now, f"retrying {', '.join(sorted(self.retrying))}")
        elif state is TaskState.RETRYING and not self.retrying:
            self.go(TaskState.RUNNING, now, "retried steps recovered")

    def step_finished(
        self,
        document: DocumentRef,
        kind: StepKind,
        model: str,
        result: StepResult,
        now: datetime,
        ran: bool = True,
    ) -> None:
        """Book a finished step; ``ran`` is False for one an earlier run finished."""
        key = _key(document.index, kind)
        self.finished_steps.add(key)
        self.retrying.discard(key)
        complete_step(self.tree, document, kind)
        self.usage.merge(result.usage)
        self.step_results.append(
            {"document": document.name, "path": document.path, "step": kind.value,
             "outputs": result.outputs}
        )  # fmt: skip
        if ran:
            self.stats[key] = result.stats
            self.last_model = model or self.last_model
            if kind in (StepKind.REASON, StepKind.REPORT):
                self.messages.append(
                    {"role": "assistant", "document": document.name, "step": kind.value,
                     "content": result.outputs[0]}
                )  # fmt: skip
        self.follow_retries(now)

    def recall_finished(self, document: DocumentRef, now: datetime) -> None:
        """Count the steps an earlier run finished for ``document`` as done here too."""
        for kind in StepKind:
            outputs = self.done_before(document, kind)
            if outputs is not None:
                done = StepResult(
                    kind=kind, document=document.index, outputs=outputs, usage=TokenUsage()
                )
                self.step_finished(document, kind, "", done, now, ran=False)

    def document_done(self, document: DocumentRef, report: str) -> None:
        self.reports[document.index] = DocumentReport(
            name=document.name, state=TaskState.COMPLETED, report=report
        )

    def document_failed(
        self,
        document: DocumentRef,
        message: str,
        kind: StepKind | None,
        stats: CallStats | None,
        now: datetime,
    ) -> None:
        """Book a document whose step failed for good, with the attempts that step made."""
        if kind is not None and stats is not None:
            self.stats[_key(document.index, kind)] = stats
        self.reports[document.index] = DocumentReport(
            name=document.name, state=TaskState.FAILED, error=message
        )
        # Its steps are over: none of them is retrying any more.
        self.retrying = {k for k in self.retrying if not k.startswith(f"{document.index}:")}
        self.follow_retries(now)

    def progress(self, event: ProgressEvent, now: datetime) -> bool:
        """Book a running step's progress; False for a late or unknown report."""
        key = _key(event.document, event.kind)
        if key in self.finished_steps or not 0 <= event.document < len(self.documents):
            return False
        apply_event(self.tree, self.documents[event.document], event)
        self.stats[key] = event.stats
        if event.retrying:
            self.retrying.add(key)
        else:
            self.retrying.discard(key)
        self.follow_retries(now)
        return True

    def calls_by_kind(self) -> dict[StepKind, CallStats]:
        totals: dict[StepKind, CallStats] = {}
        for key, stats in self.stats.items():
            totals.setdefault(StepKind(key.split(":", 1)[1]), CallStats()).merge(stats)
        return totals

    def record(self, now: datetime) -> ProgressRecord:
        record = build_record(
            self.task.task_id,
            self.tree.steps_done(),
            self.tree.steps_total(),
            (now - self.started_at).total_seconds(),
            {
                "state": self.machine.state.value,
                "documents": len(self.documents),
                "documents_done": len(self.reports),
                "cost_so_far": self.usage.cost(),
                "runs": self.runs,
            },
        )
        if self.machine.is_terminal and self.machine.state is not TaskState.COMPLETED:
            record.eta_seconds = None  # an ended task will not finish: no ETA to give
        return record

    def details(self, now: datetime) -> str:
        """One line for the Temporal UI's current details of the task."""
        record = self.record(now)
        return (
            f"**{self.machine.state.value}** {record.progress:.2f} % "
            f"({record.step}/{record.total} steps), "
            f"{len(self.reports)}/{len(self.documents)} documents, "
            f"cost ${self.usage.cost():.6f}"
        )

    def status(self, now: datetime) -> TaskStatus:
        return TaskStatus(
            record=self.record(now),
            state=self.machine.state,
            transitions=self.machine.log,
            tree=self.tree.summary(depth=2),
            usage=self.usage,
            cost_so_far=self.usage.cost(),
            retrying_steps=sorted(self.retrying),
            calls=self.calls_by_kind(),
        )

    def result(self) -> TaskResult:
        return TaskResult(
            task_id=self.task.task_id,
            state=self.machine.state,
            documents=[self.reports[i] for i in sorted(self.reports)],
            usage=self.usage,
            cost_so_far=self.usage.cost(),
            calls=self.calls_by_kind(),
        )

    def checkpoint(self, now: datetime, error: str | None = None) -> MirrorWrite:
        """The task as it is now, as a checkpoint with a fresh, increasing id."""
        record = self.record(now)
        self.last_checkpoint_ms = next_checkpoint_ms(now, self.last_checkpoint_ms)
        variables = {
            "state": self.machine.state.value,
            "paths": self.task.paths,
            "documents": [d.name for d in self.documents],
            "reports": {r.name: r.state.value for r in self.reports.values()},
        }
        checkpoint = Checkpoint(
            id=checkpoint_id_for(self.task.task_id, self.last_checkpoint_ms),
            task_id=self.task.task_id,
            timestamp=iso_utc(now),
            progress=record.progress,
            state=CheckpointState(
                messages=self.messages,
                variables=variables,
                current_step=record.step,
                step_results=self.step_results,
            ),
            metadata={
                "model": self.last_model,
                "cost_so_far": self.usage.cost(),
                "tokens": self.usage.total_tokens,
                "usage": self.usage.model_dump(),
            },
            error=error,
        )
        snapshot = ProgressSnapshot(timestamp=now.timestamp(), status=record)
        return MirrorWrite(checkpoint=checkpoint, snapshot=snapshot)

    def carry_over(self) -> TaskInput:
        """This task's input for its next run: everything done so far travels with it."""
        finished = {step_key(r["path"], r["step"]): list(r["outputs"]) for r in self.step_results}
        carried = CarriedState(
            resume=ResumeState(results=finished, usage=self.usage),
            machine=self.machine,
            reports=self.reports,
            stats=self.stats,
            messages=self.messages,
            started_at=self.started_at,
            last_checkpoint_ms=self.last_checkpoint_ms,
            runs=self.runs,
        )
        return self.task.model_copy(update={"carried": carried, "resume_from": None})
