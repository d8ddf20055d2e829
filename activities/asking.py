"""How a running batch asks its task for documents, and reads the answer.

Tasks begun before ``PATCH_BATCHES_ASK_BY_SIGNAL`` answer an update. Newer ones take the ask
as a signal and hold the answer for a query: an update's acceptance is a protocol message with
no event of its own, and a worker that rebuilds a task after a timed-out workflow task runs it
in a later activation than a replay does, so that history stops replaying. A signal is an
event; the query that reads the answer leaves nothing in the history.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from typing import Any

from temporalio.client import WorkflowHandle

from longtask.engine.names import (
    ASK_DOCUMENTS_SIGNAL,
    TAKE_DOCUMENTS_UPDATE,
    TAKEN_DOCUMENTS_QUERY,
)
from longtask.models import TakeDocuments, TakenDocuments

# The first read follows the signal at once: the server holds a query that meets a pending
# workflow task until that task is done, so it usually finds the answer. Later reads back off.
FIRST_READ_PAUSE = 0.02
LONGEST_READ_PAUSE = 0.5


async def ask_by_update(handle: WorkflowHandle[Any, Any], ask: TakeDocuments) -> TakenDocuments:
    answer = await handle.execute_update(TAKE_DOCUMENTS_UPDATE, ask, result_type=TakenDocuments)
    return _taken(answer)


async def ask_by_signal(
    handle: WorkflowHandle[Any, Any], ask: TakeDocuments, seconds: float
) -> TakenDocuments:
    """Signal the ask, then read its answer until it is there; TimeoutError after
    ``seconds``. The ask's id names the answer: a signal the server got twice is answered once.
    """
    deadline = time.monotonic() + seconds
    named = ask.model_copy(update={"ask_id": uuid.uuid4().hex})
    await asyncio.wait_for(handle.signal(ASK_DOCUMENTS_SIGNAL, named), timeout=seconds)
    pause = FIRST_READ_PAUSE
    while True:
        left = deadline - time.monotonic()
        if left <= 0:
            raise TimeoutError(f"no answer to ask {named.ask_id} within {seconds:.0f} s")
        # "Not answered yet" comes back as a null payload, read as None whatever the type.
        answer = await asyncio.wait_for(
            handle.query(TAKEN_DOCUMENTS_QUERY, named.ask_id, result_type=TakenDocuments),
            timeout=left,
        )
        if answer is not None:
            return _taken(answer)
        await asyncio.sleep(min(pause, max(0.0, deadline - time.monotonic())))
        pause = min(pause * 2, LONGEST_READ_PAUSE)


def _taken(answer: object) -> TakenDocuments:
    if not isinstance(answer, TakenDocuments):
        raise TypeError(f"a take was answered with {type(answer).__name__}")
    return answer
