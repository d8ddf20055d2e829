"""The document agent's steps. Each activity carries many provider calls and keeps every
finished result in its heartbeat details, so a retry or a new worker redoes none of them."""

from __future__ import annotations

import asyncio
import json
import math
from collections.abc import Awaitable, Callable, Iterable
from typing import Any

import openai
from temporalio import activity
from temporalio.client import Client

from activities import prompts
from activities.documents import pages_of
from activities.errors import to_application_error
from activities.provider import chat, embed, stream_chat
from activities.reporting import StepReporter
from longtask.models import StepRequest, StepResult
from longtask.policies import StepKind
from longtask.text import EMBED_BATCH, chunks_of, embed_batches

KEY_PASSAGES = 3
# What the key passages are chosen for: the chunks nearest to this in embedding space.
KEY_PASSAGE_QUERY = "main findings, figures, risks, decisions and open questions"


def _cosine(a: list[float], b: list[float]) -> float:
    dot = sum(x * y for x, y in zip(a, b, strict=True))
    norm = math.sqrt(sum(x * x for x in a)) * math.sqrt(sum(y * y for y in b))
    return dot / norm if norm else 0.0


async def read_document(request: StepRequest) -> list[str]:
    """Pages of the step's document, read off the event loop: a large PDF takes seconds to
    parse, and a blocked loop stops every heartbeat of this worker."""
    return await asyncio.to_thread(pages_of, request.document)


async def run_bounded(
    indexes: Iterable[int], limit: int, work: Callable[[int], Awaitable[None]]
) -> None:
    """Run ``work`` on each index, ``limit`` at a time; the first failure cancels the rest."""
    gate = asyncio.Semaphore(limit)

    async def one(index: int) -> None:
        async with gate:
            await work(index)

    try:
        async with asyncio.TaskGroup() as group:
            for index in indexes:
                group.create_task(one(index))
    except BaseExceptionGroup as failures:
        raise failures.exceptions[0] from None


class DocumentSteps:
    """Activities of the document agent, sharing one provider client and one Temporal client."""

    def __init__(
        self,
        llm: openai.AsyncOpenAI,
        temporal: Client,
        api_key: str,
        signal_seconds: float,
    ) -> None:
        self._llm = llm
        self._temporal = temporal
        self._api_key = api_key
        self._signal_seconds = signal_seconds

    def _reporter(self, request: StepRequest, kind: StepKind, total: int) -> StepReporter:
        return StepReporter(
            self._temporal,
            request.task_id,
            request.document.index,
            kind,
            total,
            self._signal_seconds,
        )

    def _timeout(self, request: StepRequest, kind: StepKind) -> float:
        return request.policy.attempt_timeout(kind.task_type, activity.info().attempt - 1)

    async def _guarded(self, where: str, call: Awaitable[Any]) -> Any:
        try:
            return await call
        except asyncio.CancelledError:
            raise
        except Exception as error:
            raise to_application_error(error, where, self._api_key) from error

    @activity.defn(name="embed_chunks")
    async def embed_chunks(self, request: StepRequest) -> StepResult:
        """Embed every chunk and pick the passages nearest to what a report needs."""
        chunks = chunks_of(await read_document(request))
        batches = embed_batches(len(chunks))
        timeout = self._timeout(request, StepKind.EMBED)
        async with self._reporter(request, StepKind.EMBED, batches) as reporter:

            async def one(batch: int) -> None:
                texts = chunks[batch * EMBED_BATCH : (batch + 1) * EMBED_BATCH]
                where = f"embed batch {batch + 1}/{batches} of {request.document.name}"
                vectors, tokens = await self._guarded(
                    where, embed(self._llm, request.model, [KEY_PASSAGE_QUERY, *texts], timeout)
                )
                scores = [_cosine(vectors[0], vector) for vector in vectors[1:]]
                reporter.item_done(batch, json.dumps(scores), request.model, tokens, 0)

            todo = [b for b in range(batches) if b not in reporter.outputs]
            await run_bounded(todo, request.call_concurrency, one)
            scores = [s for b in range(batches) for s in json.loads(reporter.outputs[b])]
        nearest = sorted(range(len(chunks)), key=lambda i: scores[i], reverse=True)
        passages = [chunks[i] for i in sorted(nearest[:KEY_PASSAGES])]
        return StepResult(
            kind=StepKind.EMBED,
            document=request.document.index,
            outputs=passages,
            usage=reporter.usage,
            attempts=activity.info().attempt,
        )

    @activity.defn(name="summarize_pages")
    async def summarize_pages(self, request: StepRequest) -> StepResult:
        """Summarize each page, several calls at a time."""
        pages = await read_document(request)
        timeout = self._timeout(request, StepKind.SUMMARIZE)
        async with self._reporter(request, StepKind.SUMMARIZE, len(pages)) as reporter:

            async def one(page: int) -> None:
                where = f"summarize page {page + 1}/{len(pages)} of {request.document.name}"
                messages = prompts.summarize_page(request.document.name, page, pages[page])
                answer = await self._guarded(
                    where, chat(self._llm, request.model, messages, timeout)
                )
                reporter.item_done(
                    page, answer.text, request.model, answer.prompt_tokens, answer.completion_tokens
                )

            todo = [p for p in range(len(pages)) if p not in reporter.outputs]
            await run_bounded(todo, request.call_concurrency, one)
        return StepResult(
            kind=StepKind.SUMMARIZE,
            document=request.document.index,
            outputs=[reporter.outputs[p] for p in range(len(pages))],
            usage=reporter.usage,
            attempts=activity.info().attempt,
        )

    async def _streamed_step(
        self, request: StepRequest, kind: StepKind, messages: prompts.Messages
    ) -> StepResult:
        timeout = self._timeout(request, kind)
        idle = activity.info().heartbeat_timeout or activity.info().start_to_close_timeout
        idle_seconds = idle.total_seconds() if idle else timeout
        async with self._reporter(request, kind, 1) as reporter:
            if 0 not in reporter.outputs:
                where = f"{kind.value} step of {request.document.name}"
                answer = await self._guarded(
                    where,
                    stream_chat(
                        self._llm,
                        request.model,
                        messages,
                        timeout,
                        idle_seconds,
                        reporter.streaming,
                    ),
                )
                reporter.item_done(
                    0, answer.text, request.model, answer.prompt_tokens, answer.completion_tokens
                )
        return StepResult(
            kind=kind,
            document=request.document.index,
            outputs=[reporter.outputs[0]],
            usage=reporter.usage,
            attempts=activity.info().attempt,
        )

    @activity.defn(name="reason_across_pages")
    async def reason_across_pages(self, request: StepRequest) -> StepResult:
        """Reason over all page summaries and key passages in one streamed answer."""
        messages = prompts.reason(request.document.name, request.summaries, request.key_passages)
        return await self._streamed_step(request, StepKind.REASON, messages)

    @activity.defn(name="write_report")
    async def write_report(self, request: StepRequest) -> StepResult:
        """Write the document's final report in one streamed answer."""
        messages = prompts.report(request.document.name, request.summaries, request.analysis)
        return await self._streamed_step(request, StepKind.REPORT, messages)
