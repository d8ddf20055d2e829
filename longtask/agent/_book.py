"""What a long task knows about itself: state machine, progress tree, conversation, variables,
finished calls and cost. Deterministic and free of I/O: the same on every replay."""

from __future__ import annotations

import json
from datetime import datetime
from typing import Any

from longtask.agent._models import AgentCarry, AgentStatus, LongTaskInput
from longtask.checkpoints import (
    Checkpoint,
    CheckpointMetadata,
    CheckpointState,
    MirrorWrite,
    ProgressSnapshot,
    StepRecord,
    checkpoint_id_for,
    epoch_ms_of,
    iso_utc,
    next_checkpoint_ms,
)
from longtask.cost import CostLedger, TokenUsage
from longtask.progress import ProgressNode, ProgressRecord, build_record
from longtask.states import TaskState, TaskStateMachine

# A finished call's output as a checkpoint's step result keeps this many characters: the
# whole output is in the conversation or the task's own variables when the task needs it.
STEP_OUTPUT_CHARS = 2000
# Step results a checkpoint keeps: the newest ones.
STEP_RESULTS_KEPT = 200
# Up to this many calls, a long task checkpoints at each change (see AgentBook.inline).
INLINE_CALLS = 200


def _short(output: Any) -> str:
    text = output if isinstance(output, str) else json.dumps(output, default=str)
    return text[:STEP_OUTPUT_CHARS]


class AgentBook:
    def __init__(self, task: LongTaskInput, started_at: datetime) -> None:
        self.task = task
        carried = task.carried or AgentCarry()
        self.started_at = carried.started_at or started_at
        self.machine = carried.machine or TaskStateMachine()
        self.tree = carried.progress or ProgressNode(name=task.task_id)
        self.messages: list[dict[str, Any]] = list(carried.messages)
        self.variables: dict[str, Any] = dict(carried.variables)
        self.step_results: list[StepRecord] = list(carried.step_results)
        self.elapsed_before = carried.elapsed_seconds
        self.usage = TokenUsage()
        self.usage.merge(carried.usage)
        self.ledger = CostLedger()
        self.ledger.merge(carried.ledger)
        self.calls = carried.calls
        # Model and embedding calls under way, and those of them retrying a provider failure.
        self.in_flight: set[int] = set()
        self.retrying: set[int] = set()
        self.last_model = ""
        self.last_checkpoint_ms = carried.last_checkpoint_ms
        self.runs = carried.runs + 1 if task.carried is not None else 1

    # A conversation changes at every call: each change is worth a checkpoint.
    every_change = True

    @property
    def inline(self) -> bool:
        """A task of a few hundred calls checkpoints at every change; past that (a map over
        thousands of items) at most once a second, as a large document task does: each
        checkpoint carries up to 200 step results, and building one costs the workflow."""
        return self.calls <= INLINE_CALLS

    def next_call(self) -> int:
        """The number of the task's next call: ids and keys stay unique across runs."""
        return self.next_calls(1)

    def next_calls(self, count: int) -> int:
        """Numbers for ``count`` calls in a row (a batch of ``map_calls``); the first of them."""
        self.calls += count
        return self.calls - count + 1

    def book(
        self,
        call: int,
        step: str,
        kind: str,
        output: Any,
        usage: TokenUsage,
        ledger: CostLedger,
        model: str = "",
    ) -> None:
        """A finished call: its tokens, its ledger rows, and a short record of its output."""
        self.pay(usage, ledger)
        self.note(call, step, kind, output, model)

    def pay(self, usage: TokenUsage, ledger: CostLedger) -> None:
        """Tokens and ledger rows of calls, finished or not."""
        self.usage.merge(usage)
        self.ledger.merge(ledger)

    def note(self, call: int, step: str, kind: str, output: Any, model: str = "") -> None:
        """A short record of a finished call's output in the step results."""
        self.last_model = model or self.last_model
        self.step_results.append(
            # "outputs", as the document agent's step results: LTM_MIRROR_MESSAGES=false
            # leaves them out of the mirror (activities/mirror.py, without_text).
            StepRecord(call=call, step=step, kind=kind, model=model, outputs=[_short(output)])
        )
        del self.step_results[:-STEP_RESULTS_KEPT]

    def node(self, path: tuple[str, ...]) -> ProgressNode:
        """The progress node at ``path`` below the task, made on first use."""
        node = self.tree
        for name in path:
            try:
                node = node.child(name)
            except KeyError:
                child = ProgressNode(name=name)
                node.children.append(child)
                node = child
        return node

    def call_retrying(self, call: int) -> bool:
        """A call under way says it retries after a provider failure; False for a late word."""
        if call not in self.in_flight:
            return False
        self.retrying.add(call)
        return True

    def call_ended(self, call: int) -> None:
        self.in_flight.discard(call)
        self.retrying.discard(call)

    def follow_retries(self, now: datetime) -> None:
        """Running and retrying differ only by whether some call retries a provider failure
        (SPEC section 2); a paused task stays paused."""
        state = self.machine.state
        if state is TaskState.RUNNING and self.retrying:
            self.go(TaskState.RETRYING, now, f"retrying call(s) {sorted(self.retrying)}")
        elif state is TaskState.RETRYING and not self.retrying:
            self.go(TaskState.RUNNING, now, "retried calls recovered")

    def cost(self) -> float:
        return self.usage.cost(self.task.prices)

    def budget_reached(self) -> str | None:
        return self.task.budget.exceeded_by(self.usage, self.task.prices)

    def go(self, target: TaskState, now: datetime, reason: str) -> None:
        if self.machine.state is not target:
            self.machine.go(target, now, reason)

    def record(self, now: datetime) -> ProgressRecord:
        record = build_record(
            self.task.task_id,
            self.tree.steps_done(),
            self.tree.steps_total(),
            (now - self.started_at).total_seconds() + self.elapsed_before,
            {"state": self.machine.state.value, "cost_so_far": self.cost(), "runs": self.runs},
        )
        if self.machine.is_terminal and self.machine.state is not TaskState.COMPLETED:
            record.eta_seconds = None  # an ended task will not finish: no ETA to give
        return record

    def details(self, now: datetime) -> str:
        """One line for the Temporal UI's current details of the task."""
        record = self.record(now)
        return (
            f"**{self.machine.state.value}** {record.progress:.2f} % "
            f"({record.step}/{record.total} steps), {self.calls} call(s), "
            f"cost ${self.cost():.6f}"
        )

    def status(self, now: datetime) -> AgentStatus:
        return AgentStatus(
            record=self.record(now),
            state=self.machine.state,
            transitions=self.machine.log,
            tree=self.tree,
            usage=self.usage,
            cost_so_far=self.cost(),
            ledger=self.ledger,
            calls=self.calls,
            messages=len(self.messages),
            variables=self.variables,
        )

    def skip_checkpoint(self, now: datetime) -> None:
        """Account for a checkpoint taken in an earlier life of the workflow (a replay)."""
        self.last_checkpoint_ms = next_checkpoint_ms(now, self.last_checkpoint_ms)

    def checkpoint(self, now: datetime, error: str | None = None) -> MirrorWrite:
        """The task as it is now (SPEC section 5), with a fresh, increasing id."""
        record = self.record(now)
        self.last_checkpoint_ms = next_checkpoint_ms(now, self.last_checkpoint_ms)
        checkpoint = Checkpoint(
            id=checkpoint_id_for(self.task.task_id, self.last_checkpoint_ms),
            task_id=self.task.task_id,
            timestamp=iso_utc(now),
            progress=record.progress,
            state=CheckpointState(
                messages=self.messages,
                variables=self.variables,
                current_step=record.step,
                step_results=self.step_results,
            ),
            metadata=CheckpointMetadata(
                state=self.machine.state.value,
                model=self.last_model,
                cost_so_far=self.cost(),
                tokens=self.usage.total_tokens,
                usage=self.usage,
                ledger=self.ledger.rows(),
                calls=self.calls,
                progress_tree=self.tree,
                elapsed_seconds=record.elapsed_seconds,
            ),
            error=error,
        )
        snapshot = ProgressSnapshot(timestamp=now.timestamp(), status=record)
        return MirrorWrite(checkpoint=checkpoint, snapshot=snapshot)

    def carry(self) -> AgentCarry:
        """Everything the next run needs to go on where this one stopped."""
        return AgentCarry(
            messages=self.messages,
            variables=self.variables,
            step_results=self.step_results,
            machine=self.machine,
            usage=self.usage,
            ledger=self.ledger,
            progress=self.tree,
            calls=self.calls,
            started_at=self.started_at,
            elapsed_seconds=self.elapsed_before,
            last_checkpoint_ms=self.last_checkpoint_ms,
            runs=self.runs,
        )


def carry_from_checkpoint(checkpoint: Checkpoint) -> AgentCarry:
    """A new run's start from a mirrored checkpoint: conversation, variables, cost, progress.

    The state machine starts afresh (the new run is a new life of the task); what was done
    and paid stays.
    """
    metadata = checkpoint.metadata
    return AgentCarry(
        messages=checkpoint.state.messages,
        variables=checkpoint.state.variables,
        step_results=checkpoint.state.step_results,
        usage=metadata.usage,
        ledger=CostLedger.from_rows(metadata.ledger),
        progress=metadata.progress_tree,
        calls=metadata.calls or 0,
        elapsed_seconds=metadata.elapsed_seconds or 0.0,
        # The new run's checkpoints come after this one, whatever the clocks say.
        last_checkpoint_ms=epoch_ms_of(checkpoint.id),
    )
