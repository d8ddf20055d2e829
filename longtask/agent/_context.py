"""The context a long task's code works through: model, embedding and tool calls as
activities, progress, state (messages and variables) and checkpoints."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable, Iterable, Sequence
from datetime import timedelta
from typing import Any, TypeVar, cast

from pydantic import BaseModel
from temporalio import workflow
from temporalio.exceptions import ActivityError
from temporalio.workflow import ActivityCancellationType

from longtask.agent._book import AgentBook
from longtask.agent._models import (
    EmbedAnswer,
    EmbedRequest,
    LongTaskInput,
    MapCallsAnswer,
    MapCallsRequest,
    ModelAnswer,
    ModelCallRequest,
    ToolAnswer,
    ToolCall,
    ToolRequest,
)
from longtask.agent._progress import Progress
from longtask.agent._tools import Tool
from longtask.engine.names import CALL_MODEL, CALL_MODELS, EMBED_TEXTS, PATCH_MAP_WAITS_FOR_ALL
from longtask.policies import TaskType

Item = TypeVar("Item")
Out = TypeVar("Out")
# Room on top of a call's longest attempt for the activity around it.
ACTIVITY_MARGIN_SECONDS = 30.0


class BudgetExceededError(Exception):
    """The task's budget is spent: no new call starts and the task ends ``budget_exceeded``."""


class MapCallsError(Exception):
    """Calls of ``map_calls`` failed for good; ``failures`` says which (by position) and why.
    The others' answers are in ``answers`` (None where a call failed), paid and booked."""

    def __init__(self, failures: dict[int, str], answers: list[ModelAnswer | None]) -> None:
        first = min(failures)
        super().__init__(
            f"{len(failures)} of {len(answers)} call(s) failed for good; "
            f"call {first}: {failures[first]}"
        )
        self.failures = failures
        self.answers = answers


class ContinueAsNewRequested(Exception):
    """Raised by ``continue_as_new_if_long``; the task continues as a new run, state carried."""


class TaskContext:
    """Given to a task's ``work``; every method is safe in workflow code."""

    def __init__(
        self,
        task: LongTaskInput,
        book: AgentBook,
        is_paused: Callable[[], bool],
        on_change: Callable[[], None],
    ) -> None:
        self.task = task
        self.book = book
        self._is_paused = is_paused
        self._on_change = on_change
        self.progress = Progress(self, ())
        # Given to every tool this task calls (ToolEnv.context): JSON-able, and in history.
        self.tool_context: dict[str, Any] = {}

    @property
    def task_id(self) -> str:
        return self.task.task_id

    @property
    def messages(self) -> list[dict[str, Any]]:
        """The conversation: in every checkpoint, and back after continue-as-new or a resume."""
        return self.book.messages

    @property
    def variables(self) -> dict[str, Any]:
        """The task's own JSON-able state: in every checkpoint, and back like ``messages``."""
        return self.book.variables

    def changed(self) -> None:
        self._on_change()

    async def _ready(self) -> None:
        """Wait while paused; refuse to start a call once the budget is spent."""
        await workflow.wait_condition(lambda: not self._is_paused())
        reason = self.book.budget_reached()
        if reason is not None:
            raise BudgetExceededError(reason)

    def _multiplier(self, task_type: str) -> float:
        return self.task.task_types.get(task_type, 1.0)

    def _timeout(self, task_type: str) -> timedelta:
        """The activity's bound: the call's longest attempt, with the task type's multiplier."""
        policy = self.task.policy
        longest = policy.base_timeout_seconds * self._multiplier(task_type) * 2**policy.max_retries
        seconds = min(longest, policy.max_timeout_seconds) + ACTIVITY_MARGIN_SECONDS
        return timedelta(seconds=seconds)

    def model_for(self, task_type: str) -> str:
        return self.task.models.get(task_type) or self.task.models[TaskType.DEFAULT.value]

    async def call_model(
        self,
        messages: list[dict[str, Any]] | None = None,
        *,
        task_type: str = "default",
        model: str | None = None,
        tools: Sequence[Tool | dict[str, Any]] = (),
        stream: bool = False,
        step: str = "model",
    ) -> ModelAnswer:
        """One model call as an activity under the task's timeout policy.

        Without ``messages`` it answers the task's conversation and appends the answer to it.
        A streamed answer cut by a fault or a lost worker continues from its text so far.
        """
        await self._ready()
        conversation = self.messages if messages is None else messages
        call = self.book.next_call()
        request = ModelCallRequest(
            task_id=self.task_id,
            step=step,
            call=call,
            task_type=task_type,
            multiplier=self._multiplier(task_type),
            model=model or self.model_for(task_type),
            messages=conversation,
            tools=[t.definition() if isinstance(t, Tool) else t for t in tools],
            stream=stream,
            policy=self.task.policy,
        )
        self.book.in_flight.add(call)
        try:
            answer: ModelAnswer = await workflow.execute_activity(
                CALL_MODEL,
                request,
                result_type=ModelAnswer,
                start_to_close_timeout=self._timeout(task_type),
                heartbeat_timeout=timedelta(seconds=self.task.heartbeat_timeout_seconds),
                retry_policy=self.task.policy.retry_policy(),
                summary=f"{step}: {request.model} ({task_type}), {len(conversation)} message(s)",
            )
        finally:
            self.book.call_ended(call)
        if messages is None:
            self.messages.append(answer.as_message())
        output = answer.text or [c.model_dump() for c in answer.tool_calls]
        self.book.book(call, step, "model", output, answer.usage, answer.ledger, request.model)
        self.changed()
        return answer

    async def embed(
        self, texts: list[str], *, model: str | None = None, step: str = "embed"
    ) -> list[list[float]]:
        """Vectors for ``texts`` (task type ``embedding``), in order."""
        await self._ready()
        call = self.book.next_call()
        request = EmbedRequest(
            task_id=self.task_id,
            step=step,
            call=call,
            model=model or self.model_for(TaskType.EMBEDDING.value),
            multiplier=self._multiplier(TaskType.EMBEDDING.value),
            texts=texts,
            policy=self.task.policy,
        )
        self.book.in_flight.add(call)
        try:
            answer: EmbedAnswer = await workflow.execute_activity(
                EMBED_TEXTS,
                request,
                result_type=EmbedAnswer,
                start_to_close_timeout=self._timeout(TaskType.EMBEDDING.value),
                heartbeat_timeout=timedelta(seconds=self.task.heartbeat_timeout_seconds),
                retry_policy=self.task.policy.retry_policy(),
                summary=f"{step}: {len(texts)} text(s) with {request.model}",
            )
        finally:
            self.book.call_ended(call)
        summary = f"{len(answer.vectors)} vector(s)"
        self.book.book(call, step, "embed", summary, answer.usage, answer.ledger, request.model)
        self.changed()
        return answer.vectors

    async def call_tool(
        self, tool: Tool, args: BaseModel | dict[str, Any], *, call_id: str | None = None
    ) -> Any:
        """Run ``tool`` as an activity with its own timeout and attempts; its output back.

        Once its result is in the history a tool call is never run again, on any worker.
        """
        await self._ready()
        call = self.book.next_call()
        arguments = args.model_dump(mode="json") if isinstance(args, BaseModel) else args
        request = ToolRequest(
            task_id=self.task_id,
            call_id=call_id or f"call-{call}",
            arguments=arguments,
            context=self.tool_context,
            models=self.task.models,
            policy=self.task.policy,
        )
        answer: ToolAnswer = await workflow.execute_activity(
            tool.activity_name,
            request,
            result_type=ToolAnswer,
            start_to_close_timeout=timedelta(seconds=tool.timeout_seconds),
            # The worker heartbeats while the tool runs: a dead worker costs seconds, not
            # the tool's whole timeout.
            heartbeat_timeout=timedelta(seconds=self.task.heartbeat_timeout_seconds),
            retry_policy=tool.retry_policy(),
            summary=f"tool {tool.name}({json.dumps(arguments)[:80]})",
        )
        self.book.book(call, tool.name, "tool", answer.output, answer.usage, answer.ledger)
        self.changed()
        return answer.output

    async def map(
        self,
        items: Sequence[Item],
        work: Callable[[Item], Awaitable[Out]],
        *,
        concurrency: int = 8,
    ) -> list[Out]:
        """``work`` on every item, at most ``concurrency`` at a time; results in item order.

        Each item's calls are activities of their own: right for items that call tools or
        several models. For thousands of single model calls use ``map_calls``, which carries
        many calls per activity.
        """
        gate = asyncio.Semaphore(max(concurrency, 1))

        async def one(item: Item) -> Out:
            async with gate:
                return await work(item)

        # Runs begun before waited only until the first error or cancel.
        wait_for_all = workflow.patched(PATCH_MAP_WAITS_FOR_ALL)
        return await _all_of((one(item) for item in items), wait_for_all)

    async def map_calls(
        self,
        conversations: Sequence[list[dict[str, Any]]],
        *,
        task_type: str = "default",
        model: str | None = None,
        step: str = "map",
        batch_size: int = 32,
        batches_in_flight: int = 4,
        call_concurrency: int = 16,
        allow_failures: bool = False,
        progress: Progress | None = None,
    ) -> list[ModelAnswer]:
        """One model call per conversation, many calls per activity: the throughput of the
        document task's batches for a map over thousands of items.

        At most ``batches_in_flight`` batches of ``batch_size`` calls run at once, each with at
        most ``call_concurrency`` calls at a time. A call keeps its own provider attempts; a
        retried batch makes only its missing calls. Answers come back in order; each finished
        batch advances ``progress`` by its calls. A call that fails for good raises
        ``MapCallsError`` once every batch ended, or with ``allow_failures`` answers with its
        ``error`` set and no text.
        """
        size = max(batch_size, 1)
        batches = [list(range(i, min(i + size, len(conversations))))
                   for i in range(0, len(conversations), size)]  # fmt: skip
        gate = asyncio.Semaphore(max(batches_in_flight, 1))
        answers: list[ModelAnswer | None] = [None] * len(conversations)
        failures: dict[int, str] = {}
        chosen = model or self.model_for(task_type)

        async def run(positions: list[int]) -> None:
            async with gate:
                await self._ready()
                first = self.book.next_calls(len(positions))
                request = MapCallsRequest(
                    task_id=self.task_id,
                    step=step,
                    first_call=first,
                    task_type=task_type,
                    multiplier=self._multiplier(task_type),
                    model=chosen,
                    conversations=[conversations[p] for p in positions],
                    policy=self.task.policy,
                    call_concurrency=call_concurrency,
                )
                timeout = self._batch_timeout(task_type, len(positions), call_concurrency)
                done: MapCallsAnswer = await workflow.execute_activity(
                    CALL_MODELS,
                    request,
                    result_type=MapCallsAnswer,
                    start_to_close_timeout=timeout,
                    heartbeat_timeout=timedelta(seconds=self.task.heartbeat_timeout_seconds),
                    retry_policy=self.task.policy.calls_retry_policy(),
                    # A cancelled task ends once its batches answered with what they had.
                    cancellation_type=ActivityCancellationType.WAIT_CANCELLATION_COMPLETED,
                    summary=f"{step}: calls {first}..{first + len(positions) - 1} "
                    f"with {chosen} ({task_type})",
                )
            self.book.pay(done.usage, done.ledger)
            for offset, position in enumerate(positions):
                answer = done.answers.get(offset)
                if answer is not None:
                    answers[position] = answer
                    self.book.note(first + offset, step, "model", answer.text, chosen)
                else:
                    failures[position] = done.failed.get(offset, "no answer")
            if progress is not None:
                progress.advance(len(positions))
            self.changed()

        await _all_of(run(positions) for positions in batches)
        if failures and not allow_failures:
            raise MapCallsError(failures, answers)
        return [
            answer if answer is not None else ModelAnswer(text="", model=chosen, error=failures[i])
            for i, answer in enumerate(answers)
        ]

    def _batch_timeout(self, task_type: str, calls: int, call_concurrency: int) -> timedelta:
        """Room for every call of a batch, ``call_concurrency`` at a time, each its longest
        attempt (the batch is retried for a failed call, so one attempt's worth each)."""
        policy = self.task.policy
        attempt = policy.base_timeout_seconds * self._multiplier(task_type) * 2**policy.max_retries
        rounds = -(-calls // max(call_concurrency, 1))
        seconds = min(attempt, policy.max_timeout_seconds) * rounds + ACTIVITY_MARGIN_SECONDS
        return timedelta(seconds=seconds)

    async def run_tool_calls(self, calls: list[ToolCall], tools: Sequence[Tool]) -> None:
        """Run the tools a model asked for, side by side, and append each result to the
        conversation as a ``tool`` message; a tool that failed for good answers with its error,
        so the model can do without it."""
        by_name = {t.name: t for t in tools}

        async def one(call: ToolCall) -> dict[str, Any]:
            known = by_name.get(call.name)
            if known is None:
                content = f"error: no tool named {call.name!r}"
            else:
                try:
                    arguments = json.loads(call.arguments or "{}")
                    output = await self.call_tool(known, arguments, call_id=call.id)
                    content = output if isinstance(output, str) else json.dumps(output)
                except (ActivityError, ValueError) as error:
                    cause = getattr(error, "cause", None) or error
                    content = f"error: {cause}"
            return {"role": "tool", "tool_call_id": call.id, "name": call.name, "content": content}

        # gather keeps the order of the calls, so the conversation is the same on replay.
        self.messages.extend(await asyncio.gather(*(one(call) for call in calls)))
        self.changed()

    async def run_agent(
        self,
        tools: Sequence[Tool],
        *,
        max_turns: int,
        task_type: str = "default",
        model: str | None = None,
        on_turn: Callable[[int], None] | None = None,
    ) -> ModelAnswer | None:
        """The tool loop over the task's conversation: ask the model, run the tools it calls,
        until it answers without tools or ``max_turns`` model calls were made.

        Returns:
            The model's last answer, or None when the conversation already held it.
        """
        answer = None
        # Turns are counted from the conversation, so they survive continue-as-new and resume.
        for _ in range(max_turns + 1):
            await self.continue_as_new_if_long()
            last = self.messages[-1] if self.messages else {}
            if last.get("role") == "assistant":
                if not last.get("tool_calls"):
                    return answer  # answered before a continue-as-new or a resume
                # A resume from a checkpoint taken between the answer and its tools' results.
                await self.run_tool_calls(_calls_of(last), tools)
                continue
            turn = sum(1 for m in self.messages if m.get("role") == "assistant")
            if turn >= max_turns:
                break
            answer = await self.call_model(
                task_type=task_type, model=model, tools=tools, step=f"turn {turn + 1}"
            )
            if on_turn is not None:
                on_turn(turn)
            if not answer.tool_calls:
                return answer
            await self.run_tool_calls(answer.tool_calls, tools)
        return answer

    async def continue_as_new_if_long(self) -> None:
        """Continue as a new run, carrying messages, variables and cost, when the history is
        long; the task's ``work`` then starts again and finds its state where it was."""
        info = workflow.info()
        long = (
            info.get_current_history_length() >= self.task.max_history_events
            or info.get_current_history_size() >= self.task.max_history_bytes
        )
        if long or info.is_continue_as_new_suggested():
            raise ContinueAsNewRequested()


async def _all_of(works: Iterable[Awaitable[Out]], wait_for_all: bool = True) -> list[Out]:
    """Every result in order, once every work ended; then the first error, if any.

    A plain gather ends at the first error, or as soon as a work still waiting for its turn is
    cancelled: a cancelled task would end before its calls in flight answered with what they
    had finished (and paid for).
    """
    ended = await asyncio.gather(*works, return_exceptions=wait_for_all)
    for outcome in ended:
        if isinstance(outcome, BaseException):
            raise outcome
    return cast(list[Out], ended)


def _calls_of(message: dict[str, Any]) -> list[ToolCall]:
    return [
        ToolCall(id=c["id"], name=c["function"]["name"], arguments=c["function"]["arguments"])
        for c in message.get("tool_calls") or []
    ]
