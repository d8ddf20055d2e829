"""Model and embedding calls of user-written long tasks: one provider call per activity, its
attempts counted in heartbeat details and its streamed text continued after a cut."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Callable
from typing import Any, cast

import openai
from pydantic import BaseModel, Field, ValidationError
from redis.asyncio import Redis
from temporalio import activity
from temporalio.client import Client

from activities.agent_stream import stream_answer
from activities.attempts import AttemptLedger, ProviderFailure, step_failure
from activities.continuation import (
    continuation_messages,
    estimate_tokens,
    join_continuation,
    worth_continuing,
)
from activities.errors import StreamBrokenError, kind_of
from activities.latency import LatencyBook
from activities.metrics import record_attempt, record_saved_tokens, record_tokens
from activities.partials import PartialMirror
from activities.provider import CallLimits, embed
from activities.rate_limits import SharedRateLimiter, estimate_request_tokens
from longtask.agent import (
    CALL_MODEL,
    CALL_RETRYING_SIGNAL,
    EMBED_TEXTS,
    EmbedAnswer,
    EmbedRequest,
    ModelAnswer,
    ModelCallRequest,
)
from longtask.cost import CostLedger, TokenUsage
from longtask.policies import ErrorKind, TaskType, TimeoutPolicy

# A signal to the task gets this long; the call goes on either way.
SIGNAL_SECONDS = 2.0


class CallHeartbeat(BaseModel):
    """What survives a failed attempt or a lost worker: attempts, tokens paid, text so far."""

    ledger: AttemptLedger = Field(default_factory=AttemptLedger)
    usage: TokenUsage = Field(default_factory=TokenUsage)
    costs: CostLedger = Field(default_factory=CostLedger)
    partial_text: str = ""


def _restored() -> CallHeartbeat:
    details = activity.info().heartbeat_details
    if not details:
        return CallHeartbeat()
    try:
        return CallHeartbeat.model_validate(details[0])
    except ValidationError:
        return CallHeartbeat()


def limits_for(
    policy: TimeoutPolicy, multiplier: float, attempt: int, task_type: str, model: str
) -> CallLimits:
    """The SPEC's per-attempt limits for a task type known only by its multiplier (a type the
    task added): the multiplier folds into the base timeout, the rule stays the policy's. The
    hang limits are the model's, the task type's, or the built-in ones of its kind (a type the
    task added hangs like ``default``)."""
    scaled = policy.model_copy(
        update={
            "base_timeout_seconds": policy.base_timeout_seconds * multiplier,
            "multipliers": {TaskType.DEFAULT: 1.0},
        }
    )
    known = TaskType(task_type) if task_type in {t.value for t in TaskType} else TaskType.DEFAULT
    hang = (
        policy.hang_limits.get(model)
        or policy.hang_limits.get(task_type)
        or policy.configured_hang_limits(known, model)
    )
    return CallLimits(
        total=scaled.attempt_timeout(TaskType.DEFAULT, attempt),
        first_chunk=scaled.first_chunk_limit(TaskType.DEFAULT, attempt, hang.first_chunk_seconds),
        stall=hang.silence_seconds,
    )


def known_task_type(task_type: str) -> TaskType | None:
    """The SPEC task type of that name; None for a type the task added."""
    return TaskType(task_type) if task_type in {t.value for t in TaskType} else None


async def learned_or_configured_limits(
    latency: LatencyBook | None,
    policy: TimeoutPolicy,
    multiplier: float,
    attempt: int,
    task_type: str,
    model: str,
) -> CallLimits:
    """The limits of a long task's call: learned from the model's pace (README: hang limits
    that learn) for a SPEC task type at its own multiplier, as the document task's calls;
    the configured ones for a type the task added, or a multiplier of its own."""
    known = known_task_type(task_type)
    if latency is None or known is None or multiplier != policy.multipliers.get(known, 1.0):
        return limits_for(policy, multiplier, attempt, task_type, model)
    return await latency.limits(policy, known, model, attempt)


@contextlib.asynccontextmanager
async def heartbeat_loop(details: Callable[[], Any], share: float) -> AsyncIterator[None]:
    """Heartbeat ``details()`` every ``share`` of the heartbeat timeout while inside."""
    info = activity.info()
    seconds = info.heartbeat_timeout.total_seconds() * share if info.heartbeat_timeout else 1.0

    async def loop() -> None:
        while True:
            activity.heartbeat(details())
            await asyncio.sleep(seconds)

    running = asyncio.create_task(loop())
    try:
        yield
    finally:
        running.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await running


@contextlib.asynccontextmanager
async def heartbeating(beat: CallHeartbeat, text_so_far: Callable[[], str]) -> AsyncIterator[None]:
    """Heartbeat the call's state at a quarter of the heartbeat timeout while it runs."""

    def details() -> Any:
        beat.partial_text = text_so_far()
        return beat.model_dump(mode="json")

    async with heartbeat_loop(details, 1 / 4):
        yield


class AgentCalls:
    """The model and embedding activities of long tasks, sharing the worker's clients."""

    def __init__(
        self,
        llm: openai.AsyncOpenAI,
        api_key: str,
        redis: Redis | None = None,
        limiter: SharedRateLimiter | None = None,
        mirror_messages: bool = True,
        temporal: Client | None = None,
        latency: LatencyBook | None = None,
    ) -> None:
        self._llm = llm
        self._latency = latency
        self._temporal = temporal
        self._api_key = api_key
        self._redis = redis
        self._limiter = limiter
        self._mirror_messages = mirror_messages

    def _failed(
        self,
        error: Exception,
        beat: CallHeartbeat,
        request: ModelCallRequest | EmbedRequest,
        attempt: int,
        streamed: str,
    ) -> Exception:
        """Book a failed attempt and say how the call fails: now, or retried after a wait."""
        failure = ProviderFailure(0, f"{request.step} (call {request.call})", error, self._api_key)
        billed = estimate_tokens(streamed)
        beat.usage.add(request.model, 0, billed)
        beat.costs.record(request.step, request.model, attempt + 1, failure.kind.value.lower(),
                          0, billed)  # fmt: skip
        return step_failure([failure], beat.ledger, request.policy, self._api_key)

    async def _say_retrying(self, beat: CallHeartbeat, call: int) -> None:
        """Tell the task this call retries after a provider failure (its state goes
        ``retrying``); advisory, so a lost signal costs only the state shown."""
        workflow_id = activity.info().workflow_id
        if self._temporal is None or workflow_id is None or not beat.ledger.has_failures:
            return
        try:
            async with asyncio.timeout(SIGNAL_SECONDS):
                handle = self._temporal.get_workflow_handle(workflow_id)
                await handle.signal(CALL_RETRYING_SIGNAL, call)
        except Exception as problem:
            activity.logger.debug("retrying signal dropped: %s", problem)

    @staticmethod
    def _attempted(
        beat: CallHeartbeat,
        request: ModelCallRequest | EmbedRequest,
        attempt: int,
        limits: CallLimits,
        status: str,
        started: float,
    ) -> None:
        """Count the attempt (SPEC section 4 metric) and make it durable in the heartbeat, so
        the next attempt knows its number whichever worker runs it."""
        beat.ledger.stats.add(status)
        seconds = time.monotonic() - started
        record_attempt(request.task_id, request.step, attempt + 1, limits.total, status, seconds)
        activity.heartbeat(beat.model_dump(mode="json"))

    @activity.defn(name=CALL_MODEL)
    async def call_model(self, request: ModelCallRequest) -> ModelAnswer:
        beat = _restored()
        await self._say_retrying(beat, request.call)
        attempt = beat.ledger.attempt_of(0)
        limits = await learned_or_configured_limits(
            self._latency, request.policy, request.multiplier, attempt, request.task_type,
            request.model,
        )  # fmt: skip
        saved = beat.partial_text if request.stream else ""
        resumed = saved if worth_continuing(saved) else ""
        asked: list[dict[str, Any]] = (
            cast(Any, continuation_messages(cast(Any, request.messages), resumed))
            if resumed
            else request.messages
        )
        streamed: list[str] = []  # the live list of pieces this attempt has streamed

        def so_far() -> str:
            return join_continuation(resumed, "".join(streamed)) if request.stream else ""

        mirror = PartialMirror(
            self._redis if request.stream else None,
            request.task_id,
            {"step": request.step, "call": str(request.call)},
            self._mirror_messages,
        )

        def on_text(parts: list[str], chunks: int) -> None:
            streamed[:] = parts
            if request.stream:
                mirror.offer(so_far(), chunks)

        if self._limiter is not None:
            tokens = estimate_request_tokens(asked)
            await self._limiter.acquire(request.model, request.task_id, tokens)
        started = time.monotonic()
        try:
            async with heartbeating(beat, so_far):
                answer = await stream_answer(
                    self._llm, request.model, asked, request.tools, limits, on_text
                )
                if not resumed and not answer.text.strip() and not answer.tool_calls:
                    raise StreamBrokenError(
                        "the model sent an empty answer (no text, no tool call)",
                        ErrorKind.SERVER_ERROR,
                    )
        except Exception as error:
            status = "timeout" if kind_of(error) is ErrorKind.TIMEOUT else "error"
            failed = self._failed(error, beat, request, attempt, "".join(streamed))
            beat.partial_text = so_far()
            await mirror.failed(beat.partial_text, str(failed))
            self._attempted(beat, request, attempt, limits, status, started)
            raise failed from None
        finally:
            await mirror.close()
        self._attempted(beat, request, attempt, limits, "success", started)
        known = known_task_type(request.task_type)
        if self._latency is not None and known is not None and not resumed:
            gap = answer.longest_gap_seconds
            self._latency.observe(request.model, known, answer.first_chunk_seconds, gap)
        beat.usage.add(request.model, answer.prompt_tokens, answer.completion_tokens)
        beat.costs.record(request.step, request.model, attempt + 1, "success",
                          answer.prompt_tokens, answer.completion_tokens)  # fmt: skip
        record_tokens(request.step, request.model, answer.prompt_tokens, answer.completion_tokens)
        if resumed:
            saved_tokens = estimate_tokens(resumed)
            beat.usage.add_saved(request.model, saved_tokens)
            beat.costs.record(request.step, request.model, 0, "saved", saved=saved_tokens, calls=0)
            record_saved_tokens(request.step, saved_tokens)
        return ModelAnswer(
            text=join_continuation(resumed, answer.text),
            tool_calls=answer.tool_calls,
            finish_reason=answer.finish_reason,
            model=request.model,
            usage=beat.usage,
            ledger=beat.costs,
            stats=beat.ledger.stats,
        )

    @activity.defn(name=EMBED_TEXTS)
    async def embed_texts(self, request: EmbedRequest) -> EmbedAnswer:
        beat = _restored()
        await self._say_retrying(beat, request.call)
        attempt = beat.ledger.attempt_of(0)
        limits = await learned_or_configured_limits(
            self._latency, request.policy, request.multiplier, attempt,
            TaskType.EMBEDDING.value, request.model,
        )  # fmt: skip
        if self._limiter is not None:
            await self._limiter.acquire(
                request.model, request.task_id, estimate_request_tokens(request.texts)
            )
        started = time.monotonic()
        try:
            async with heartbeating(beat, str):
                vectors, tokens = await embed(self._llm, request.model, request.texts, limits)
        except Exception as error:
            status = "timeout" if kind_of(error) is ErrorKind.TIMEOUT else "error"
            failed = self._failed(error, beat, request, attempt, "")
            self._attempted(beat, request, attempt, limits, status, started)
            raise failed from None
        self._attempted(beat, request, attempt, limits, "success", started)
        if self._latency is not None:
            # An embedding comes whole: its first chunk is the answer.
            seconds = time.monotonic() - started
            self._latency.observe(request.model, TaskType.EMBEDDING, seconds, None)
        beat.usage.add(request.model, tokens, 0)
        beat.costs.record(request.step, request.model, attempt + 1, "success", tokens)
        record_tokens(request.step, request.model, tokens, 0)
        return EmbedAnswer(vectors=vectors, usage=beat.usage, ledger=beat.costs,
                           stats=beat.ledger.stats)  # fmt: skip
