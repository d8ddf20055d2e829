"""What a task knows about itself: state machine, progress tree, results, cost, attempts.

Kept by the task workflow and changed only by its handlers; deterministic and free of I/O, so
it is the same on every replay. Times come in as arguments from the workflow's clock.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from longtask.checkpoints import (
    Checkpoint,
    CheckpointMetadata,
    CheckpointState,
    DocumentVariables,
    MirrorWrite,
    ProgressSnapshot,
    StepRecord,
    checkpoint_id_for,
    iso_utc,
    next_checkpoint_ms,
)
from longtask.cost import CostLedger, TokenUsage
from longtask.index_ranges import from_ranges, to_ranges
from longtask.models import (
    BatchResult,
    CallStats,
    CarriedState,
    DocumentOutcome,
    DocumentRef,
    DocumentReport,
    ProgressEvent,
    ResumeState,
    StepResult,
    TaskInput,
    TaskResult,
    TaskStatus,
    documents_digest,
    report_file_of,
    step_key,
)
from longtask.policies import StepKind
from longtask.progress import (
    ENDED_NODE,
    WAITING_NODE,
    ProgressNode,
    ProgressRecord,
    build_record,
    progress_text,
)
from longtask.states import TaskState, TaskStateMachine
from workflows.checkpoint_texts import messages_beside, step_results_of
from workflows.task_tree import apply_event, complete_step, document_node

# Up to this many documents, a task keeps every step result and report text in its state
# and checkpoints. Beyond it, finished documents are index ranges in checkpoints and their
# reports are files (activities/report_files.py): a checkpoint stays a few kilobytes.
INLINE_DOCUMENTS = 100
# The record's ``metadata.phase`` while a run has not found its documents yet.
FINDING_DOCUMENTS = "finding documents"
# Conversation messages a checkpoint keeps: the newest ones; every report is kept in full.
MESSAGES_KEPT = 100


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
        self.ledger = CostLedger()
        # Tokens of steps still running, as their last progress report said.
        self.running_usage: dict[str, TokenUsage] = {}
        self.stats: dict[str, CallStats] = {}
        self.step_results: dict[int, list[StepRecord]] = {}
        self.messages: list[dict[str, Any]] = []
        self.in_flight: set[int] = set()
        # Steps done by documents that ended: counted once, so the record never walks them.
        self.ended_steps = 0
        self.ended_total = 0
        self.steps_total = 0
        self.finished_steps: set[str] = set()
        self.retrying: set[str] = set()
        self.last_model = ""
        self.last_checkpoint_ms = 0
        self.runs = 1
        self.resume = ResumeState()
        # Time the task ran before this run began (a resume): its elapsed time goes on from it.
        self.elapsed_before = 0.0
        # Until the documents are found (a large folder takes a while, and a continued run
        # finds them again), the record shows this run's phase and what the last run had done.
        self.documents_known = False
        self.carried_figures = (0, 0, 0)
        self.carried_digest = ""
        if task.carried is not None:
            self._take_over(task.carried)

    def _take_over(self, carried: CarriedState) -> None:
        """Pick up where the previous run of this task stopped (continue-as-new)."""
        self.started_at = carried.started_at
        self.machine = carried.machine
        self.reports = dict(carried.reports)
        self.stats = dict(carried.stats)
        self.ledger = carried.ledger
        self.messages = list(carried.messages)
        self.last_checkpoint_ms = carried.last_checkpoint_ms
        self.runs = carried.runs + 1
        self.carried_figures = (carried.steps_done, carried.steps_total, carried.documents)
        self.carried_digest = carried.documents_digest
        self.take_results(carried.resume)

    # Checkpoints follow the cadence (a finished step, 10 %, 10 steps, 30 s), not each report.
    every_change = False

    @property
    def inline(self) -> bool:
        return len(self.documents) <= INLINE_DOCUMENTS

    def take_results(self, resume: ResumeState) -> None:
        """Steps an earlier run finished: skipped here, and their tokens already paid."""
        self.resume = resume
        self.elapsed_before = resume.elapsed_seconds
        self.usage.merge(resume.usage)
        self.ledger.merge(resume.ledger)

    def set_documents(self, documents: list[DocumentRef], now: datetime) -> None:
        self.documents = documents
        self.documents_known = True
        self.tree.children = [document_node(document) for document in documents]
        self.steps_total = self.tree.steps_total()
        # Documents an earlier run of this task (continue-as-new) ended.
        for index, report in sorted(self.reports.items()):
            document = documents[index]
            self.recall_finished(document, now)
            if report.state is TaskState.COMPLETED:
                self._complete_document(document)
            self._ended(index)
        self._recall_finished_ranges(now)

    def _recall_finished_ranges(self, now: datetime) -> None:
        """Documents a large task's checkpoint lists as finished, if the list is the same."""
        if not self.resume.finished:
            return
        if self.resume.documents_digest != documents_digest(self.documents):
            self.messages.append(
                {"role": "system", "content": "documents changed since the checkpoint: "
                 "finished documents are done again"}
            )  # fmt: skip
            return
        for index in sorted(from_ranges(self.resume.finished)):
            if 0 <= index < len(self.documents) and index not in self.reports:
                document = self.documents[index]
                self._complete_document(document)
                self.reports[index] = DocumentReport(
                    name=document.name,
                    state=TaskState.COMPLETED,
                    report_file=report_file_of(self.task.task_id, document),
                )
                self._ended(index)

    def document_started(self, index: int) -> None:
        self.in_flight.add(index)

    def document_put_back(self, index: int) -> None:
        """A document handed to a batch that ended without it: it waits again."""
        self.in_flight.discard(index)

    def _ended(self, index: int) -> None:
        self.in_flight.discard(index)
        node = self.tree.children[index]
        self.ended_steps += node.steps_done()
        self.ended_total += node.steps_total()
        if not self.inline:
            self.step_results.pop(index, None)

    def steps_done(self) -> int:
        running = sum(self.tree.children[i].steps_done() for i in self.in_flight)
        return self.ended_steps + running

    def total_usage(self) -> TokenUsage:
        """Tokens of finished steps and of those still running."""
        total = TokenUsage()
        total.merge(self.usage)
        for running in self.running_usage.values():
            total.merge(running)
        return total

    def cost(self) -> float:
        return self.total_usage().cost(self.task.prices)

    def budget_reached(self) -> str | None:
        budget = self.task.budget
        if budget.max_cost_usd is None and budget.max_tokens is None:
            return None  # checked on every progress report: skip the sums when unlimited
        return budget.exceeded_by(self.total_usage(), self.task.prices)

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
        self.running_usage.pop(key, None)
        complete_step(self.tree, document, kind)
        self.usage.merge(result.usage)
        self.ledger.merge(result.ledger)
        self.step_results.setdefault(document.index, []).append(
            StepRecord(document=document.name, path=document.path, step=kind.value,
                       outputs=result.outputs)
        )  # fmt: skip
        if ran:
            self.stats[key] = result.stats
            self.last_model = model or result.model or self.last_model
            if kind in (StepKind.REASON, StepKind.REPORT):
                self.messages.append(
                    {"role": "assistant", "document": document.name, "step": kind.value,
                     "content": result.outputs[0]}
                )  # fmt: skip
                del self.messages[:-MESSAGES_KEPT]
        self.follow_retries(now)

    def recall_finished(self, document: DocumentRef, now: datetime) -> None:
        """Count the steps an earlier run finished for ``document`` as done here too."""
        for kind in StepKind:
            self._recall_step(document, kind, now)

    def _recall_step(self, document: DocumentRef, kind: StepKind, now: datetime) -> None:
        outputs = self.done_before(document, kind)
        if outputs is not None:
            done = StepResult(
                kind=kind, document=document.index, outputs=outputs, usage=TokenUsage()
            )
            self.step_finished(document, kind, "", done, now, ran=False)

    def _complete_document(self, document: DocumentRef) -> None:
        for kind in StepKind:
            complete_step(self.tree, document, kind)

    def document_done(self, document: DocumentRef, report: str, report_file: str = "") -> None:
        self.reports[document.index] = DocumentReport(
            name=document.name,
            state=TaskState.COMPLETED,
            report=report if self.inline or not report_file else "",
            report_file=report_file,
        )
        self._ended(document.index)

    def batch_ended(self, documents: list[DocumentRef], result: BatchResult, now: datetime) -> None:
        """Book what a batch answered: each document that ended, and the steps of those it
        did not end (it was cut by a cancel, or failed for good)."""
        by_index = {document.index: document for document in documents}
        for outcome in result.outcomes:
            if outcome.index in by_index:
                self.document_outcome(by_index[outcome.index], outcome, now)
        for step in result.unended:
            document = by_index.get(step.document)
            if document is None or document.index in self.reports:
                continue
            if step.outputs:
                # Finished: in the next checkpoint, so a resumed run does not ask for it again.
                self.step_finished(document, step.kind, step.model, step, now)
            else:
                self._step_spent(document, step)

    def _step_spent(self, document: DocumentRef, result: StepResult) -> None:
        """A step that did not finish: its attempts and tokens count, it has no outputs."""
        key = _key(document.index, result.kind)
        self.stats[key] = result.stats
        self.running_usage.pop(key, None)
        self.usage.merge(result.usage)
        self.ledger.merge(result.ledger)

    def document_outcome(
        self, document: DocumentRef, outcome: DocumentOutcome, now: datetime
    ) -> None:
        """Book how a document of a batch ended, with each step the batch ran for it."""
        ran = {result.kind: result for result in outcome.steps}
        for kind in StepKind:
            result = ran.get(kind)
            if result is not None and (result.outputs or outcome.state is TaskState.COMPLETED):
                self.step_finished(document, kind, result.model, result, now)
            elif result is not None:
                # The step that failed: its attempts and tokens count, its outputs do not exist.
                self._step_spent(document, result)
            else:
                self._recall_step(document, kind, now)
        if outcome.state is TaskState.COMPLETED:
            self.document_done(document, outcome.report, outcome.report_file)
        else:
            self.document_failed(document, outcome.error, None, None, now)

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
        # Its steps are over: none of them is retrying or paying any more.
        prefix = f"{document.index}:"
        self.retrying = {k for k in self.retrying if not k.startswith(prefix)}
        for key in [k for k in self.running_usage if k.startswith(prefix)]:
            self.usage.merge(self.running_usage.pop(key))
        self._ended(document.index)
        self.follow_retries(now)

    def progress(self, event: ProgressEvent, now: datetime) -> bool:
        """Book a running step's progress; False for a late or unknown report."""
        key = _key(event.document, event.kind)
        if key in self.finished_steps or not 0 <= event.document < len(self.documents):
            return False
        apply_event(self.tree, self.documents[event.document], event)
        self.stats[key] = event.stats
        self.running_usage[key] = event.usage
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

    def figures(self) -> tuple[int, int, int]:
        """Steps done, steps in all, documents: as the last run left them while this one is
        still finding its documents (all zero for a new task)."""
        if not self.documents_known:
            return self.carried_figures
        return self.steps_done(), self.steps_total, len(self.documents)

    def record(self, now: datetime) -> ProgressRecord:
        done, total, documents = self.figures()
        metadata: dict[str, Any] = {} if self.documents_known else {"phase": FINDING_DOCUMENTS}
        record = build_record(
            self.task.task_id,
            done,
            total,
            (now - self.started_at).total_seconds() + self.elapsed_before,
            {
                **metadata,
                "state": self.machine.state.value,
                "documents": documents,
                "documents_done": len(self.reports),
                "documents_running": len(self.in_flight),
                "cost_so_far": self.cost(),
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
            f"**{self.machine.state.value}** {progress_text(record)}, "
            f"{len(self.reports)}/{record.metadata['documents']} documents, "
            f"cost ${self.cost():.6f}"
        )

    def status_tree(self) -> ProgressNode:
        """The task with a node per document in flight; the others as two rolled-up nodes,
        so the answer stays small for ten thousand documents."""
        running = [self.tree.children[i].summary(depth=1) for i in sorted(self.in_flight)]
        running_total = sum(node.total for node in running)
        waiting = self.steps_total - self.ended_total - running_total
        return ProgressNode(
            name=self.tree.name,
            children=[
                *running,
                ProgressNode(name=ENDED_NODE, done=self.ended_steps, total=self.ended_total),
                ProgressNode(name=WAITING_NODE, done=0, total=max(waiting, 0)),
            ],
        )

    def status(self, now: datetime) -> TaskStatus:
        failed = sum(1 for r in self.reports.values() if r.state is TaskState.FAILED)
        return TaskStatus(
            record=self.record(now),
            state=self.machine.state,
            transitions=self.machine.log,
            tree=self.status_tree(),
            usage=self.total_usage(),
            cost_so_far=self.cost(),
            retrying_steps=sorted(self.retrying),
            calls=self.calls_by_kind(),
            ledger=self.ledger,
            documents=self.figures()[2],
            documents_done=len(self.reports) - failed,
            documents_failed=failed,
        )

    def result(self, reason: str = "") -> TaskResult:
        return TaskResult(
            task_id=self.task.task_id,
            state=self.machine.state,
            documents=[self.reports[i] for i in sorted(self.reports)],
            usage=self.total_usage(),
            cost_so_far=self.cost(),
            calls=self.calls_by_kind(),
            ledger=self.ledger,
            reason=reason,
        )

    def skip_checkpoint(self, now: datetime) -> None:
        """Account for a checkpoint taken in an earlier life of the workflow (a replay)."""
        self.last_checkpoint_ms = next_checkpoint_ms(now, self.last_checkpoint_ms)

    def checkpoint(self, now: datetime, error: str | None = None) -> MirrorWrite:
        """The task as it is now, as a checkpoint with a fresh, increasing id."""
        record = self.record(now)
        self.last_checkpoint_ms = next_checkpoint_ms(now, self.last_checkpoint_ms)
        variables = DocumentVariables(state=self.machine.state.value, paths=self.task.paths)
        step_results = [r for i in sorted(self.step_results) for r in self.step_results[i]]
        if not self.documents_known:
            # What the runs before this one did, so this checkpoint, the newest, says no less.
            variables = self._earlier_variables(variables)
            step_results = step_results_of(self.resume)
        elif self.inline:
            variables.documents = [d.name for d in self.documents]
            variables.reports = {r.name: r.state.value for r in self.reports.values()}
        else:
            variables.documents = len(self.documents)
            variables.documents_digest = documents_digest(self.documents)
            variables.finished = to_ranges(
                i for i, r in self.reports.items() if r.state is TaskState.COMPLETED
            )
            failed = {r.name: r.error for r in self.reports.values() if r.state is TaskState.FAILED}
            variables.failed = dict(list(failed.items())[:INLINE_DOCUMENTS])
            variables.failed_count = len(failed)
        usage = self.total_usage()
        checkpoint = Checkpoint(
            id=checkpoint_id_for(self.task.task_id, self.last_checkpoint_ms),
            task_id=self.task.task_id,
            timestamp=iso_utc(now),
            progress=record.progress,
            state=CheckpointState(
                messages=messages_beside(self.messages, step_results),
                variables=variables.model_dump(exclude_none=True),
                current_step=record.step,
                step_results=step_results,
            ),
            metadata=CheckpointMetadata(
                model=self.last_model,
                cost_so_far=usage.cost(self.task.prices),
                tokens=usage.total_tokens,
                usage=usage,
                ledger=self.ledger.rows(),
                elapsed_seconds=record.elapsed_seconds,
            ),
            error=error,
        )
        snapshot = ProgressSnapshot(timestamp=now.timestamp(), status=record)
        return MirrorWrite(checkpoint=checkpoint, snapshot=snapshot)

    def _earlier_variables(self, variables: DocumentVariables) -> DocumentVariables:
        """Checkpoint variables of a run still finding its documents: the documents earlier
        runs finished, as the run before this one (or the checkpoint resumed from) named them.
        A resumed run that has not read its checkpoint yet names it (``resume_from``)."""
        failed = {r.name: r.error for r in self.reports.values() if r.state is TaskState.FAILED}
        variables = variables.model_copy(
            update={
                "phase": FINDING_DOCUMENTS,
                "documents": self.carried_figures[2],
                "failed": dict(list(failed.items())[:INLINE_DOCUMENTS]),
                "failed_count": len(failed),
            }
        )
        if self.carried_figures[2] > INLINE_DOCUMENTS:
            # A large task names its finished documents as ranges (see below).
            completed = (i for i, r in self.reports.items() if r.state is TaskState.COMPLETED)
            variables.finished = to_ranges(completed)
            variables.documents_digest = self.carried_digest
        elif self.resume.finished:
            variables.finished = self.resume.finished
            variables.documents_digest = self.resume.documents_digest
        if self.task.resume_from is not None:
            variables.resume_from = self.task.resume_from.checkpoint_id
        return variables

    def carry_over(self) -> TaskInput:
        """This task's input for its next run: everything done so far travels with it."""
        finished = {
            step_key(r.path, r.step): list(r.outputs)
            for results in self.step_results.values()
            for r in results
            if r.path is not None and r.outputs is not None
        }
        carried = CarriedState(
            resume=ResumeState(
                results=finished, usage=self.usage, elapsed_seconds=self.elapsed_before
            ),
            machine=self.machine,
            reports=self.reports,
            stats=self.stats,
            ledger=self.ledger,
            messages=self.messages,
            started_at=self.started_at,
            last_checkpoint_ms=self.last_checkpoint_ms,
            runs=self.runs,
            steps_done=self.steps_done(),
            steps_total=self.steps_total,
            documents=len(self.documents),
            documents_digest=documents_digest(self.documents),
        )
        return self.task.model_copy(update={"carried": carried, "resume_from": None})
