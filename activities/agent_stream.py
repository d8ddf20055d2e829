"""A chat completion with tools for long tasks: the provider's one stream, its tool calls typed."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, cast

import openai
from pydantic import BaseModel, Field

from activities.provider import CallLimits, stream_chat
from longtask.agent import ToolCall


class StreamedAnswer(BaseModel):
    text: str
    tool_calls: list[ToolCall] = Field(default_factory=list)
    finish_reason: str
    prompt_tokens: int = 0
    completion_tokens: int = 0
    # The provider's pace, for limits that learn it (activities/latency.py).
    first_chunk_seconds: float = 0.0
    longest_gap_seconds: float = 0.0


async def stream_answer(
    client: openai.AsyncOpenAI,
    model: str,
    messages: list[dict[str, Any]],
    tools: list[dict[str, Any]],
    limits: CallLimits,
    on_text: Callable[[list[str], int], None],
) -> StreamedAnswer:
    """One streamed chat completion with optional tools, under the attempt's limits: the hang
    limits, the attempt's deadline and the finish-reason rule of ``stream_chat``."""
    answer = await stream_chat(client, model, cast(Any, messages), limits, on_text, tools=tools)
    return StreamedAnswer(
        text=answer.text,
        tool_calls=[
            ToolCall(id=call.id, name=call.name, arguments=call.arguments or "{}")
            for call in answer.tool_calls
        ],
        finish_reason=answer.finish_reason,
        prompt_tokens=answer.prompt_tokens,
        completion_tokens=answer.completion_tokens,
        first_chunk_seconds=answer.first_chunk_seconds,
        longest_gap_seconds=answer.longest_gap_seconds,
    )
