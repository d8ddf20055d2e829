"""Large tasks: batches, compact checkpoints, the cost ledger against the server's log, budgets."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import pytest
from llmock.routers._chat import prompt_of
from llmock.simulation import estimate_tokens
from redis.asyncio import Redis
from temporalio.client import Client, WorkflowFailureError
from temporalio.exceptions import ApplicationError
from temporalio.worker import Worker

from longtask.client import TaskClient
from longtask.cost import TaskBudget
from longtask.engine.names import ASK_DOCUMENTS_SIGNAL
from longtask.models import TaskResult
from longtask.settings import Settings
from longtask.states import TaskState
from longtask.tooling.corpus import write_corpus
from longtask.tooling.servers import LlmServer
from tests.tasks import read_json, read_text, start

CALLS_PER_DOCUMENT = 4  # one embedding batch, one page summary, reasoning, report


async def test_a_few_hundred_documents_fan_out_in_batches(
    client: Client, settings: Settings, worker: Worker, llm: LlmServer, redis: Redis, tmp_path: Path
) -> None:
    documents = 300
    paths = write_corpus(tmp_path / "corpus", documents)
    task, handle = await start(client, settings, [tmp_path / "corpus"])
    result = await handle.result()

    assert result.state is TaskState.COMPLETED
    assert len(result.documents) == documents
    assert all(d.state is TaskState.COMPLETED for d in result.documents)
    assert llm.count("/chat/completions") + llm.count("/embeddings") == documents * 4
    # Reports of a large task are files, not workflow state.
    assert all(not d.report and d.report_file for d in result.documents)
    first = settings.report_folder() / result.documents[0].report_file
    assert first.read_text(encoding="utf-8").strip()
    assert {d.name for d in result.documents} == {p.name for p in paths}

    history = await handle.fetch_history()
    batches = [
        e
        for e in history.events
        if e.HasField("activity_task_scheduled_event_attributes")
        and e.activity_task_scheduled_event_attributes.activity_type.name == "process_documents"
    ]
    takes = [
        e
        for e in history.events
        if e.HasField("workflow_execution_signaled_event_attributes")
        and e.workflow_execution_signaled_event_attributes.signal_name == ASK_DOCUMENTS_SIGNAL
    ]
    # A batch takes the next documents as its places free (up to its fair share of them), so
    # far fewer batches run than the documents fill at one batch each.
    assert takes
    assert len(batches) < -(-documents // task.batch_documents)
    # Far inside Temporal's limits (51,200 events): a few events per document.
    assert len(history.events) < 4 * documents

    # The checkpoint names finished documents as ranges: a few bytes for all of them.
    latest = await read_text(redis, f"task:{task.task_id}:latest")
    final = await read_json(redis, f"checkpoint:{latest}")
    assert final["state"]["variables"]["finished"] == f"0-{documents - 1}"
    assert final["state"]["step_results"] == []
    assert len(await read_text(redis, f"checkpoint:{latest}")) < 20_000


def _server_prompt_tokens(request: dict[str, object]) -> int:
    """Prompt tokens as the LLM server itself counts them for a request body."""
    body = request["body"]
    assert isinstance(body, dict)
    if "messages" in body:
        return prompt_of(body["messages"])[1]
    inputs = body["input"]
    return estimate_tokens(*(inputs if isinstance(inputs, list) else [inputs]))


async def test_the_ledger_adds_up_against_the_servers_request_log(
    client: Client, settings: Settings, worker: Worker, llm: LlmServer, tmp_path: Path
) -> None:
    write_corpus(tmp_path / "corpus", 6)
    llm.add(
        {"type": "fail", "status": 503, "times": 2, "match": {"model": "gpt-4.1"}},
        {"type": "fail", "status": 500, "times": 1, "match": {"model": "gemini-2.5-flash"}},
    )
    _task, handle = await start(client, settings, [tmp_path / "corpus"])
    result = await handle.result()
    assert result.state is TaskState.COMPLETED

    served = llm.requests()
    rows = result.ledger.rows()
    by_model: Counter[str] = Counter()
    failed_by_model: Counter[str] = Counter()
    for row in rows:
        by_model[row.model] += row.calls
        if row.status != "success":
            failed_by_model[row.model] += row.calls
    assert by_model == Counter(r["body"]["model"] for r in served)
    assert failed_by_model == Counter(
        r["body"]["model"] for r in served if r["status"] >= 400 or not r["completed"]
    )
    assert failed_by_model == Counter({"gpt-4.1": 2, "gemini-2.5-flash": 1})
    # Failed attempts are rows of their own, on their attempt number (the two 503s hit one
    # call twice, or two calls once each).
    failures = {(r.model, r.attempt, r.status) for r in rows if r.status != "success"}
    assert {("gpt-4.1", 1, "server_error"), ("gemini-2.5-flash", 1, "server_error")} <= failures
    assert failures <= {
        ("gpt-4.1", 1, "server_error"),
        ("gpt-4.1", 2, "server_error"),
        ("gemini-2.5-flash", 1, "server_error"),
    }
    # Prompt tokens: exactly what the server counted for the answers it gave.
    prompt_by_model: Counter[str] = Counter()
    for request in served:
        if request["status"] < 400:
            prompt_by_model[request["body"]["model"]] += _server_prompt_tokens(request)
    ledger_prompt: Counter[str] = Counter()
    for row in rows:
        ledger_prompt[row.model] += row.prompt_tokens
    assert ledger_prompt == prompt_by_model
    # The ledger and the task's usage are the same tokens, priced the same way.
    assert sum(r.prompt_tokens + r.completion_tokens for r in rows) == result.usage.total_tokens
    for model, prompt in result.usage.prompt_tokens.items():
        assert sum(r.prompt_tokens for r in rows if r.model == model) == prompt
    for model, completion in result.usage.completion_tokens.items():
        assert sum(r.completion_tokens for r in rows if r.model == model) == completion
    # Each row's cost is rounded to the micro-dollar, the total once.
    assert abs(sum(r.cost() for r in rows) - result.cost_so_far) <= 1e-6 * len(rows)


async def test_a_batch_that_fails_for_good_books_what_it_paid(
    client: Client, settings: Settings, worker: Worker, llm: LlmServer, tmp_path: Path
) -> None:
    write_corpus(tmp_path / "corpus", 1)
    # The embedding and the page summary are paid, then the reasoning meets a refused key:
    # the batch fails for good and the task stops.
    llm.add({"type": "fail", "status": 401, "times": None, "match": {"model": "gemini-2.5-flash"}})
    _task, handle = await start(client, settings, [tmp_path / "corpus"])
    with pytest.raises(WorkflowFailureError) as raised:
        await handle.result()
    cause = raised.value.cause
    assert isinstance(cause, ApplicationError) and cause.type == "TASK_FAILED"
    result = TaskResult.model_validate(cause.details[0])

    served = llm.requests()
    rows = result.ledger.rows()
    calls: Counter[tuple[str, str]] = Counter()
    for row in rows:
        calls[(row.model, row.status)] += row.calls
    assert calls == Counter(
        {("deepseek-v3.2", "success"): 2, ("gemini-2.5-flash", "auth_failed"): 1}
    )
    assert len(served) == 3
    prompt = sum(_server_prompt_tokens(r) for r in served if r["status"] < 400)
    assert sum(row.prompt_tokens for row in rows) == prompt > 0
    assert sum(r.prompt_tokens + r.completion_tokens for r in rows) == result.usage.total_tokens
    assert abs(sum(r.cost() for r in rows) - result.cost_so_far) <= 1e-6 * len(rows)
    assert result.cost_so_far > 0


async def test_a_spent_budget_stops_the_task_and_a_larger_one_finishes_it(
    client: Client, settings: Settings, worker: Worker, llm: LlmServer, tmp_path: Path
) -> None:
    documents = 10
    write_corpus(tmp_path / "corpus", documents)
    budget = 0.004  # about three one-page documents at the default prices
    task, handle = await start(
        client,
        settings,
        [tmp_path / "corpus"],
        document_concurrency=1,
        budget=TaskBudget(max_cost_usd=budget),
    )
    stopped = await handle.result()
    assert stopped.state is TaskState.BUDGET_EXCEEDED
    assert "reached the budget" in stopped.reason
    reported = [d for d in stopped.documents if d.state is TaskState.COMPLETED]
    assert 0 < len(reported) < documents
    per_document = stopped.cost_so_far / len(reported)
    # One document in flight at a time: it stops within one document of the budget.
    assert budget <= stopped.cost_so_far < budget + per_document * 1.5
    calls_before = llm.count("/chat/completions") + llm.count("/embeddings")
    assert calls_before == len(reported) * CALLS_PER_DOCUMENT

    message = await TaskClient(client, settings).resume(task.task_id, None, budget_usd=1.0)
    assert "new run" in message
    finished: TaskResult = await client.get_workflow_handle(
        task.task_id, result_type=TaskResult
    ).result()
    assert finished.state is TaskState.COMPLETED
    assert len(finished.documents) == documents
    # Nothing paid twice: every document's calls were made once over both runs.
    calls = llm.count("/chat/completions") + llm.count("/embeddings")
    assert calls == documents * CALLS_PER_DOCUMENT
    assert finished.cost_so_far > stopped.cost_so_far


async def test_streams_cut_by_the_provider_are_booked_as_billed(
    client: Client, settings: Settings, worker: Worker, llm: LlmServer, tmp_path: Path
) -> None:
    """A stream the provider began and then cut is billed for its prompt: the ledger books it
    too (estimated as the provider counts, since no usage came), and the retry's tokens."""
    write_corpus(tmp_path / "corpus", 3)
    llm.add(
        {"type": "stream_fault", "kind": "disconnect", "after_chunks": 3,
         "match": {"model": "gemini-2.5-flash"}},
        {"type": "stream_fault", "kind": "truncate", "after_chunks": 2,
         "match": {"model": settings.model_final}},
    )  # fmt: skip
    _task, handle = await start(client, settings, [tmp_path / "corpus"])
    result = await handle.result()
    assert result.state is TaskState.COMPLETED

    served = llm.requests()
    cut = [r for r in served if r["status"] == 200 and r.get("fault")]
    assert len(cut) == 2, "both faults cut a stream"
    billed: Counter[str] = Counter()
    for request in served:
        if request["status"] < 400:
            billed[request["body"]["model"]] += _server_prompt_tokens(request)
    booked: Counter[str] = Counter()
    for row in result.ledger.rows():
        booked[row.model] += row.prompt_tokens
    assert booked == billed
    assert sum(row.calls for row in result.ledger.rows()) == len(served)
