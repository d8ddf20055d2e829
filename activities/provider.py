"""Calls to an OpenAI-compatible provider, each bounded by its attempt's timeout and cut when
it stops sending."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any, cast

import openai
from openai.types.chat import ChatCompletionMessageParam
from pydantic import BaseModel, Field

from activities.continuation import estimate_prompt_tokens, estimate_tokens
from activities.errors import StreamBrokenError
from longtask.policies import ErrorKind
from longtask.tracing import traced_provider_call


class StreamedToolCall(BaseModel):
    """A tool call the model asked for, put together from its streamed pieces."""

    id: str = ""
    name: str = ""
    arguments: str = ""


class ChatAnswer(BaseModel):
    text: str
    prompt_tokens: int
    completion_tokens: int
    finish_reason: str = "stop"
    tool_calls: list[StreamedToolCall] = Field(default_factory=list)
    # What the provider's pace was, for limits that learn it (activities/latency.py).
    first_chunk_seconds: float = 0.0
    longest_gap_seconds: float = 0.0


@dataclass
class StreamTally:
    """What one attempt's stream did: whether the provider began its answer (from then on it
    bills the prompt) and the pieces it sent, for the ledger of an attempt that fails."""

    responded: bool = False
    parts: list[str] = field(default_factory=list)

    def streamed_tokens(self) -> int:
        return estimate_tokens("".join(self.parts))


class CallLimits(BaseModel):
    """Time limits of one attempt: the whole answer, the first chunk, and any later gap."""

    total: float
    first_chunk: float
    stall: float


def make_client(base_url: str, api_key: str) -> openai.AsyncOpenAI:
    # Temporal owns retries: a second retrying layer would multiply attempts and waits.
    return openai.AsyncOpenAI(base_url=base_url, api_key=api_key, max_retries=0)


@asynccontextmanager
async def _attempt_deadline(seconds: float) -> AsyncIterator[None]:
    """The attempt's overall timeout, raised as a TIMEOUT that says which limit it was."""
    try:
        async with asyncio.timeout(seconds):
            yield
    except TimeoutError:
        raise StreamBrokenError(
            f"no complete answer within the attempt's {seconds:g} s", ErrorKind.TIMEOUT
        ) from None


@traced_provider_call("chat")
async def stream_chat(
    client: openai.AsyncOpenAI,
    model: str,
    messages: list[ChatCompletionMessageParam],
    limits: CallLimits,
    on_text: Callable[[list[str], int], None],
    tally: StreamTally | None = None,
    tools: list[dict[str, Any]] | None = None,
) -> ChatAnswer:
    """A streamed chat completion.

    A call that sends nothing for ``limits.first_chunk``, or goes silent for ``limits.stall``
    between chunks, is hung and is cut; a slow stream that keeps sending runs until the
    attempt's ``limits.total``. ``on_text`` gets the pieces so far (joined only when someone
    reads them) and the chunk count after every chunk. An answer that ends without a finish
    reason is never taken as complete.
    """
    parts: list[str] = []
    calls: dict[int, StreamedToolCall] = {}
    chunks = 0
    finish: str | None = None
    prompt_tokens = completion_tokens = 0
    loop = asyncio.get_running_loop()
    started = last_chunk = loop.time()
    first_chunk = longest_gap = 0.0
    async with _attempt_deadline(limits.total):
        try:
            async with asyncio.timeout(limits.first_chunk) as watchdog:
                stream = await client.chat.completions.create(
                    model=model,
                    messages=messages,
                    stream=True,
                    stream_options={"include_usage": True},
                    timeout=limits.total,
                    tools=cast(Any, tools) if tools else openai.omit,
                )
                if tally is not None:  # the provider began its answer: it bills the prompt
                    tally.responded = True
                    tally.parts = parts
                async for chunk in stream:
                    now = loop.time()
                    watchdog.reschedule(now + limits.stall)
                    if chunks == 0:
                        first_chunk = now - started
                    else:
                        longest_gap = max(longest_gap, now - last_chunk)
                    last_chunk = now
                    chunks += 1
                    if chunk.usage is not None:
                        prompt_tokens = chunk.usage.prompt_tokens
                        completion_tokens = chunk.usage.completion_tokens
                    for choice in chunk.choices:
                        if choice.delta.content:
                            parts.append(choice.delta.content)
                        for delta in choice.delta.tool_calls or []:
                            call = calls.setdefault(delta.index, StreamedToolCall())
                            call.id = delta.id or call.id
                            if delta.function is not None:
                                call.name = delta.function.name or call.name
                                call.arguments += delta.function.arguments or ""
                        if choice.finish_reason is not None:
                            finish = choice.finish_reason
                    on_text(parts, chunks)
        except TimeoutError:
            limit = limits.first_chunk if chunks == 0 else limits.stall
            where = "before the first chunk" if chunks == 0 else f"after chunk {chunks}"
            # The silence as this client saw it: how late a busy loop cut, next to the limit.
            silent = loop.time() - (started if chunks == 0 else last_chunk)
            raise StreamBrokenError(
                f"hung: nothing for {silent:.1f} s {where} (limit {limit:g} s)", ErrorKind.TIMEOUT
            ) from None
    if finish is None:
        raise StreamBrokenError(
            f"stream ended after {chunks} chunks without a finish reason", ErrorKind.CONNECTION
        )
    text = "".join(parts)
    if prompt_tokens == completion_tokens == 0:
        # A whole answer whose usage chunk did not come (cut after its finish reason): billed
        # all the same, so estimated as the provider counts.
        prompt_tokens = estimate_prompt_tokens(messages)
        completion_tokens = max(1, estimate_tokens(text))
    return ChatAnswer(
        text=text,
        prompt_tokens=prompt_tokens,
        completion_tokens=completion_tokens,
        finish_reason=finish,
        tool_calls=[calls[index] for index in sorted(calls)],
        first_chunk_seconds=first_chunk,
        longest_gap_seconds=longest_gap,
    )


async def chat(
    client: openai.AsyncOpenAI,
    model: str,
    messages: list[ChatCompletionMessageParam],
    limits: CallLimits,
    tally: StreamTally | None = None,
) -> ChatAnswer:
    """A chat completion, streamed so that a hung call is told apart from a slow one."""
    return await stream_chat(client, model, messages, limits, lambda parts, chunks: None, tally)


@traced_provider_call("embed")
async def embed(
    client: openai.AsyncOpenAI, model: str, texts: list[str], limits: CallLimits
) -> tuple[list[list[float]], int]:
    """Vectors for ``texts`` in order, and the prompt tokens the provider counted.

    An embedding answer comes whole, so the first-chunk limit bounds the whole call. Its JSON
    is read as plain data: the client's typed models build every float one by one, which for
    a batch of vectors holds the event loop (and every heartbeat of the worker) for long.
    """
    seconds = min(limits.first_chunk, limits.total)
    try:
        async with asyncio.timeout(seconds):
            raw = await client.embeddings.with_raw_response.create(
                model=model, input=texts, encoding_format="float", timeout=seconds
            )
    except TimeoutError:
        raise StreamBrokenError(
            f"hung: no answer within {seconds:g} s", ErrorKind.TIMEOUT
        ) from None
    vectors, tokens = _embedding_answer(raw.http_response.json())
    if len(vectors) != len(texts):
        raise StreamBrokenError(
            f"asked for {len(texts)} embeddings, got {len(vectors)}", ErrorKind.SERVER_ERROR
        )
    return vectors, tokens


def _embedding_answer(body: Any) -> tuple[list[list[float]], int]:
    """The vectors of an embeddings answer in input order, and its prompt tokens."""
    try:
        items = sorted(body["data"], key=lambda item: item["index"])
        vectors = [[float(x) for x in item["embedding"]] for item in items]
        usage = body.get("usage") or {}
        return vectors, int(usage.get("prompt_tokens") or 0)
    except (KeyError, TypeError, ValueError, AttributeError) as error:
        raise StreamBrokenError(
            f"an embeddings answer of an unexpected shape ({error!r})", ErrorKind.SERVER_ERROR
        ) from None
