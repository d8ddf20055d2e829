"""Pause and resume asked by signal: what the CLI and ``TaskClient`` send.

The ``pause`` and ``resume`` updates stay for anyone who sends them (the Temporal UI, tasks'
own clients), but an update sent while a workflow task timed out can leave a history that no
longer replays (longtask/signal_answers.py). A ``steer`` signal gets the same checks and does
the same, and its answer is read with the ``steered`` query.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel

# A task keeps the answers to its last few steering requests: enough for the clients still
# reading theirs, never a list that grows with the task.
KEPT_STEER_ANSWERS = 16


class SteerRequest(BaseModel):
    request_id: str
    action: Literal["pause", "resume"]


class SteerAnswer(BaseModel):
    """The task's state after the request, or why it refused it."""

    state: str = ""
    refused: str = ""
