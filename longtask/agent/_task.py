"""The workflow around a user's long task: state machine, pause/resume/status, checkpoints,
deadline, budget, cancel and continue-as-new; the user writes only ``work``."""

from __future__ import annotations

import asyncio
import contextlib
import inspect
from collections.abc import Callable
from datetime import timedelta
from typing import Any, TypeVar, get_type_hints

from temporalio import workflow
from temporalio.common import RetryPolicy
from temporalio.exceptions import ActivityError, ApplicationError

# The worker's checkpoint sink is one object per process: workflow code must reach the real
# module, not a sandbox copy of it (activities/checkpoint_sink.py says why there is a sink).
with workflow.unsafe.imports_passed_through():
    from activities.checkpoint_sink import offer_checkpoint

from longtask.agent._book import AgentBook
from longtask.agent._context import (
    CALL_RETRYING,
    BudgetExceededError,
    ContinueAsNewRequested,
    TaskContext,
)
from longtask.agent._models import AgentStatus, LongTaskInput, TaskOutcome
from longtask.search_attributes import TASK_COST, TASK_PROGRESS, TASK_STATE
from longtask.states import TaskState
from longtask.task_ids import INVALID_TASK_ID, task_id_problem

# The last checkpoint is a regular activity, so it survives the worker (checkpoint_sink.py).
WRITE_CHECKPOINT = "write_checkpoint"
FINAL_CHECKPOINT_RETRY = RetryPolicy(
    initial_interval=timedelta(milliseconds=500),
    backoff_coefficient=2.0,
    maximum_interval=timedelta(seconds=5),
    maximum_attempts=6,
)
FINAL_CHECKPOINT_TIMEOUT = timedelta(seconds=5)

TaskClass = TypeVar("TaskClass", bound=type)


async def _stop(work: asyncio.Task[Any]) -> None:
    """Cancel the task's work and wait until its calls stopped, whatever they raise."""
    work.cancel()
    with contextlib.suppress(asyncio.CancelledError, Exception):
        await work


class LongTask:
    """Base of a long task: subclass it, write ``work``, decorate the class with ``long_task``.

    Its handlers are stable names: the ``status`` query, the ``pause`` and ``resume`` updates.
    """

    _book: AgentBook | None = None
    _paused = False

    async def work(self, ctx: TaskContext, request: Any) -> Any:
        raise NotImplementedError

    async def _run_task(self, request: LongTaskInput) -> TaskOutcome[Any]:
        problem = task_id_problem(request.task_id)
        if problem is None and request.task_id != workflow.info().workflow_id:
            problem = f"task id {request.task_id!r} differs from its workflow id"
        if problem is not None:
            raise ApplicationError(problem, type=INVALID_TASK_ID, non_retryable=True)
        book = self._book = AgentBook(request, workflow.info().start_time)
        self._paused = book.machine.state is TaskState.PAUSED
        if book.machine.state is TaskState.PENDING:
            self._go(TaskState.RUNNING, "worker picked the task up")
        context = TaskContext(request, book, lambda: self._paused, self._work_changed)
        spent = (workflow.now() - book.started_at).total_seconds()
        left = max(request.deadline_seconds - spent, 0.001)
        # The work runs as a task of its own, so a deadline or a cancel can stop it and still
        # end the task properly (an activity stopped that way raises ActivityError, which
        # asyncio.wait_for would hand on instead of its TimeoutError).
        work = asyncio.create_task(self.work(context, request))
        try:
            await workflow.wait_condition(work.done, timeout=left)
        except TimeoutError:
            await _stop(work)
            return await self._end(TaskState.TIMED_OUT, f"deadline of {left:.0f} s passed")
        except asyncio.CancelledError:
            await _stop(work)
            await self._end(TaskState.CANCELLED, "cancel requested")
            raise
        try:
            result = work.result()
        except ContinueAsNewRequested:
            await self._final_checkpoint()
            workflow.continue_as_new(request.model_copy(update={"carried": book.carry()}))
        except BudgetExceededError as spent_all:
            return await self._end(TaskState.BUDGET_EXCEEDED, str(spent_all))
        except (ActivityError, ApplicationError) as error:
            cause = error.cause if isinstance(error, ActivityError) else error
            await self._end(TaskState.FAILED, str(cause or error))
            raise ApplicationError(
                f"task failed: {cause or error}", type="TASK_FAILED", non_retryable=True
            ) from error
        return await self._end(TaskState.COMPLETED, "work finished", result)

    async def _end(self, state: TaskState, reason: str, result: Any = None) -> TaskOutcome[Any]:
        book = self._require_book()
        self._go(state, reason)
        await self._final_checkpoint(None if state is TaskState.COMPLETED else reason)
        return TaskOutcome[Any](
            task_id=book.task.task_id,
            state=state,
            result=result,
            reason=reason,
            usage=book.usage,
            cost_so_far=book.cost(),
            ledger=book.ledger,
        )

    def _require_book(self) -> AgentBook:
        if self._book is None:
            raise ApplicationError("the task has not started yet")
        return self._book

    def _go(self, target: TaskState, reason: str) -> None:
        book = self._require_book()
        book.go(target, workflow.now(), reason)
        self._publish()
        self._changed()

    def _publish(self) -> None:
        """State, progress and cost as search attributes, on transitions only (each is an
        event); only where the task says they are registered."""
        book = self._require_book()
        if not book.task.search_attributes:
            return
        record = book.record(workflow.now())
        workflow.upsert_search_attributes(
            [
                TASK_STATE.value_set(book.machine.state.value),
                TASK_PROGRESS.value_set(float(record.progress)),
                TASK_COST.value_set(float(book.cost())),
            ]
        )

    def _work_changed(self) -> None:
        """A call ended or progress moved: follow retries in the state, then checkpoint."""
        book = self._require_book()
        state = book.machine.state
        book.follow_retries(workflow.now())
        if book.machine.state is not state:
            self._publish()
        self._changed()

    @workflow.signal(name=CALL_RETRYING)
    def call_retrying(self, call: int) -> None:
        """A model or embedding call retries after a provider failure (not a lost worker)."""
        if self._book is not None and self._book.call_retrying(call):
            self._work_changed()

    def _changed(self) -> None:
        """Something durable happened: hand a checkpoint to the worker's sink (not when
        replaying: it was mirrored when first taken) and refresh the UI's details."""
        book = self._require_book()
        now = workflow.now()
        record = book.record(now)
        workflow.set_current_details(
            f"**{book.machine.state.value}** {record.progress:.2f} % "
            f"({record.step}/{record.total} steps), {book.calls} call(s), "
            f"cost ${book.cost():.6f}"
        )
        if workflow.unsafe.is_replaying():
            book.skip_checkpoint(now)
        else:
            offer_checkpoint(workflow.info().task_queue, book.checkpoint(now))

    async def _final_checkpoint(self, error: str | None = None) -> None:
        book = self._require_book()
        write = book.checkpoint(workflow.now(), error).model_copy(update={"final": True})
        if not workflow.unsafe.is_replaying():
            offer_checkpoint(workflow.info().task_queue, write)
        try:
            await workflow.execute_activity(
                WRITE_CHECKPOINT,
                write,
                result_type=bool,
                start_to_close_timeout=FINAL_CHECKPOINT_TIMEOUT,
                retry_policy=FINAL_CHECKPOINT_RETRY,
                summary=f"mirror checkpoint {write.checkpoint.id}",
            )
        except ActivityError as failure:
            # The task's outcome stands; the sink keeps trying while this worker runs.
            workflow.logger.warning("checkpoint %s not mirrored: %s", write.checkpoint.id, failure)

    @workflow.query(name="status")
    def status(self) -> AgentStatus:
        return self._require_book().status(workflow.now())

    @workflow.update(name="pause")
    def pause(self) -> str:
        self._paused = True
        self._go(TaskState.PAUSED, "pause requested")
        return TaskState.PAUSED.value

    @pause.validator
    def _validate_pause(self) -> None:
        book = self._require_book()
        if not book.machine.can_go(TaskState.PAUSED):
            raise ApplicationError(f"a {book.machine.state} task cannot be paused")

    @workflow.update(name="resume")
    def resume(self) -> str:
        self._paused = False
        self._go(TaskState.RUNNING, "resume requested")
        return TaskState.RUNNING.value

    @resume.validator
    def _validate_resume(self) -> None:
        book = self._require_book()
        if book.machine.state is not TaskState.PAUSED:
            raise ApplicationError(f"a {book.machine.state} task is not paused")


def long_task(name: str | None = None) -> Callable[[TaskClass], TaskClass]:
    """Make a ``LongTask`` subclass a Temporal workflow named ``name`` (the class's by default).

    Its input and result types are read from ``work(self, ctx, request: In) -> Out``: the
    workflow takes ``In`` (a ``LongTaskInput``) and answers ``TaskOutcome[Out]``.
    """

    def define(cls: TaskClass) -> TaskClass:
        hints = get_type_hints(cls.work)  # type: ignore[attr-defined]
        parameters = list(inspect.signature(cls.work).parameters)  # type: ignore[attr-defined]
        request_type = hints[parameters[-1]]
        result_type = hints.get("return", Any)
        outcome_type: Any = TaskOutcome[result_type]  # type: ignore[valid-type]

        async def run(self: LongTask, request: LongTaskInput) -> TaskOutcome[Any]:
            return await self._run_task(request)

        # The SDK reads the run method's types for the payloads, and wants it on the class.
        run.__annotations__ = {"request": request_type, "return": outcome_type}
        run.__module__ = cls.__module__
        run.__qualname__ = f"{cls.__name__}.run"
        cls.run = workflow.run(run)  # type: ignore[attr-defined]
        return workflow.defn(name=name or cls.__name__)(cls)

    return define
