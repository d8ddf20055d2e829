"""An answer with a finish reason and no text is no answer: retried, then a clear failure."""

from __future__ import annotations

from temporalio.client import Client
from temporalio.worker import Worker

from longtask.settings import Settings
from longtask.states import TaskState
from longtask.task_resume import outcome
from longtask.tooling.servers import LlmServer
from tests.conftest import EXAMPLES
from tests.tasks import start

DOCUMENT = EXAMPLES / "incident-postmortem.txt"
REPORT_MODEL = {"model": "gpt-4.1"}


async def test_an_empty_report_is_retried_and_a_real_one_kept(
    client: Client, settings: Settings, worker: Worker, llm: LlmServer
) -> None:
    llm.add({"type": "reply", "text": "", "match": REPORT_MODEL})
    llm.add({"type": "reply", "text": "The incident is closed.", "match": REPORT_MODEL})
    _, handle = await start(client, settings, [DOCUMENT])
    result = await handle.result()
    assert result.state is TaskState.COMPLETED
    assert result.documents[0].report == "The incident is closed."
    assert llm.count("/chat/completions", "gpt-4.1") == 2


async def test_a_model_that_only_answers_nothing_fails_the_document_saying_so(
    client: Client, settings: Settings, worker: Worker, llm: LlmServer
) -> None:
    llm.add({"type": "reply", "text": "", "match": REPORT_MODEL, "times": None})
    _, handle = await start(client, settings, [DOCUMENT])
    result = await outcome(handle)
    assert result is not None and result.state is TaskState.FAILED
    [document] = result.documents
    assert document.state is TaskState.FAILED
    assert not document.report and not document.report_file  # no 0-byte report
    assert "empty answer" in document.error and "gave up after 4 attempts" in document.error
    assert llm.count("/chat/completions", "gpt-4.1") == 4
