"""The document agent's steps. Each activity carries many provider calls and keeps every
finished result in its heartbeat details, so a retry or a new worker redoes none of them."""

from __future__ import annotations

import asyncio
import json
import math
import time
from collections.abc import Awaitable, Callable, Iterable
from typing import TypeVar

import openai
from redis.asyncio import Redis
from temporalio import activity
from temporalio.client import Client

from activities import prompts
from activities.attempts import ProviderFailure, handover, step_failure
from activities.continuation import (
    continuation_messages,
    estimate_tokens,
    join_continuation,
    worth_continuing,
)
from activities.documents import pages_of
from activities.errors import kind_of
from activities.metrics import record_attempt, record_saved_tokens
from activities.partials import PartialMirror
from activities.provider import CallLimits, ChatAnswer, chat, embed, stream_chat
from activities.reporting import StepReporter
from longtask.models import StepRequest, StepResult
from longtask.policies import ErrorKind, StepKind
from longtask.text import EMBED_BATCH, chunks_of, embed_batches

KEY_PASSAGES = 3
# What the key passages are chosen for: the chunks nearest to this in embedding space.
KEY_PASSAGE_QUERY = "main findings, figures, risks, decisions and open questions"

Answer = TypeVar("Answer")


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
) -> list[ProviderFailure]:
    """Run ``work`` on each index, ``limit`` at a time, and return the provider failures.

    After the first failure, or once the worker starts shutting down, no new call starts, but
    calls already in flight finish: their answers are paid for and are kept.
    """
    gate = asyncio.Semaphore(limit)
    failures: list[ProviderFailure] = []

    async def one(index: int) -> None:
        async with gate:
            if failures or activity.is_worker_shutdown():
                return
            try:
                await work(index)
            except ProviderFailure as failure:
                failures.append(failure)

    await asyncio.gather(*(one(index) for index in indexes))
    return failures


class DocumentSteps:
    """Activities of the document agent, sharing one provider client and one Temporal client."""

    def __init__(
        self,
        llm: openai.AsyncOpenAI,
        temporal: Client,
        api_key: str,
        signal_seconds: float,
        redis: Redis | None = None,
    ) -> None:
        self._llm = llm
        self._temporal = temporal
        self._redis = redis
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

    async def _attempt(
        self,
        request: StepRequest,
        kind: StepKind,
        reporter: StepReporter,
        item: int,
        where: str,
        call: Callable[[CallLimits], Awaitable[Answer]],
    ) -> Answer:
        """One provider attempt of one call, under that call's own attempt's limits."""
        policy = request.policy
        attempt = reporter.ledger.attempt_of(item)
        limits = CallLimits(
            total=policy.attempt_timeout(kind.task_type, attempt),
            first_chunk=policy.first_chunk_limit(kind.task_type, attempt),
            stall=policy.stall_seconds,
        )
        started = time.monotonic()
        status = "success"
        try:
            return await call(limits)
        except asyncio.CancelledError:
            status = "cancelled"
            raise
        except Exception as error:
            status = "timeout" if kind_of(error) is ErrorKind.TIMEOUT else "error"
            raise ProviderFailure(item, where, error) from error
        finally:
            if status != "cancelled":
                reporter.ledger.stats.add(status)
                record_attempt(
                    request.task_id,
                    kind.value,
                    attempt + 1,
                    limits.total,
                    status,
                    time.monotonic() - started,
                )

    async def _run_calls(
        self,
        request: StepRequest,
        reporter: StepReporter,
        total: int,
        work: Callable[[int], Awaitable[None]],
    ) -> None:
        """Make every call not done yet; fail the step as the attempts say, or hand it over."""
        todo = [item for item in range(total) if item not in reporter.outputs]
        failures = await run_bounded(todo, request.call_concurrency, work)
        if failures:
            raise step_failure(failures, reporter.ledger, request.policy, self._api_key)
        if len(reporter.outputs) < total:
            raise handover(len(reporter.outputs), total, request.policy, reporter.ledger.stats)

    def _result(self, kind: StepKind, request: StepRequest, reporter: StepReporter,
                outputs: list[str]) -> StepResult:  # fmt: skip
        return StepResult(
            kind=kind,
            document=request.document.index,
            outputs=outputs,
            usage=reporter.usage,
            stats=reporter.ledger.stats,
        )

    @activity.defn(name="embed_chunks")
    async def embed_chunks(self, request: StepRequest) -> StepResult:
        """Embed every chunk and pick the passages nearest to what a report needs."""
        chunks = chunks_of(await read_document(request))
        batches = embed_batches(len(chunks))
        async with self._reporter(request, StepKind.EMBED, batches) as reporter:

            async def one(batch: int) -> None:
                texts = [
                    KEY_PASSAGE_QUERY,
                    *chunks[batch * EMBED_BATCH : (batch + 1) * EMBED_BATCH],
                ]
                where = f"embed batch {batch + 1}/{batches} of {request.document.name}"
                vectors, tokens = await self._attempt(
                    request, StepKind.EMBED, reporter, batch, where,
                    lambda limits: embed(self._llm, request.model, texts, limits),
                )  # fmt: skip
                scores = [_cosine(vectors[0], vector) for vector in vectors[1:]]
                reporter.item_done(batch, json.dumps(scores), request.model, tokens, 0)

            await self._run_calls(request, reporter, batches, one)
            scores = [s for b in range(batches) for s in json.loads(reporter.outputs[b])]
        nearest = sorted(range(len(chunks)), key=lambda i: scores[i], reverse=True)
        passages = [chunks[i] for i in sorted(nearest[:KEY_PASSAGES])]
        return self._result(StepKind.EMBED, request, reporter, passages)

    @activity.defn(name="summarize_pages")
    async def summarize_pages(self, request: StepRequest) -> StepResult:
        """Summarize each page, several calls at a time."""
        pages = await read_document(request)
        async with self._reporter(request, StepKind.SUMMARIZE, len(pages)) as reporter:

            async def one(page: int) -> None:
                where = f"summarize page {page + 1}/{len(pages)} of {request.document.name}"
                messages = prompts.summarize_page(request.document.name, page, pages[page])
                answer = await self._attempt(
                    request, StepKind.SUMMARIZE, reporter, page, where,
                    lambda limits: chat(self._llm, request.model, messages, limits),
                )  # fmt: skip
                reporter.item_done(
                    page, answer.text, request.model, answer.prompt_tokens, answer.completion_tokens
                )

            await self._run_calls(request, reporter, len(pages), one)
        outputs = [reporter.outputs[p] for p in range(len(pages))]
        return self._result(StepKind.SUMMARIZE, request, reporter, outputs)

    async def _streamed_step(
        self, request: StepRequest, kind: StepKind, messages: prompts.Messages
    ) -> StepResult:
        """One streamed answer; a retry continues from the text the cut attempt left."""
        where = f"{kind.value} step of {request.document.name}"
        document = request.document
        mirror = PartialMirror(
            self._redis,
            request.task_id,
            {"document": document.name, "path": document.path, "step": kind.value},
        )
        async with self._reporter(request, kind, 1) as reporter:
            saved_text = reporter.resumed_text or request.partial_response
            resumed = saved_text if worth_continuing(saved_text) else ""
            reporter.continue_from(resumed)
            asked = continuation_messages(messages, resumed) if resumed else messages

            def on_text(parts: list[str], chunks: int) -> None:
                reporter.streaming(parts, chunks)
                mirror.offer(reporter.partial_text(), chunks)

            def call(limits: CallLimits) -> Awaitable[ChatAnswer]:
                return stream_chat(self._llm, request.model, asked, limits, on_text)

            async def one(item: int) -> None:
                try:
                    answer = await self._attempt(request, kind, reporter, item, where, call)
                except ProviderFailure as failure:
                    await mirror.failed(reporter.partial_text(), str(failure))
                    raise
                text = join_continuation(resumed, answer.text)
                reporter.item_done(
                    item, text, request.model, answer.prompt_tokens, answer.completion_tokens
                )
                if resumed:
                    saved = estimate_tokens(resumed)
                    reporter.usage.add_saved(request.model, saved)
                    record_saved_tokens(kind.value, saved)

            try:
                await self._run_calls(request, reporter, 1, one)
            finally:
                await mirror.close()
        return self._result(kind, request, reporter, [reporter.outputs[0]])

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
