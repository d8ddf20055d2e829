"""The built-in research agent's input and result."""

from __future__ import annotations

import json
from typing import Any

from pydantic import BaseModel, Field
from redis.asyncio import Redis
from temporalio.client import Client, WorkflowHandle

from longtask.agent import (
    LongTaskInput,
    TaskOutcome,
    new_task_id,
    resume_long_task,
    start_long_task,
    task_defaults,
)
from longtask.engine.names import RESEARCH_TASK
from longtask.settings import Settings


class ResearchInput(LongTaskInput):
    question: str = Field(min_length=1)
    # Files or folders of .txt, .md and .pdf the agent may search and read.
    paths: list[str] = Field(min_length=1)
    # Model calls of the tool loop at most; the final report is one more.
    max_turns: int = Field(6, ge=1, le=50)
    # Passages one search returns.
    search_results: int = Field(3, ge=1, le=20)


class Source(BaseModel):
    """A passage a tool returned, as the report cites it."""

    ref: str
    document: str
    page: int
    text: str


class ResearchReport(BaseModel):
    question: str
    report: str
    sources: list[Source]
    turns: int


def sources_in(tool_messages: list[str]) -> list[Source]:
    """Every passage the tools returned (search results, pages read), first seen first."""
    found: dict[tuple[str, int], str] = {}
    for content in tool_messages:
        try:
            data = json.loads(content)
        except ValueError:
            continue
        for item in data if isinstance(data, list) else [data]:
            if isinstance(item, dict) and {"document", "page", "text"} <= item.keys():
                found.setdefault((str(item["document"]), int(item["page"])), str(item["text"]))
    return [
        Source(ref=f"{document} p.{page}", document=document, page=page, text=text)
        for (document, page), text in found.items()
    ]


async def start_research(
    client: Client,
    settings: Settings,
    question: str,
    paths: list[str],
    *,
    task_id: str | None = None,
    max_turns: int = 6,
    **overrides: Any,
) -> WorkflowHandle[Any, TaskOutcome[ResearchReport]]:
    """Start the research agent on ``question`` over the documents at ``paths``."""
    request = ResearchInput.model_validate(
        {
            **task_defaults(settings),
            "task_id": task_id or new_task_id(),
            "question": question,
            "paths": paths,
            "max_turns": max_turns,
            **overrides,
        }
    )
    return await start_long_task(client, settings, RESEARCH_TASK, request, ResearchReport)


async def resume_research(
    client: Client, settings: Settings, redis: Redis, task_id: str, **overrides: Any
) -> WorkflowHandle[Any, TaskOutcome[ResearchReport]]:
    """A new run of an ended research task from its newest checkpoint: its conversation goes
    on where it stopped; ``overrides`` change its input (e.g. ``budget=TaskBudget(...)``)."""
    return await resume_long_task(
        client, settings, redis, task_id, ResearchInput, ResearchReport, **overrides
    )
