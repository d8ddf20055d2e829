"""The workflow around a user's long task: state machine, pause/resume/status, checkpoints,
deadline, budget, cancel and continue-as-new; the user writes only ``work``."""

from __future__ import annotations

import asyncio
import contextlib
import inspect
from collections.abc import Callable
from typing import Any, TypeVar, get_type_hints

from temporalio import workflow
from temporalio.exceptions import ActivityError, ApplicationError

from longtask.agent._book import AgentBook
from longtask.agent._context import BudgetExceededError, ContinueAsNewRequested, TaskContext
from longtask.agent._models import AgentStatus, LongTaskInput, TaskOutcome
from longtask.engine.names import (
    CALL_RETRYING_SIGNAL,
    INVALID_TASK_ID,
    PATCH_LONG_TASK_CADENCE,
    STATUS_QUERY,
    TASK_FAILED,
)
from longtask.engine.task_engine import TaskEngine
from longtask.states import TaskState
from longtask.task_ids import task_id_problem

TaskClass = TypeVar("TaskClass", bound=type)


async def _stop(work: asyncio.Task[Any]) -> None:
    """Cancel the task's work and wait until its calls stopped, whatever they raise."""
    work.cancel()
    with contextlib.suppress(asyncio.CancelledError, Exception):
        await work


class LongTask(TaskEngine):
    """Base of a long task: subclass it, write ``work``, decorate the class with ``long_task``.

    Its handlers are stable names: the ``status`` query, the ``pause`` and ``resume`` updates
    (the engine's), the ``call_retrying`` signal.
    """

    _book: AgentBook | None = None
    _on_cadence = False

    async def work(self, ctx: TaskContext, request: Any) -> Any:
        raise NotImplementedError

    def _agent_book(self) -> AgentBook:
        if self._book is None:
            raise ApplicationError("the task has not started yet")
        return self._book

    def _publishes(self) -> bool:
        return self._agent_book().task.search_attributes

    def _checkpoints_on_cadence(self) -> bool:
        return self._on_cadence

    async def _run_task(self, request: LongTaskInput) -> TaskOutcome[Any]:
        problem = task_id_problem(request.task_id)
        if problem is None and request.task_id != workflow.info().workflow_id:
            problem = f"task id {request.task_id!r} differs from its workflow id"
        if problem is not None:
            raise ApplicationError(problem, type=INVALID_TASK_ID, non_retryable=True)
        book = self._book = AgentBook(request, workflow.info().start_time)
        self._paused = book.machine.state is TaskState.PAUSED
        # Runs begun before the engine's cadence took a checkpoint at each change, no pump.
        self._on_cadence = workflow.patched(PATCH_LONG_TASK_CADENCE)
        if book.machine.state is TaskState.PENDING:
            self._go(TaskState.RUNNING, "worker picked the task up")
        if self._on_cadence:
            self._start_checkpoints()
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
            self._stop_checkpoints()
            await self._final_checkpoint()
            workflow.continue_as_new(request.model_copy(update={"carried": book.carry()}))
        except BudgetExceededError as spent_all:
            return await self._end(TaskState.BUDGET_EXCEEDED, str(spent_all))
        except (ActivityError, ApplicationError) as error:
            cause = error.cause if isinstance(error, ActivityError) else error
            await self._end(TaskState.FAILED, str(cause or error))
            raise ApplicationError(
                f"task failed: {cause or error}", type=TASK_FAILED, non_retryable=True
            ) from error
        return await self._end(TaskState.COMPLETED, "work finished", result)

    async def _end(self, state: TaskState, reason: str, result: Any = None) -> TaskOutcome[Any]:
        book = self._agent_book()
        await self._finish(state, reason)
        return TaskOutcome[Any](
            task_id=book.task.task_id,
            state=state,
            result=result,
            reason=reason,
            usage=book.usage,
            cost_so_far=book.cost(),
            ledger=book.ledger,
        )

    def _work_changed(self) -> None:
        """A call ended or progress moved: follow retries in the state, then checkpoint."""
        book = self._agent_book()
        state = book.machine.state
        book.follow_retries(workflow.now())
        if book.machine.state is not state:
            self._publish()
        self._mark_dirty()

    @workflow.signal(name=CALL_RETRYING_SIGNAL)
    def call_retrying(self, call: int) -> None:
        """A model or embedding call retries after a provider failure (not a lost worker)."""
        if self._book is not None and self._book.call_retrying(call):
            self._work_changed()

    @workflow.query(name=STATUS_QUERY)
    def status(self) -> AgentStatus:
        return self._agent_book().status(workflow.now())


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
