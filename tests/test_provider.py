"""Provider calls against the local LLM server: answers, stream checks and error classification."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import timedelta

import openai
import pytest
from temporalio.exceptions import ApplicationError

from activities.attempts import AttemptLedger, ProviderFailure, step_failure
from activities.errors import StreamBrokenError
from activities.provider import CallLimits, chat, embed, make_client, stream_chat
from longtask.policies import TimeoutPolicy
from longtask.tooling.servers import LlmServer
from tests.conftest import TEST_API_KEY

LIMITS = CallLimits(total=5, first_chunk=2, stall=2)
MESSAGES: list[openai.types.chat.ChatCompletionMessageParam] = [
    {"role": "user", "content": "Summarize: the quarter went well."}
]


@pytest.fixture
async def provider(llm: LlmServer) -> AsyncIterator[openai.AsyncOpenAI]:
    client = make_client(llm.base_url, TEST_API_KEY)
    yield client
    await client.close()


def classified(error: BaseException, where: str) -> ApplicationError:
    """How a step fails after this one provider failure, as the step itself decides."""
    failure = ProviderFailure(0, where, error, TEST_API_KEY)
    return step_failure([failure], AttemptLedger(), TimeoutPolicy(), TEST_API_KEY)


async def failure_of(provider: openai.AsyncOpenAI) -> ApplicationError:
    with pytest.raises(Exception) as raised:
        await chat(provider, "gpt-4.1", MESSAGES, LIMITS)
    return classified(raised.value, "summarize page 1 of a.pdf")


async def test_chat_returns_text_and_usage(provider: openai.AsyncOpenAI) -> None:
    answer = await chat(provider, "gpt-4.1", MESSAGES, LIMITS)
    assert answer.text
    assert answer.prompt_tokens > 0 and answer.completion_tokens > 0


async def test_stream_reports_each_chunk_and_needs_a_finish_reason(
    llm: LlmServer, provider: openai.AsyncOpenAI
) -> None:
    llm.add({"type": "reply", "text": "one two three four five six"})
    seen: list[int] = []
    answer = await stream_chat(provider, "gpt-4.1", MESSAGES, LIMITS, lambda p, n: seen.append(n))
    assert answer.text == "one two three four five six"
    assert seen == sorted(seen) and len(seen) >= 3
    llm.add({"type": "stream_fault", "kind": "truncate", "after_chunks": 2})
    with pytest.raises(StreamBrokenError, match="without a finish reason"):
        await chat(provider, "gpt-4.1", MESSAGES, LIMITS)


async def test_a_stream_that_goes_silent_is_cut_as_hung(
    llm: LlmServer, provider: openai.AsyncOpenAI
) -> None:
    llm.add({"type": "stream_fault", "kind": "stall", "after_chunks": 2, "stall_seconds": 20})
    limits = CallLimits(total=30, first_chunk=5, stall=0.5)
    with pytest.raises(
        StreamBrokenError, match=r"hung: nothing for 0\.\d s after chunk 2 \(limit 0\.5 s\)"
    ) as raised:
        await chat(provider, "gpt-4.1", MESSAGES, limits)
    assert raised.value.kind.value == "TIMEOUT"


async def test_slow_first_token_waits_up_to_its_limit_then_is_cut(
    llm: LlmServer, provider: openai.AsyncOpenAI
) -> None:
    llm.add({"type": "slow_first_token", "seconds": 0.6})
    patient = CallLimits(total=30, first_chunk=2, stall=0.3)
    assert (await chat(provider, "gpt-4.1", MESSAGES, patient)).text
    llm.add({"type": "slow_first_token", "seconds": 3})
    hasty = CallLimits(total=30, first_chunk=0.5, stall=0.3)
    with pytest.raises(StreamBrokenError, match="before the first chunk"):
        await chat(provider, "gpt-4.1", MESSAGES, hasty)


async def test_a_slow_stream_that_keeps_sending_is_not_cut(
    llm: LlmServer, provider: openai.AsyncOpenAI
) -> None:
    llm.add({"type": "reply", "text": " ".join(f"w{i}" for i in range(40))})
    llm.add({"type": "delay", "seconds": 0.0})
    limits = CallLimits(total=30, first_chunk=2, stall=0.5)
    answer = await chat(provider, "gpt-4.1", MESSAGES, limits)
    assert answer.text.split() == [f"w{i}" for i in range(40)]


async def test_the_attempt_timeout_bounds_the_whole_answer(
    llm: LlmServer, provider: openai.AsyncOpenAI
) -> None:
    llm.add({"type": "stream_fault", "kind": "stall", "after_chunks": 1, "stall_seconds": 5})
    limits = CallLimits(total=1, first_chunk=10, stall=10)
    with pytest.raises(StreamBrokenError, match="within the attempt's 1 s"):
        await chat(provider, "gpt-4.1", MESSAGES, limits)


async def test_embeddings_come_back_in_order(provider: openai.AsyncOpenAI) -> None:
    vectors, _ = await embed(provider, "deepseek-v3.2", ["alpha", "beta", "alpha"], LIMITS)
    assert len(vectors) == 3 and vectors[0] == vectors[2] != vectors[1]


@pytest.mark.parametrize(
    ("status", "kind", "non_retryable"),
    [
        (400, "INVALID_REQUEST", True),
        (404, "INVALID_REQUEST", True),
        (422, "INVALID_REQUEST", True),
        (401, "AUTH_FAILED", True),
        (403, "AUTH_FAILED", True),
        (500, "SERVER_ERROR", False),
        (503, "SERVER_ERROR", False),
    ],
)
async def test_http_status_becomes_a_typed_error(
    llm: LlmServer, provider: openai.AsyncOpenAI, status: int, kind: str, non_retryable: bool
) -> None:
    llm.add({"type": "fail", "status": status})
    error = await failure_of(provider)
    assert error.type == kind
    assert error.non_retryable is non_retryable
    assert error.message.startswith(f"summarize page 1 of a.pdf: {kind}: ")
    assert TEST_API_KEY not in error.message


async def test_rate_limit_waits_what_the_provider_asks(
    llm: LlmServer, provider: openai.AsyncOpenAI
) -> None:
    llm.add({"type": "fail", "status": 429, "retry_after": 3})
    error = await failure_of(provider)
    assert error.type == "RATE_LIMITED" and not error.non_retryable
    assert error.next_retry_delay == timedelta(seconds=3)


async def test_connection_refused_is_a_connection_error() -> None:
    client = make_client("http://127.0.0.1:9/v1", TEST_API_KEY)
    with pytest.raises(openai.APIConnectionError) as raised:
        await chat(client, "gpt-4.1", MESSAGES, LIMITS)
    assert classified(raised.value, "x").type == "CONNECTION"
    await client.close()
