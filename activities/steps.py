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
from temporalio.exceptions import ApplicationError

from activities import prompts
from activities.attempts import ProviderFailure, handover, step_failure
from activities.backpressure import LoopPressure
from activities.continuation import (
    continuation_messages,
    estimate_prompt_tokens,
    estimate_tokens,
    join_continuation,
    worth_continuing,
)
from activities.documents import pages_of
from activities.errors import StreamBrokenError, advice_for, kind_of
from activities.holds import held_until, hold_key, keep_hold
from activities.latency import LatencyBook
from activities.metrics import record_attempt, record_saved_tokens, record_step
from activities.partials import PartialMirror
from activities.provider import CallLimits, ChatAnswer, StreamTally, chat, embed, stream_chat
from activities.rate_limits import SharedRateLimiter, estimate_request_tokens
from activities.reporting import ActivityPulse, StepReporter, slot_of
from longtask.engine.names import ACTIVITY_OF_STEP
from longtask.models import StepRequest, StepResult
from longtask.policies import ErrorKind, StepKind
from longtask.text import EMBED_BATCH, chunks_of

KEY_PASSAGES = 3
# What the key passages are chosen for: the chunks nearest to this in embedding space.
KEY_PASSAGE_QUERY = "main findings, figures, risks, decisions and open questions"

Answer = TypeVar("Answer")


def _cosine(a: list[float], b: list[float]) -> float:
    dot = sum(x * y for x, y in zip(a, b, strict=True))
    norm = math.sqrt(sum(x * x for x in a)) * math.sqrt(sum(y * y for y in b))
    return dot / norm if norm else 0.0


async def with_text(answer: Awaitable[ChatAnswer]) -> ChatAnswer:
    """The answer, or a failed attempt when it ended properly (a finish reason) with no text.

    An empty answer would become an empty summary or a 0-byte report that looks done; as a
    failed attempt it is retried like a 5xx and, if it stays empty, fails its document saying so.
    """
    answered = await answer
    if not answered.text.strip():
        raise StreamBrokenError(
            "the model sent an empty answer (a finish reason, no text)", ErrorKind.SERVER_ERROR
        )
    return answered


async def read_document(request: StepRequest) -> list[str]:
    """Pages of the step's document, read off the event loop: a large PDF takes seconds to
    parse, and a blocked loop stops every heartbeat of this worker."""
    return await asyncio.to_thread(pages_of, request.document)


def _advised(
    error: ApplicationError, failures: list[ProviderFailure], model: str, kind: StepKind
) -> ApplicationError:
    """A step's failure for good, with what to do when the provider's answer says it:
    a refused key, an unknown model."""
    if not error.non_retryable:
        return error
    cause = next((f for f in failures if f.kind.value == error.type), None)
    advice = "" if cause is None else advice_for(cause.error, model, kind)
    if not advice:
        return error
    return ApplicationError(
        f"{error.message}; {advice}", *error.details, type=error.type, non_retryable=True
    )


async def run_bounded(
    indexes: Iterable[int], pulse: ActivityPulse, work: Callable[[int], Awaitable[None]]
) -> list[ProviderFailure]:
    """Run ``work`` on each index through the activity's call gate; return provider failures.

    After the step's first failure, or once the activity halts (worker shutting down, rate
    limited), no new call starts, but calls already in flight finish: their answers are paid
    for and are kept.
    """
    failures: list[ProviderFailure] = []

    async def one(index: int) -> None:
        async with pulse.gate:
            if failures or not pulse.may_start():
                return
            try:
                await work(index)
            except ProviderFailure as failure:
                failures.append(failure)

    await asyncio.gather(*(one(index) for index in indexes))
    return failures


class DocumentSteps:
    """The document agent's steps, sharing one provider client and one Temporal client.

    ``run_step`` runs one step of one document inside an activity's pulse; the per-step
    activities below are the form older task runs schedule (see workflows/document_task.py),
    the batch activity (activities/batch.py) runs every step of several documents.
    """

    def __init__(
        self,
        llm: openai.AsyncOpenAI,
        temporal: Client,
        api_key: str,
        signal_seconds: float,
        redis: Redis | None = None,
        limiter: SharedRateLimiter | None = None,
        mirror_messages: bool = True,
        pressure: LoopPressure | None = None,
    ) -> None:
        self._llm = llm
        self._mirror_messages = mirror_messages
        self._temporal = temporal
        self._redis = redis
        self._limiter = limiter
        self._api_key = api_key
        self._signal_seconds = signal_seconds
        self._latency = LatencyBook(redis)
        # Shared by every activity of the worker: the event loop is.
        self._pressure = pressure or LoopPressure(max_lag_seconds=0.2)

    def pulse(self, task_id: str, call_concurrency: int) -> ActivityPulse:
        return ActivityPulse(self._temporal, task_id, self._signal_seconds, call_concurrency)

    async def run_step(
        self, request: StepRequest, kind: StepKind, pulse: ActivityPulse
    ) -> StepResult:
        """One step of one document; a step an earlier attempt finished is not run again.

        A step that fails for good leaves its attempts in ``pulse.abandoned`` for the
        document's outcome; one that will be retried keeps its reporter in the heartbeat.
        """
        document = request.document
        finished = pulse.finished.get(slot_of(document.index, kind))
        if finished is not None:
            return finished
        reporter = pulse.step(document.index, kind, document.calls(kind))
        run = {
            StepKind.EMBED: self._embed,
            StepKind.SUMMARIZE: self._summarize,
            StepKind.REASON: self._reason,
            StepKind.REPORT: self._report,
        }[kind]
        try:
            outputs = await run(request, reporter, pulse)
        except ApplicationError as error:
            if error.non_retryable:
                record_step(kind.value, "failed")
                pulse.step_abandoned(reporter, self._result(request, reporter, []))
            raise
        record_step(kind.value, "completed")
        result = self._result(request, reporter, outputs)
        pulse.step_finished(reporter, result)
        return result

    async def _attempt(
        self,
        request: StepRequest,
        reporter: StepReporter,
        item: int,
        where: str,
        call: Callable[[CallLimits, StreamTally], Awaitable[Answer]],
        asked: object,
    ) -> Answer:
        """One provider attempt of one call, under that call's own attempt's limits.

        ``asked`` (the messages or inputs) sizes the call for the shared tokens-per-minute
        quota; waiting for the quota, or for a busy worker's event loop to catch up, is not
        part of the attempt's time.
        """
        if self._redis is not None and not reporter.hold_read and activity.info().attempt > 1:
            # Taken over: the last attempt may have failed after its last heartbeat left.
            reporter.hold_read = True
            key = hold_key(request.task_id, request.document.index, reporter.kind.value)
            held = await held_until(self._redis, key)
            reporter.ledger.not_before = max(reporter.ledger.not_before, held)
        await reporter.ledger.wait_its_turn(request.policy.rate_limit_max_wait_seconds)
        if self._limiter is not None:
            tokens = estimate_request_tokens(asked)
            await self._limiter.acquire(request.model, request.task_id, tokens)
        kind = reporter.kind
        attempt = reporter.ledger.attempt_of(item)
        limits = await self._latency.limits(request.policy, kind.task_type, request.model, attempt)
        async with self._pressure.slot():
            started = time.monotonic()
            status = "success"
            tally = StreamTally()
            try:
                answer = await call(limits, tally)
                self._observe(request.model, kind, answer, time.monotonic() - started)
                return answer
            except asyncio.CancelledError:
                status = "cancelled"
                if activity.is_worker_shutdown() and tally.responded:
                    # Cut by a worker handing its steps over: the provider bills what it sent.
                    reporter.attempt_failed(
                        request.model,
                        attempt + 1,
                        "handed_over",
                        tally.streamed_tokens(),
                        estimate_prompt_tokens(asked),
                    )
                raise
            except Exception as error:
                failed_as = kind_of(error)
                status = "timeout" if failed_as is ErrorKind.TIMEOUT else "error"
                # A stream cut after the provider began it is billed: its prompt, and what it
                # sent. No usage came with it, so both are estimated as the provider counts.
                streamed = tally.streamed_tokens()
                prompt = estimate_prompt_tokens(asked) if tally.responded else 0
                reporter.attempt_failed(
                    request.model, attempt + 1, failed_as.value.lower(), streamed, prompt
                )
                raise ProviderFailure(item, where, error, self._api_key) from error
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

    def _observe(self, model: str, kind: StepKind, answer: object, seconds: float) -> None:
        """The pace of an answer that arrived, for the model's learned limits."""
        if isinstance(answer, ChatAnswer):
            gap = answer.longest_gap_seconds
            self._latency.observe(model, kind.task_type, answer.first_chunk_seconds, gap)
        else:  # an embedding comes whole: its first chunk is the answer
            self._latency.observe(model, kind.task_type, seconds, None)

    async def _run_calls(
        self,
        request: StepRequest,
        reporter: StepReporter,
        pulse: ActivityPulse,
        work: Callable[[int], Awaitable[None]],
    ) -> None:
        """Make every call not done yet; fail the step as the attempts say, or hand it over."""
        total = reporter.total
        todo = [item for item in range(total) if item not in reporter.outputs]
        failures = await run_bounded(todo, pulse, work)
        if failures:
            if any(failure.kind is ErrorKind.RATE_LIMITED for failure in failures):
                # The provider asked to slow down: the activity's other steps hold back too.
                pulse.halted = True
            error = step_failure(failures, reporter.ledger, request.policy, self._api_key)
            # Its wait (``not_before``) is kept now, not with the next beat: a worker that
            # dies meanwhile hands the step to one that would otherwise call at once.
            if self._redis is not None and reporter.ledger.not_before > time.time():
                key = hold_key(request.task_id, request.document.index, reporter.kind.value)
                await keep_hold(self._redis, key, reporter.ledger.not_before)
            pulse.heartbeat()
            raise _advised(error, failures, request.model, reporter.kind)
        if len(reporter.outputs) < total:
            why = "held back by a rate limit" if pulse.halted else ""
            raise handover(len(reporter.outputs), total, request.policy, reporter.ledger.stats, why)

    def _result(
        self, request: StepRequest, reporter: StepReporter, outputs: list[str]
    ) -> StepResult:
        return StepResult(
            kind=reporter.kind,
            document=request.document.index,
            outputs=outputs,
            usage=reporter.usage,
            stats=reporter.ledger.stats,
            ledger=reporter.costs,
            model=request.model,
        )

    async def _embed(
        self, request: StepRequest, reporter: StepReporter, pulse: ActivityPulse
    ) -> list[str]:
        """Embed every chunk and pick the passages nearest to what a report needs."""
        chunks = chunks_of(await read_document(request))
        batches = reporter.total

        async def one(batch: int) -> None:
            texts = [KEY_PASSAGE_QUERY, *chunks[batch * EMBED_BATCH : (batch + 1) * EMBED_BATCH]]
            where = f"embed batch {batch + 1}/{batches} of {request.document.name}"
            vectors, tokens = await self._attempt(
                request, reporter, batch, where,
                lambda limits, _tally: embed(self._llm, request.model, texts, limits), texts,
            )  # fmt: skip
            scores = [_cosine(vectors[0], vector) for vector in vectors[1:]]
            reporter.item_done(batch, json.dumps(scores), request.model, tokens, 0)

        await self._run_calls(request, reporter, pulse, one)
        scores = [s for b in range(batches) for s in json.loads(reporter.outputs[b])]
        nearest = sorted(range(len(chunks)), key=lambda i: scores[i], reverse=True)
        return [chunks[i] for i in sorted(nearest[:KEY_PASSAGES])]

    async def _summarize(
        self, request: StepRequest, reporter: StepReporter, pulse: ActivityPulse
    ) -> list[str]:
        """Summarize each page, several calls at a time."""
        pages = await read_document(request)

        async def one(page: int) -> None:
            where = f"summarize page {page + 1}/{len(pages)} of {request.document.name}"
            messages = prompts.summarize_page(request.document.name, page, pages[page])
            answer = await self._attempt(
                request, reporter, page, where,
                lambda limits, tally: with_text(
                    chat(self._llm, request.model, messages, limits, tally)
                ),
                messages,
            )  # fmt: skip
            reporter.item_done(
                page, answer.text, request.model, answer.prompt_tokens, answer.completion_tokens
            )

        await self._run_calls(request, reporter, pulse, one)
        return [reporter.outputs[p] for p in range(len(pages))]

    async def _streamed(
        self,
        request: StepRequest,
        reporter: StepReporter,
        pulse: ActivityPulse,
        messages: prompts.Messages,
    ) -> list[str]:
        """One streamed answer; a retry continues from the text the cut attempt left."""
        kind = reporter.kind
        where = f"{kind.value} step of {request.document.name}"
        document = request.document
        mirror = PartialMirror(
            self._redis,
            request.task_id,
            {"document": document.name, "path": document.path, "step": kind.value},
            self._mirror_messages,
        )
        saved_text = reporter.resumed_text or request.partial_response
        resumed = saved_text if worth_continuing(saved_text) else ""
        reporter.continue_from(resumed)
        asked = continuation_messages(messages, resumed) if resumed else messages

        def on_text(parts: list[str], chunks: int) -> None:
            reporter.streaming(parts, chunks)
            mirror.offer(reporter.partial_text(), chunks)

        def call(limits: CallLimits, tally: StreamTally) -> Awaitable[ChatAnswer]:
            answer = stream_chat(self._llm, request.model, asked, limits, on_text, tally)
            # A continuation may rightly add nothing to the text it was given.
            return answer if resumed else with_text(answer)

        async def one(item: int) -> None:
            try:
                answer = await self._attempt(request, reporter, item, where, call, asked)
            except ProviderFailure as failure:
                await mirror.failed(reporter.partial_text(), str(failure))
                raise
            text = join_continuation(resumed, answer.text)
            reporter.item_done(
                item, text, request.model, answer.prompt_tokens, answer.completion_tokens
            )
            if resumed:
                saved = estimate_tokens(resumed)
                reporter.tokens_saved(request.model, saved)
                record_saved_tokens(kind.value, saved)

        try:
            await self._run_calls(request, reporter, pulse, one)
        finally:
            await mirror.close()
        return [reporter.outputs[0]]

    async def _reason(
        self, request: StepRequest, reporter: StepReporter, pulse: ActivityPulse
    ) -> list[str]:
        """Reason over all page summaries and key passages in one streamed answer."""
        messages = prompts.reason(request.document.name, request.summaries, request.key_passages)
        return await self._streamed(request, reporter, pulse, messages)

    async def _report(
        self, request: StepRequest, reporter: StepReporter, pulse: ActivityPulse
    ) -> list[str]:
        """Write the document's final report in one streamed answer."""
        messages = prompts.report(request.document.name, request.summaries, request.analysis)
        return await self._streamed(request, reporter, pulse, messages)

    async def _single(self, request: StepRequest, kind: StepKind) -> StepResult:
        async with self.pulse(request.task_id, request.call_concurrency) as pulse:
            return await self.run_step(request, kind, pulse)

    @activity.defn(name=ACTIVITY_OF_STEP[StepKind.EMBED])
    async def embed_chunks(self, request: StepRequest) -> StepResult:
        return await self._single(request, StepKind.EMBED)

    @activity.defn(name=ACTIVITY_OF_STEP[StepKind.SUMMARIZE])
    async def summarize_pages(self, request: StepRequest) -> StepResult:
        return await self._single(request, StepKind.SUMMARIZE)

    @activity.defn(name=ACTIVITY_OF_STEP[StepKind.REASON])
    async def reason_across_pages(self, request: StepRequest) -> StepResult:
        return await self._single(request, StepKind.REASON)

    @activity.defn(name=ACTIVITY_OF_STEP[StepKind.REPORT])
    async def write_report(self, request: StepRequest) -> StepResult:
        return await self._single(request, StepKind.REPORT)
