"""What a task id may be, checked in one place by the starter and by the workflow itself.

A task id names the Temporal workflow, the Redis keys, each checkpoint id (``{task_id}_{ms}``)
and the task's report folder, so it must be usable as all of them unchanged: letters, digits,
'.', '_' and '-', beginning and ending with a letter or a digit. Then no two ids share a report
folder (``rc`` and ``rc.`` would, were the second allowed), and no id hides a newline.
"""

from __future__ import annotations

import re

MAX_TASK_ID_CHARS = 128
_TASK_ID = re.compile(r"[A-Za-z0-9](?:[A-Za-z0-9._-]{0,126}[A-Za-z0-9])?")


def task_id_problem(task_id: str) -> str | None:
    """Why ``task_id`` cannot be used, in one line; None when it can."""
    if _TASK_ID.fullmatch(task_id) is None:
        return (
            f"task id {task_id!r}: use 1 to {MAX_TASK_ID_CHARS} letters, digits, '.', '_' or "
            "'-', beginning and ending with a letter or a digit"
        )
    return None


def is_checkpoint_of(checkpoint_id: str, task_id: str) -> bool:
    """Whether ``checkpoint_id`` is one of ``task_id``'s own: ``{task_id}_{milliseconds}``.

    A prefix test is not enough: task ``a`` must not take ``a_b``'s checkpoint ``a_b_1700``.
    """
    head, separator, stamp = checkpoint_id.rpartition("_")
    return bool(separator) and head == task_id and stamp.isascii() and stamp.isdigit()
