"""The task state machine: every allowed transition works, every other one is refused."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from itertools import product

import pytest

from longtask.states import (
    ALLOWED_TRANSITIONS,
    TERMINAL_STATES,
    InvalidTransitionError,
    TaskState,
    TaskStateMachine,
)

T0 = datetime(2026, 1, 1, tzinfo=UTC)


def machine_in(state: TaskState) -> TaskStateMachine:
    return TaskStateMachine(state=state)


@pytest.mark.parametrize(
    ("source", "target"),
    [(s, t) for s, targets in ALLOWED_TRANSITIONS.items() for t in sorted(targets)],
)
def test_allowed_transition_moves_and_is_logged(source: TaskState, target: TaskState) -> None:
    machine = machine_in(source)
    machine.go(target, T0, "because")
    assert machine.state is target
    assert [(t.source, t.target, t.at, t.reason) for t in machine.log] == [
        (source, target, T0, "because")
    ]


@pytest.mark.parametrize(
    ("source", "target"),
    [(s, t) for s, t in product(TaskState, TaskState) if t not in ALLOWED_TRANSITIONS[s]],
)
def test_invalid_transition_is_refused_and_changes_nothing(
    source: TaskState, target: TaskState
) -> None:
    machine = machine_in(source)
    with pytest.raises(InvalidTransitionError, match=f"cannot go from {source} to {target}"):
        machine.go(target, T0)
    assert machine.state is source
    assert machine.log == []


def test_terminal_states_have_no_way_out() -> None:
    assert {s for s, targets in ALLOWED_TRANSITIONS.items() if not targets} == TERMINAL_STATES
    assert {
        TaskState.COMPLETED,
        TaskState.FAILED,
        TaskState.CANCELLED,
        TaskState.TIMED_OUT,
    } | {TaskState.BUDGET_EXCEEDED} == TERMINAL_STATES


def test_every_state_is_reachable_from_pending() -> None:
    seen = {TaskState.PENDING}
    frontier = [TaskState.PENDING]
    while frontier:
        for target in ALLOWED_TRANSITIONS[frontier.pop()]:
            if target not in seen:
                seen.add(target)
                frontier.append(target)
    assert seen == set(TaskState)


def test_log_keeps_a_whole_life_in_order() -> None:
    machine = TaskStateMachine()
    path = [
        TaskState.RUNNING,
        TaskState.RETRYING,
        TaskState.RUNNING,
        TaskState.PAUSED,
        TaskState.RUNNING,
        TaskState.COMPLETED,
    ]
    for offset, target in enumerate(path):
        machine.go(target, T0 + timedelta(seconds=offset))
    assert [t.target for t in machine.log] == path
    assert [t.at for t in machine.log] == sorted(t.at for t in machine.log)
    assert machine.is_terminal
