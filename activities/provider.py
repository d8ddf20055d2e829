"""Calls to an OpenAI-compatible provider, each bounded by its attempt's timeout."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import openai
from openai.types.chat import ChatCompletionMessageParam
from pydantic import BaseModel

from activities.errors import StreamBrokenError
from longtask.policies import ErrorKind


class ChatAnswer(BaseModel):
    text: str
    prompt_tokens: int
    completion_tokens: int


def make_client(base_url: str, api_key: str) -> openai.AsyncOpenAI:
    # Temporal owns retries: a second retrying layer would multiply attempts and waits.
    return openai.AsyncOpenAI(base_url=base_url, api_key=api_key, max_retries=0)


async def chat(
    client: openai.AsyncOpenAI,
    model: str,
    messages: list[ChatCompletionMessageParam],
    timeout: float,
) -> ChatAnswer:
    """One non-streamed chat completion that must finish within ``timeout`` seconds."""
    async with asyncio.timeout(timeout):
        response = await client.chat.completions.create(
            model=model,
            messages=messages,
            timeout=timeout,
        )
    choice = response.choices[0] if response.choices else None
    if choice is None or choice.finish_reason is None:
        raise StreamBrokenError("answer had no finish reason", ErrorKind.SERVER_ERROR)
    usage = response.usage
    return ChatAnswer(
        text=choice.message.content or "",
        prompt_tokens=usage.prompt_tokens if usage else 0,
        completion_tokens=usage.completion_tokens if usage else 0,
    )


async def stream_chat(
    client: openai.AsyncOpenAI,
    model: str,
    messages: list[ChatCompletionMessageParam],
    timeout: float,
    idle_timeout: float,
    on_text: Callable[[list[str], int], None],
) -> ChatAnswer:
    """A streamed chat completion.

    The whole answer must arrive within ``timeout``; a gap of ``idle_timeout`` between chunks
    is a hang and is cut, while a slow stream that keeps sending is left alone. ``on_text``
    gets the pieces so far (joined only when someone reads them) and the chunk count after
    every chunk. An answer that ends without a
    finish reason is never taken as complete.
    """
    parts: list[str] = []
    chunks = 0
    finish: str | None = None
    prompt_tokens = completion_tokens = 0
    async with asyncio.timeout(timeout):
        stream = await client.chat.completions.create(
            model=model,
            messages=messages,
            stream=True,
            stream_options={"include_usage": True},
            timeout=timeout,
        )
        iterator = stream.__aiter__()
        while True:
            try:
                chunk = await asyncio.wait_for(iterator.__anext__(), idle_timeout)
            except StopAsyncIteration:
                break
            chunks += 1
            if chunk.usage is not None:
                prompt_tokens = chunk.usage.prompt_tokens
                completion_tokens = chunk.usage.completion_tokens
            for choice in chunk.choices:
                if choice.delta.content:
                    parts.append(choice.delta.content)
                if choice.finish_reason is not None:
                    finish = choice.finish_reason
            on_text(parts, chunks)
    if finish is None:
        raise StreamBrokenError(
            f"stream ended after {chunks} chunks without a finish reason", ErrorKind.CONNECTION
        )
    return ChatAnswer(
        text="".join(parts), prompt_tokens=prompt_tokens, completion_tokens=completion_tokens
    )


async def embed(
    client: openai.AsyncOpenAI, model: str, texts: list[str], timeout: float
) -> tuple[list[list[float]], int]:
    """Vectors for ``texts`` in order, and the prompt tokens the provider counted."""
    async with asyncio.timeout(timeout):
        response = await client.embeddings.create(model=model, input=texts, timeout=timeout)
    vectors = [item.embedding for item in sorted(response.data, key=lambda item: item.index)]
    if len(vectors) != len(texts):
        raise StreamBrokenError(
            f"asked for {len(texts)} embeddings, got {len(vectors)}", ErrorKind.SERVER_ERROR
        )
    return vectors, response.usage.prompt_tokens if response.usage else 0
