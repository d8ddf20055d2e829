"""The engine every task runs on, built-in or the user's own: the state machine's handlers
(``status``, ``pause``, ``resume``), checkpoints on the cadence of SPEC section 5 through the
worker's sink, the final checkpoint that survives the worker, and search attributes.

A task's workflow class derives from ``TaskEngine`` and keeps what it knows about itself in a
book (``EngineBook``): the document task in ``workflows/task_book.py``, a long task in
``longtask/agent/_book.py``. Workflow code only: deterministic, no I/O.
"""

from __future__ import annotations

import asyncio
from datetime import datetime, timedelta
from typing import Protocol

from temporalio import workflow
from temporalio.common import RetryPolicy
from temporalio.exceptions import ActivityError, ApplicationError

# The worker's checkpoint sink is one object per process: workflow code must reach the real
# module, not a sandbox copy of it (activities/checkpoint_sink.py says why there is a sink).
with workflow.unsafe.imports_passed_through():
    from activities.checkpoint_sink import offer_checkpoint
    from longtask.checkpoints import MirrorWrite
    from longtask.engine.names import (
        PAUSE_UPDATE,
        RESUME_UPDATE,
        STEER_SIGNAL,
        STEERED_QUERY,
        WRITE_CHECKPOINT,
    )
    from longtask.engine.steering import KEPT_STEER_ANSWERS, SteerAnswer, SteerRequest
    from longtask.progress import CheckpointCadence, ProgressRecord
    from longtask.search_attributes import TASK_COST, TASK_PROGRESS, TASK_STATE
    from longtask.states import TaskState, TaskStateMachine

# The final checkpoint (an ended task, or a hand-over to a new run) is a regular activity, so it
# survives the worker; Redis gets about 20 s to come back before the task ends without it.
FINAL_CHECKPOINT_RETRY = RetryPolicy(
    initial_interval=timedelta(milliseconds=500),
    backoff_coefficient=2.0,
    maximum_interval=timedelta(seconds=5),
    maximum_attempts=6,
)
FINAL_CHECKPOINT_TIMEOUT = timedelta(seconds=5)
# A large task finishes many steps a second: its checkpoints are at least this far apart
# (every finished result is durable in Temporal at once; the mirror is for outside readers).
LARGE_TASK_CHECKPOINT_SECONDS = 1.0


class EngineBook(Protocol):
    """What the engine needs of a task's book."""

    machine: TaskStateMachine

    @property
    def inline(self) -> bool:
        """Small enough to checkpoint at every change (a large task: at most once a second)."""
        ...

    @property
    def every_change(self) -> bool:
        """Every change is worth a checkpoint, not only a finished step (a conversation)."""
        ...

    def go(self, target: TaskState, now: datetime, reason: str) -> None: ...

    def follow_retries(self, now: datetime) -> None: ...

    def record(self, now: datetime) -> ProgressRecord: ...

    def details(self, now: datetime) -> str: ...

    def cost(self) -> float: ...

    def checkpoint(self, now: datetime, error: str | None = None) -> MirrorWrite: ...

    def skip_checkpoint(self, now: datetime) -> None: ...


class TaskEngine:
    """Base of a task's workflow class: handlers, checkpoints and the end of a task.

    A subclass sets ``_book`` before its first transition, calls ``_start_checkpoints`` once
    its run begins and ``_end_checkpoints`` (through ``_finish``) when it ends.
    """

    _book: EngineBook | None = None
    _paused = False
    _dirty = False
    _cadence: CheckpointCadence | None = None
    _pumps: tuple[asyncio.Task[None], ...] = ()
    _steered: dict[str, SteerAnswer] | None = None

    # ----- what a subclass may refine

    def _publishes(self) -> bool:
        """Whether this task upserts its search attributes (registered in the namespace)."""
        return False

    def _checkpoints_on_cadence(self) -> bool:
        """False for runs that took a checkpoint at each change, without a pump."""
        return True

    # ----- the book

    def _require_book(self) -> EngineBook:
        if self._book is None:
            raise ApplicationError("the task has not started yet")
        return self._book

    # ----- transitions

    def _go(self, target: TaskState, reason: str) -> None:
        """Enter ``target``: the book, the UI's details, a checkpoint, the search attributes."""
        self._require_book().go(target, workflow.now(), reason)
        self._mark_dirty()
        self._publish()

    def _publish(self) -> None:
        """State, progress and cost as search attributes, so tasks can be filtered by them.

        Called on each transition and each checkpoint, not on every progress report: each
        call is an event in the history.
        """
        if not self._publishes():
            return
        book = self._require_book()
        record = book.record(workflow.now())
        workflow.upsert_search_attributes(
            [
                TASK_STATE.value_set(book.machine.state.value),
                TASK_PROGRESS.value_set(float(record.progress)),
                TASK_COST.value_set(float(book.cost())),
            ]
        )

    def _mark_dirty(self) -> None:
        """Something durable happened: the UI's details now, a checkpoint when due."""
        book = self._require_book()
        self._dirty = True
        workflow.set_current_details(book.details(workflow.now()))
        if not self._checkpoints_on_cadence():
            self._offer_checkpoint()

    # ----- checkpoints

    def _start_checkpoints(self) -> None:
        """The pump that hands checkpoints to the worker's sink, and its 30 s ticker."""
        self._cadence = CheckpointCadence()
        self._pumps = (
            asyncio.create_task(self._checkpoint_pump()),
            asyncio.create_task(self._checkpoint_ticker()),
        )

    def _stop_checkpoints(self) -> None:
        for pump in self._pumps:
            pump.cancel()
        self._pumps = ()

    async def _checkpoint_pump(self) -> None:
        """Hands the newest checkpoint to the worker's sink whenever the cadence says so.

        Every wake-up comes from the history (a result, a signal, a timer), never from a mirror
        write, so the commands it issues (search attributes, the pause between checkpoints of
        a large task) fall in the same place on every replay.
        """
        book = self._require_book()
        cadence = self._cadence or CheckpointCadence()
        while True:
            await workflow.wait_condition(lambda: self._dirty)
            self._dirty = False
            now = workflow.now()
            record = book.record(now)
            due = cadence.due(record.step, record.progress, now.timestamp())
            if not (due or book.every_change):
                continue
            self._offer_checkpoint()
            cadence.mark(record.step, record.progress, now.timestamp())
            self._publish()
            if not book.inline:
                await asyncio.sleep(LARGE_TASK_CHECKPOINT_SECONDS)

    async def _checkpoint_ticker(self) -> None:
        """Wakes the pump on the time rule; one timer per period, not one per wake-up."""
        cadence = self._cadence or CheckpointCadence()
        while True:
            await asyncio.sleep(cadence.every_seconds)
            self._dirty = True

    def _offer_checkpoint(self) -> None:
        """Hand the checkpoint of the task as it is now to the worker's sink, unless replaying."""
        book = self._require_book()
        now = workflow.now()
        if workflow.unsafe.is_replaying():
            # Mirrored when it was first taken; only its id is accounted for.
            book.skip_checkpoint(now)
            return
        offer_checkpoint(workflow.info().task_queue, book.checkpoint(now))

    async def _final_checkpoint(self, error: str | None = None) -> None:
        """The task's last checkpoint: through the sink at once, and durably by an activity."""
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
        except (ActivityError, ApplicationError) as failure:
            # The task's outcome stands; the sink keeps trying while this worker runs.
            workflow.logger.warning("checkpoint %s not mirrored: %s", write.checkpoint.id, failure)

    async def _finish(self, state: TaskState, reason: str) -> None:
        """Enter a terminal state and write the last checkpoint."""
        self._stop_checkpoints()
        self._go(state, reason)
        await self._final_checkpoint(None if state is TaskState.COMPLETED else reason)

    # ----- handlers

    @workflow.update(name=PAUSE_UPDATE)
    def pause(self) -> str:
        return self._pause()

    def _pause(self) -> str:
        self._paused = True
        self._go(TaskState.PAUSED, "pause requested")
        return self._require_book().machine.state.value

    @pause.validator
    def _validate_pause(self) -> None:
        book = self._require_book()
        if not book.machine.can_go(TaskState.PAUSED):
            raise ApplicationError(f"a {book.machine.state} task cannot be paused")

    @workflow.update(name=RESUME_UPDATE)
    def resume(self) -> str:
        return self._resume()

    def _resume(self) -> str:
        self._paused = False
        self._go(TaskState.RUNNING, "resume requested")
        book = self._require_book()
        book.follow_retries(workflow.now())
        return book.machine.state.value

    @resume.validator
    def _validate_resume(self) -> None:
        book = self._require_book()
        if book.machine.state is not TaskState.PAUSED:
            raise ApplicationError(f"a {book.machine.state} task is not paused")

    @workflow.signal(name=STEER_SIGNAL)
    def steer(self, request: SteerRequest) -> None:
        """``pause`` or ``resume`` asked by signal: the same checks and the same effect as
        the updates; the answer waits for the ``steered`` query. Never raises: a signal
        handler that raises fails the task."""
        answers = self._steered if self._steered is not None else {}
        self._steered = answers
        if request.request_id in answers:
            return  # a signal the server got twice
        try:
            if request.action == "pause":
                self._validate_pause()
                answer = SteerAnswer(state=self._pause())
            else:
                self._validate_resume()
                answer = SteerAnswer(state=self._resume())
        except (ApplicationError, ValueError) as refusal:
            answer = SteerAnswer(refused=getattr(refusal, "message", None) or str(refusal))
        answers[request.request_id] = answer
        while len(answers) > KEPT_STEER_ANSWERS:
            del answers[next(iter(answers))]

    @workflow.query(name=STEERED_QUERY)
    def steered(self, request_id: str) -> SteerAnswer | None:
        return (self._steered or {}).get(request_id)
