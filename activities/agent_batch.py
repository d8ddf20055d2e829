"""A batch of a long task's model calls in one activity (``TaskContext.map_calls``): many
short calls per activity, as the document task's batches, instead of one activity per call.

Each call keeps its own provider attempts, in the heartbeat details with every answer the
batch already has: a retried attempt, on this worker or another, makes only the calls still
missing. A call that fails for good is answered with its error; the others go on.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator
from datetime import timedelta

import openai
from pydantic import BaseModel, Field, ValidationError
from temporalio import activity
from temporalio.exceptions import ApplicationError, ApplicationErrorCategory

from activities.agent_calls import heartbeat_loop, known_task_type, learned_or_configured_limits
from activities.agent_stream import stream_answer
from activities.attempts import AttemptLedger, ProviderFailure, step_failure
from activities.batch import cancelled_by_its_task
from activities.continuation import estimate_prompt_tokens, estimate_tokens
from activities.errors import StreamBrokenError, kind_of
from activities.latency import LatencyBook
from activities.metrics import record_attempt, record_tokens
from activities.provider import CallLimits
from activities.rate_limits import SharedRateLimiter, estimate_request_tokens
from longtask.agent import MapCallsAnswer, MapCallsRequest, ModelAnswer
from longtask.cost import CostLedger, TokenUsage
from longtask.engine.names import CALL_MODELS, STOP_TASK_KINDS
from longtask.policies import ErrorKind


class BatchHeartbeat(BaseModel):
    """What survives a failed attempt or a lost worker: answers so far, calls that failed for
    good, each call's attempts, and the tokens every attempt paid."""

    answers: dict[int, ModelAnswer] = Field(default_factory=dict)
    failed: dict[int, str] = Field(default_factory=dict)
    ledger: AttemptLedger = Field(default_factory=AttemptLedger)
    usage: TokenUsage = Field(default_factory=TokenUsage)
    costs: CostLedger = Field(default_factory=CostLedger)


def _restored() -> BatchHeartbeat:
    details = activity.info().heartbeat_details
    if not details:
        return BatchHeartbeat()
    try:
        return BatchHeartbeat.model_validate(details[0])
    except ValidationError:
        return BatchHeartbeat()


@contextlib.asynccontextmanager
async def heartbeating(beat: BatchHeartbeat) -> AsyncIterator[None]:
    """Heartbeat the batch's answers so far at an eighth of the heartbeat timeout, and once
    more as it ends (what a retry, or the task after a cancel, starts from)."""
    try:
        async with heartbeat_loop(lambda: beat.model_dump(mode="json"), 1 / 8):
            yield
    finally:
        activity.heartbeat(beat.model_dump(mode="json"))


class ModelBatches:
    """The batch activity, sharing the worker's provider client, quota and learned limits."""

    def __init__(
        self,
        llm: openai.AsyncOpenAI,
        api_key: str,
        latency: LatencyBook,
        limiter: SharedRateLimiter | None = None,
    ) -> None:
        self._llm = llm
        self._api_key = api_key
        self._latency = latency
        self._limiter = limiter

    async def _limits(self, request: MapCallsRequest, attempt: int) -> CallLimits:
        return await learned_or_configured_limits(
            self._latency, request.policy, request.multiplier, attempt, request.task_type,
            request.model,
        )  # fmt: skip

    @activity.defn(name=CALL_MODELS)
    async def call_models(self, request: MapCallsRequest) -> MapCallsAnswer:
        beat = _restored()
        todo = [
            item
            for item in range(len(request.conversations))
            if item not in beat.answers and item not in beat.failed
        ]
        gate = asyncio.Semaphore(max(request.call_concurrency, 1))
        failures: list[ProviderFailure] = []

        async def one(item: int) -> None:
            async with gate:
                if failures:
                    return  # a failure will retry the batch: no new call starts meanwhile
                try:
                    beat.answers[item] = await self._call(request, item, beat)
                except ProviderFailure as failure:
                    failures.append(failure)

        try:
            async with heartbeating(beat):
                await asyncio.gather(*(one(item) for item in todo))
        except asyncio.CancelledError:
            if not cancelled_by_its_task():
                raise
            # The task is cancelled: it books what this answer holds (answers and what every
            # attempt paid) in its last checkpoint. Calls in flight were cut by the cancel.
            activity.logger.info("%s: batch cancelled by its task", request.step)
            return self._answer(beat)
        self._settle(request, failures, beat)
        return self._answer(beat)

    @staticmethod
    def _answer(beat: BatchHeartbeat) -> MapCallsAnswer:
        return MapCallsAnswer(
            answers=beat.answers,
            failed=beat.failed,
            usage=beat.usage,
            ledger=beat.costs,
            stats=beat.ledger.stats,
        )

    async def _call(self, request: MapCallsRequest, item: int, beat: BatchHeartbeat) -> ModelAnswer:
        """One provider attempt of one call of the batch; its answer, or a ProviderFailure."""
        messages = request.conversations[item]
        await beat.ledger.wait_its_turn(request.policy.rate_limit_max_wait_seconds)
        attempt = beat.ledger.attempt_of(item)
        limits = await self._limits(request, attempt)
        if self._limiter is not None:
            tokens = estimate_request_tokens(messages)
            await self._limiter.acquire(request.model, request.task_id, tokens)
        where = f"{request.step} (call {request.first_call + item})"
        started = time.monotonic()
        pieces: list[str] = []

        def on_text(parts: list[str], _chunks: int) -> None:
            pieces[:] = parts

        try:
            answer = await stream_answer(self._llm, request.model, messages, [], limits, on_text)
            if not answer.text.strip():
                raise StreamBrokenError("the model sent an empty answer", ErrorKind.SERVER_ERROR)
        except Exception as error:
            failure = ProviderFailure(item, where, error, self._api_key)
            status = "timeout" if kind_of(error) is ErrorKind.TIMEOUT else "error"
            # A cut stream is billed: its prompt once the provider began, and what it sent.
            streamed = "".join(pieces)
            prompt = estimate_prompt_tokens(messages) if streamed else 0
            completion = estimate_tokens(streamed)
            beat.usage.add(request.model, prompt, completion)
            beat.costs.record(request.step, request.model, attempt + 1,
                              failure.kind.value.lower(), prompt, completion)  # fmt: skip
            self._attempted(request, beat, attempt, limits, status, started)
            raise failure from None
        self._attempted(request, beat, attempt, limits, "success", started)
        task_type = known_task_type(request.task_type)
        if task_type is not None:
            gap = answer.longest_gap_seconds
            self._latency.observe(request.model, task_type, answer.first_chunk_seconds, gap)
        usage = TokenUsage()
        usage.add(request.model, answer.prompt_tokens, answer.completion_tokens)
        costs = CostLedger()
        costs.record(request.step, request.model, attempt + 1, "success",
                     answer.prompt_tokens, answer.completion_tokens)  # fmt: skip
        beat.usage.merge(usage)
        beat.costs.merge(costs)
        record_tokens(request.step, request.model, answer.prompt_tokens, answer.completion_tokens)
        return ModelAnswer(
            text=answer.text,
            finish_reason=answer.finish_reason,
            model=request.model,
            usage=usage,
            ledger=costs,
        )

    @staticmethod
    def _attempted(
        request: MapCallsRequest,
        beat: BatchHeartbeat,
        attempt: int,
        limits: CallLimits,
        status: str,
        started: float,
    ) -> None:
        beat.ledger.stats.add(status)
        seconds = time.monotonic() - started
        record_attempt(request.task_id, request.step, attempt + 1, limits.total, status, seconds)

    def _settle(
        self, request: MapCallsRequest, failures: list[ProviderFailure], beat: BatchHeartbeat
    ) -> None:
        """Each failed call: failed for good (answered with its error), or retried with the
        batch after the longest wait any of them needs. A refused key stops the task."""
        waits: list[float] = []
        for failure in failures:
            verdict = step_failure([failure], beat.ledger, request.policy, self._api_key)
            if (verdict.type or "") in STOP_TASK_KINDS:
                raise verdict
            if verdict.non_retryable:
                beat.failed[failure.item] = verdict.message
            elif verdict.next_retry_delay is not None:
                waits.append(verdict.next_retry_delay.total_seconds())
        if waits:
            activity.heartbeat(beat.model_dump(mode="json"))
            missing = len(request.conversations) - len(beat.answers) - len(beat.failed)
            raise ApplicationError(
                f"{request.step}: {missing} call(s) of the batch retry in {max(waits):g} s",
                beat.ledger.stats.model_dump(),
                type=failures[0].kind.value,
                next_retry_delay=timedelta(seconds=max(waits)),
                category=ApplicationErrorCategory.BENIGN,
            )
