"""A request a workflow answers without an update: a signal that carries the request and its
id, then a query that reads the answer by that id.

An update's acceptance is a protocol message, not an event. A worker that rebuilds a task after
a timed-out workflow task (its worker died, or was too busy to take it from its sticky queue)
can run the update in a later activation than a replay does; the commands around it then come
in another order, and the history stops replaying (temporalio 1.35: "Update machine does not
handle this event"; tests/test_replay.py keeps such a history). A signal is an event with its
own place in the history, and a query leaves nothing in it.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any, TypeVar

from pydantic import BaseModel
from temporalio.client import WorkflowHandle
from temporalio.service import RPCError, RPCStatusCode

AnswerT = TypeVar("AnswerT", bound=BaseModel)

# The first read follows the signal at once: the server holds a query that meets a pending
# workflow task until that task is done, so it usually finds the answer. Later reads back off.
FIRST_READ_PAUSE = 0.02
LONGEST_READ_PAUSE = 0.5
# Read failures that pass: the task is there, its answer not reachable yet (its worker just
# died, no worker polls right now, the server is busy).
RETRIED_READS = frozenset(
    {
        RPCStatusCode.DEADLINE_EXCEEDED,
        RPCStatusCode.UNAVAILABLE,
        RPCStatusCode.RESOURCE_EXHAUSTED,
        RPCStatusCode.CANCELLED,
    }
)
# One read waits at most this long: a later one may find a worker that lives.
READ_SECONDS = 10.0


async def signal_then_read(
    handle: WorkflowHandle[Any, Any],
    signal: str,
    request: BaseModel,
    query: str,
    request_id: str,
    answer_type: type[AnswerT],
    seconds: float,
) -> AnswerT:
    """Signal ``request``, then read its answer with ``query`` (by ``request_id``) until the
    workflow has it; TimeoutError after ``seconds``. The workflow answers a request id once,
    so a signal the server got twice does no harm."""
    deadline = time.monotonic() + seconds
    await asyncio.wait_for(handle.signal(signal, request), timeout=seconds)
    pause = FIRST_READ_PAUSE
    while True:
        left = deadline - time.monotonic()
        if left <= 0:
            raise TimeoutError(f"no answer to {signal} {request_id} within {seconds:.0f} s")
        answer = await _read(handle, query, request_id, answer_type, min(left, READ_SECONDS))
        if answer is not None:
            return answer
        await asyncio.sleep(min(pause, max(0.0, deadline - time.monotonic())))
        pause = min(pause * 2, LONGEST_READ_PAUSE)


async def _read(
    handle: WorkflowHandle[Any, Any],
    query: str,
    request_id: str,
    answer_type: type[AnswerT],
    seconds: float,
) -> AnswerT | None:
    """The answer, or None when there is none yet or it could not be read this time."""
    try:
        # "Not answered yet" comes back as a null payload, read as None whatever the type.
        answer = await asyncio.wait_for(
            handle.query(query, request_id, result_type=answer_type), timeout=seconds
        )
    except TimeoutError:
        return None
    except RPCError as error:
        if error.status not in RETRIED_READS:
            raise
        return None
    if answer is not None and not isinstance(answer, answer_type):
        raise TypeError(f"{query} answered with {type(answer).__name__}")
    return answer
