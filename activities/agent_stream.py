"""A chat completion with tools, streamed so a hung call is told apart from a slow one."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any, cast

import openai
from pydantic import BaseModel, Field

from activities.errors import StreamBrokenError
from activities.provider import CallLimits
from longtask.agent import ToolCall
from longtask.policies import ErrorKind


class StreamedAnswer(BaseModel):
    text: str
    tool_calls: list[ToolCall] = Field(default_factory=list)
    finish_reason: str
    prompt_tokens: int = 0
    completion_tokens: int = 0


class _ToolCallParts:
    """A tool call as its chunks arrive: id and name first, arguments in pieces."""

    def __init__(self) -> None:
        self.id = ""
        self.name = ""
        self.arguments: list[str] = []

    def done(self) -> ToolCall:
        return ToolCall(id=self.id, name=self.name, arguments="".join(self.arguments) or "{}")


async def stream_answer(
    client: openai.AsyncOpenAI,
    model: str,
    messages: list[dict[str, Any]],
    tools: list[dict[str, Any]],
    limits: CallLimits,
    on_text: Callable[[list[str], int], None],
) -> StreamedAnswer:
    """One streamed chat completion with optional tools, under the attempt's limits.

    Nothing for ``limits.first_chunk``, or silence for ``limits.stall`` between chunks, is a
    hung call (TIMEOUT); the whole answer gets ``limits.total``. An answer without a finish
    reason is never taken as complete.
    """
    parts: list[str] = []
    calls: dict[int, _ToolCallParts] = {}
    chunks = 0
    finish: str | None = None
    prompt_tokens = completion_tokens = 0
    loop = asyncio.get_running_loop()
    try:
        async with asyncio.timeout(limits.total):
            try:
                async with asyncio.timeout(limits.first_chunk) as watchdog:
                    stream = await client.chat.completions.create(
                        model=model,
                        messages=cast(Any, messages),
                        stream=True,
                        stream_options={"include_usage": True},
                        timeout=limits.total,
                        tools=cast(Any, tools) if tools else openai.omit,
                    )
                    async for chunk in stream:
                        watchdog.reschedule(loop.time() + limits.stall)
                        chunks += 1
                        if chunk.usage is not None:
                            prompt_tokens = chunk.usage.prompt_tokens
                            completion_tokens = chunk.usage.completion_tokens
                        for choice in chunk.choices:
                            if choice.delta.content:
                                parts.append(choice.delta.content)
                            for delta in choice.delta.tool_calls or []:
                                call = calls.setdefault(delta.index, _ToolCallParts())
                                call.id = delta.id or call.id
                                if delta.function is not None:
                                    call.name = delta.function.name or call.name
                                    call.arguments.append(delta.function.arguments or "")
                            if choice.finish_reason is not None:
                                finish = choice.finish_reason
                        on_text(parts, chunks)
            except TimeoutError:
                silent = limits.first_chunk if chunks == 0 else limits.stall
                where = "before the first chunk" if chunks == 0 else f"after chunk {chunks}"
                raise StreamBrokenError(
                    f"hung: nothing for {silent:g} s {where}", ErrorKind.TIMEOUT
                ) from None
    except TimeoutError:
        raise StreamBrokenError(
            f"no complete answer within the attempt's {limits.total:g} s", ErrorKind.TIMEOUT
        ) from None
    if finish is None:
        raise StreamBrokenError(
            f"stream ended after {chunks} chunks without a finish reason", ErrorKind.CONNECTION
        )
    return StreamedAnswer(
        text="".join(parts),
        tool_calls=[calls[index].done() for index in sorted(calls)],
        finish_reason=finish,
        prompt_tokens=prompt_tokens,
        completion_tokens=completion_tokens,
    )
