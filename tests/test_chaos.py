"""Real provider faults from the local LLM server: each ends as the timeout controller says,
and the server's own verdict on the client finds nothing wrong."""

from __future__ import annotations

from collections import Counter
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest
from prometheus_client import generate_latest
from redis.asyncio import Redis
from temporalio.client import Client, WorkflowFailureError
from temporalio.exceptions import ApplicationError
from temporalio.worker import Worker

from activities.provider import make_client
from longtask.models import TaskResult
from longtask.policies import StepKind, TaskType
from longtask.settings import Settings
from longtask.states import TaskState
from longtask.tooling.servers import LlmServer
from tests.conftest import EXAMPLES
from tests.tasks import start, write_documents
from worker import build_worker

# What the verdict must never say about this client (llmock's own finding codes).
FORBIDDEN = {
    "retry_after_ignored",
    "retried_non_retryable",
    "retry_storm",
    "truncated_stream_accepted",
    "no_backoff",
    "no_read_timeout",
}
DOCUMENT = EXAMPLES / "incident-postmortem.txt"  # 3 pages: 1 embedding, 5 chat calls
# A stalled call is cut after 1 s here (the defaults, per task type, are 20-60 s).
QUICK_STALL = {
    "hang_limits": {t.value: {"first_chunk_seconds": 1, "silence_seconds": 1} for t in TaskType},
    "learn_hang_limits": False,
}


def findings(llm: LlmServer) -> set[str]:
    return {finding["code"] for finding in llm.verdict()["findings"]}


def attempts_per_call(llm: LlmServer) -> Counter[str]:
    """Requests per distinct request body: the attempts of each call."""
    return Counter(r["fingerprint"] for r in llm.requests())


async def run(
    client: Client, settings: Settings, llm: LlmServer, paths: list[Path] | None = None
) -> TaskResult:
    _, handle = await start(client, settings, paths or [DOCUMENT], policy=QUICK_STALL)
    result = await handle.result()
    assert not findings(llm) & FORBIDDEN, llm.verdict()["findings"]
    return result


async def failed_run(client: Client, settings: Settings, llm: LlmServer) -> TaskResult:
    _, handle = await start(client, settings, [DOCUMENT], policy=QUICK_STALL)
    with pytest.raises(WorkflowFailureError) as raised:
        await handle.result()
    cause = raised.value.cause
    assert isinstance(cause, ApplicationError) and cause.type == "TASK_FAILED"
    assert not findings(llm) & FORBIDDEN, llm.verdict()
    return TaskResult.model_validate(cause.details[0])


def summaries(**match: Any) -> dict[str, Any]:
    return {"model": "deepseek-v3.2", "path": "/v1/chat/completions", **match}


async def test_429_waits_for_retry_after_then_completes(
    client: Client, settings: Settings, worker: Worker, llm: LlmServer
) -> None:
    llm.add({"type": "fail", "status": 429, "retry_after": 1, "times": 2, "match": summaries()})
    result = await run(client, settings, llm)
    assert result.state is TaskState.COMPLETED
    assert result.calls[StepKind.SUMMARIZE].errors == 2
    assert max(attempts_per_call(llm).values()) <= 3


@pytest.mark.parametrize("status", [500, 503])
async def test_server_error_bursts_back_off_then_complete(
    client: Client, settings: Settings, worker: Worker, llm: LlmServer, status: int
) -> None:
    llm.add({"type": "fail", "status": status, "times": 2, "match": summaries()})
    llm.add({"type": "fail", "status": status, "times": 2, "match": {"model": "gpt-4.1"}})
    result = await run(client, settings, llm)
    assert result.state is TaskState.COMPLETED
    assert result.calls[StepKind.REPORT].errors == 2
    assert result.calls[StepKind.REPORT].successes == 1


async def test_permanent_outage_fails_cleanly_after_four_attempts(
    client: Client, settings: Settings, worker: Worker, llm: LlmServer
) -> None:
    llm.add({"type": "fail", "status": 503, "times": None})
    result = await failed_run(client, settings, llm)
    assert result.documents[0].state is TaskState.FAILED
    assert "gave up after 4 attempts" in result.documents[0].error
    assert "SERVER_ERROR" in result.documents[0].error
    # The first call out of attempts ends the document; no call ever goes past four.
    assert max(attempts_per_call(llm).values()) == 4


@pytest.mark.parametrize(("status", "kind"), [(400, "INVALID_REQUEST"), (403, "AUTH_FAILED")])
async def test_invalid_request_and_auth_failure_are_not_retried(
    client: Client, settings: Settings, worker: Worker, llm: LlmServer, status: int, kind: str
) -> None:
    llm.add({"type": "fail", "status": status, "times": None, "match": {"model": "gpt-4.1"}})
    result = await failed_run(client, settings, llm)
    error = result.documents[0].error
    assert error.startswith(f"report step of {DOCUMENT.name}: {kind}: ")
    assert llm.count("/chat/completions", "gpt-4.1") == 1


@pytest.mark.parametrize("fault", ["disconnect", "truncate", "malformed"])
async def test_a_broken_stream_is_never_taken_as_an_answer(
    client: Client, settings: Settings, worker: Worker, llm: LlmServer, fault: str
) -> None:
    llm.add(
        {"type": "reply", "text": "A long analysis " * 20, "match": {"model": "gemini-2.5-flash"}}
    )
    llm.add(
        {
            "type": "stream_fault",
            "kind": fault,
            "after_chunks": 3,
            "match": {"model": "gemini-2.5-flash"},
        }
    )
    result = await run(client, settings, llm)
    assert result.state is TaskState.COMPLETED
    assert result.calls[StepKind.REASON].attempts == 2
    assert result.calls[StepKind.REASON].errors == 1
    assert "malformed_chunk_ignored" not in findings(llm)


async def test_a_stalled_stream_is_cut_and_retried(
    client: Client, settings: Settings, worker: Worker, llm: LlmServer
) -> None:
    llm.add(
        {"type": "stream_fault", "kind": "stall", "after_chunks": 2, "stall_seconds": 30,
         "match": {"model": "gpt-4.1"}}
    )  # fmt: skip
    result = await run(client, settings, llm)
    assert result.state is TaskState.COMPLETED
    assert result.calls[StepKind.REPORT].timeouts == 1
    stalled = [r for r in llm.requests() if r["fault"] and "stall" in str(r["fault"])]
    assert stalled, llm.requests()
    # Cut after the 1 s stall limit, long before the 30 s stall would have ended by itself.
    assert stalled[0]["ended_at"] - stalled[0]["started_at"] < 15


async def test_a_slow_first_token_within_the_stall_limit_is_waited_for(
    client: Client, settings: Settings, worker: Worker, llm: LlmServer
) -> None:
    llm.add({"type": "slow_first_token", "seconds": 0.5, "match": {"model": "gpt-4.1"}})
    result = await run(client, settings, llm)
    assert result.calls[StepKind.REPORT].attempts == 1
    assert result.calls[StepKind.REPORT].timeouts == 0


async def test_a_first_token_later_than_the_stall_limit_is_cut_then_retried(
    client: Client, settings: Settings, worker: Worker, llm: LlmServer
) -> None:
    llm.add({"type": "slow_first_token", "seconds": 20, "match": {"model": "gpt-4.1"}})
    result = await run(client, settings, llm)
    assert result.state is TaskState.COMPLETED
    assert result.calls[StepKind.REPORT].timeouts == 1
    assert result.calls[StepKind.REPORT].successes == 1


async def test_per_attempt_metrics_are_exported(
    client: Client, settings: Settings, worker: Worker, llm: LlmServer
) -> None:
    llm.add({"type": "fail", "status": 503, "times": 1, "match": {"model": "gpt-4.1"}})
    _, handle = await start(client, settings, [DOCUMENT], policy=QUICK_STALL)
    result = await handle.result()
    exported = generate_latest().decode()
    task = f'task_id="{result.task_id}"'
    lines = [line for line in exported.splitlines() if task in line and "report" in line]
    assert any('attempt="1"' in line and 'status="error"' in line for line in lines), lines
    assert any('attempt="2"' in line and 'status="success"' in line for line in lines), lines
    # The second attempt ran under twice the first one's timeout.
    timeouts = {
        line.split('attempt="')[1][0]: line.split()[-1]
        for line in lines
        if "timeout_seconds{" in line
    }
    assert (timeouts["1"], timeouts["2"]) == ("30.0", "60.0")
    # Tokens and dollars per step kind and model.
    assert 'ltm_tokens_total{direction="completion",model="gpt-4.1",step="report"}' in exported
    assert 'ltm_cost_usd_total{model="gpt-4.1",step="report"}' in exported


async def test_a_refused_key_stops_the_whole_task_at_once(
    client: Client, settings: Settings, worker: Worker, llm: LlmServer, tmp_path: Path
) -> None:
    llm.add({"type": "fail", "status": 401, "times": None})
    paths = write_documents(tmp_path, count=4, pages=2)
    _, handle = await start(client, settings, paths, policy=QUICK_STALL, document_concurrency=1)
    with pytest.raises(WorkflowFailureError) as raised:
        await handle.result()
    cause = raised.value.cause
    assert isinstance(cause, ApplicationError) and cause.type == "TASK_FAILED"
    assert "stopped at the first AUTH_FAILED" in cause.message
    # No other document was tried with a key the provider refuses: one request per call of
    # the first document's first steps, none repeated.
    assert set(attempts_per_call(llm).values()) == {1}
    assert len(llm.requests()) <= 1 + 2
    assert not findings(llm) & FORBIDDEN


@pytest.fixture(scope="module")
def quota_llm() -> Iterator[LlmServer]:
    with LlmServer("--rpm", "60") as server:
        yield server


@pytest.fixture
async def quota_worker(
    client: Client, settings: Settings, redis: Redis, quota_llm: LlmServer
) -> AsyncIterator[Settings]:
    quota_llm.reset()
    quota_settings = settings.model_copy(update={"llm_base_url": quota_llm.base_url})
    llm_client = make_client(quota_llm.base_url, settings.llm_api_key.get_secret_value())
    async with build_worker(client, quota_settings, llm_client, redis):
        yield quota_settings
    await llm_client.close()


async def test_a_request_quota_is_waited_out_not_stormed(
    client: Client, quota_worker: Settings, quota_llm: LlmServer, tmp_path: Path
) -> None:
    # 2 documents of 30 pages: 66 requests against a bucket of 60 refilled at 1 per second.
    paths = write_documents(tmp_path, count=2, pages=30)
    result = await run(client, quota_worker, quota_llm, paths)
    assert result.state is TaskState.COMPLETED
    refused = [r for r in quota_llm.requests() if r["status"] == 429]
    assert refused, "the quota was never reached: the test proves nothing"
    assert max(attempts_per_call(quota_llm).values()) <= 7
