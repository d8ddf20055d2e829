"""How a running batch asks its task for documents, and reads the answer.

Tasks begun before ``PATCH_BATCHES_ASK_BY_SIGNAL`` answer an update; newer ones a signal and
a query (longtask/signal_answers.py says why).
"""

from __future__ import annotations

import uuid
from typing import Any

from temporalio.client import WorkflowHandle

from longtask.engine.names import (
    ASK_DOCUMENTS_SIGNAL,
    TAKE_DOCUMENTS_UPDATE,
    TAKEN_DOCUMENTS_QUERY,
)
from longtask.models import TakeDocuments, TakenDocuments
from longtask.signal_answers import signal_then_read


async def ask_by_update(handle: WorkflowHandle[Any, Any], ask: TakeDocuments) -> TakenDocuments:
    answer = await handle.execute_update(TAKE_DOCUMENTS_UPDATE, ask, result_type=TakenDocuments)
    if not isinstance(answer, TakenDocuments):
        raise TypeError(f"a take was answered with {type(answer).__name__}")
    return answer


async def ask_by_signal(
    handle: WorkflowHandle[Any, Any], ask: TakeDocuments, seconds: float
) -> TakenDocuments:
    """Signal the ask under an id of its own, then read the answer; TimeoutError after
    ``seconds``."""
    named = ask.model_copy(update={"ask_id": uuid.uuid4().hex})
    return await signal_then_read(
        handle, ASK_DOCUMENTS_SIGNAL, named, TAKEN_DOCUMENTS_QUERY, named.ask_id,
        TakenDocuments, seconds,
    )  # fmt: skip
