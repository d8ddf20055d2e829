"""The task state machine: one enum, the allowed transitions, and a timestamped transition log."""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum

from pydantic import BaseModel, Field


class TaskState(StrEnum):
    PENDING = "pending"
    RUNNING = "running"
    RETRYING = "retrying"
    PAUSED = "paused"
    COMPLETED = "completed"
    FAILED = "failed"
    CANCELLED = "cancelled"
    TIMED_OUT = "timed_out"
    # The task's money or token budget ran out; a new run with a larger one continues it.
    BUDGET_EXCEEDED = "budget_exceeded"


TERMINAL_STATES = frozenset(
    {
        TaskState.COMPLETED,
        TaskState.FAILED,
        TaskState.CANCELLED,
        TaskState.TIMED_OUT,
        TaskState.BUDGET_EXCEEDED,
    }
)

# Every state may be cancelled, fail or time out until it is terminal; retrying and paused go
# back through running, except that the last running steps may complete a paused task.
ALLOWED_TRANSITIONS: dict[TaskState, frozenset[TaskState]] = {
    TaskState.PENDING: frozenset(
        {TaskState.RUNNING, TaskState.CANCELLED, TaskState.FAILED, TaskState.TIMED_OUT}
    ),
    TaskState.RUNNING: frozenset(
        {
            TaskState.RETRYING,
            TaskState.PAUSED,
            TaskState.COMPLETED,
            TaskState.FAILED,
            TaskState.CANCELLED,
            TaskState.TIMED_OUT,
            TaskState.BUDGET_EXCEEDED,
        }
    ),
    TaskState.RETRYING: frozenset(
        {
            TaskState.RUNNING,
            TaskState.PAUSED,
            TaskState.FAILED,
            TaskState.CANCELLED,
            TaskState.TIMED_OUT,
            TaskState.BUDGET_EXCEEDED,
        }
    ),
    # A pause starts no new step; steps already running may still finish the whole task.
    TaskState.PAUSED: frozenset(
        {
            TaskState.RUNNING,
            TaskState.COMPLETED,
            TaskState.FAILED,
            TaskState.CANCELLED,
            TaskState.TIMED_OUT,
            TaskState.BUDGET_EXCEEDED,
        }
    ),
    TaskState.COMPLETED: frozenset(),
    TaskState.FAILED: frozenset(),
    TaskState.CANCELLED: frozenset(),
    TaskState.TIMED_OUT: frozenset(),
    TaskState.BUDGET_EXCEEDED: frozenset(),
}


class InvalidTransitionError(ValueError):
    """A transition the state machine does not allow."""

    def __init__(self, source: TaskState, target: TaskState) -> None:
        allowed = ", ".join(sorted(ALLOWED_TRANSITIONS[source])) or "none (terminal)"
        super().__init__(f"cannot go from {source} to {target}; allowed: {allowed}")
        self.source = source
        self.target = target


class Transition(BaseModel):
    source: TaskState
    target: TaskState
    at: datetime
    reason: str = ""


class TaskStateMachine(BaseModel):
    """Current state plus the log of every transition taken, oldest first."""

    state: TaskState = TaskState.PENDING
    log: list[Transition] = Field(default_factory=list)

    def can_go(self, target: TaskState) -> bool:
        return target in ALLOWED_TRANSITIONS[self.state]

    def go(self, target: TaskState, at: datetime, reason: str = "") -> None:
        """Move to ``target``; raises InvalidTransitionError when not allowed."""
        if not self.can_go(target):
            raise InvalidTransitionError(self.state, target)
        self.log.append(Transition(source=self.state, target=target, at=at, reason=reason))
        self.state = target

    @property
    def is_terminal(self) -> bool:
        return self.state in TERMINAL_STATES
