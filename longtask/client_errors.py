"""The errors a user of the task client can expect, each one line saying what is wrong and what
to do. Anything else is a bug and keeps its traceback."""

from __future__ import annotations


class TaskError(Exception):
    """An expected problem; ``str(error)`` is one line for the user."""


class UsageError(TaskError):
    """Bad input from the user: a path, a task id, a budget, a checkpoint id."""


class StackUnreachableError(TaskError):
    """Temporal or Redis does not answer at the configured address."""


class TaskNotFoundError(TaskError):
    """No task has this id."""


class NoWorkerError(TaskError):
    """No worker polls the task queue, so nothing will act on the task."""


class TaskRefusedError(TaskError):
    """The task refused what was asked: its state machine's reason, or it has ended."""


class TaskIdTakenError(TaskRefusedError):
    """A task already has this id; a new run under it must be asked for explicitly."""


class CheckpointNotFoundError(TaskError):
    """Redis holds no such checkpoint of the task."""


def no_worker_hint(task_queue: str) -> str:
    """What to do when nothing polls ``task_queue``."""
    return (
        f"no worker polls task queue {task_queue!r}; start one with `make worker` "
        f"(or `LTM_TASK_QUEUE={task_queue} python worker.py`)"
    )


def no_worker_answered_hint(task_queue: str) -> str:
    """What to do when a worker is listed on ``task_queue`` but none answered: Temporal lists a
    worker that died for a minute or more after its death."""
    return (
        f"if no worker runs on task queue {task_queue!r} (one that died lately is still listed "
        f"for a minute or so), start one with `make worker` "
        f"(or `LTM_TASK_QUEUE={task_queue} python worker.py`)"
    )


def task_module_hint(task_name: str) -> str:
    """What else to check when no worker runs a long task of one's own: its module."""
    return (
        f"workers run {task_name} only with its module in LTM_TASK_MODULES "
        f"(e.g. `LTM_TASK_MODULES=examples.translate make worker`)"
    )
