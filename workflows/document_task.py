"""The task workflow: state machine, document fan-out, progress roll-up, checkpoint cadence.

Deterministic orchestration only: every read of a file, call to a model or write to Redis
happens in an activity. Activity names are stable strings; renaming one breaks running tasks.
What the task knows about itself is kept in its TaskBook (workflows/task_book.py).
"""

from __future__ import annotations

import asyncio
import contextlib
from datetime import timedelta
from typing import Any

from temporalio import workflow
from temporalio.common import RetryPolicy
from temporalio.exceptions import ActivityError, ApplicationError

with workflow.unsafe.imports_passed_through():
    from longtask.checkpoints import MirrorWrite
    from longtask.cost import TokenUsage
    from longtask.models import (
        CallStats,
        DocumentRef,
        LoadRequest,
        ProgressEvent,
        ResumeRequest,
        ResumeState,
        StepRequest,
        StepResult,
        TaskInput,
        TaskResult,
        TaskStatus,
    )
    from longtask.policies import StepKind, StepTimeouts
    from longtask.progress import CheckpointCadence
    from longtask.search_attributes import TASK_COST, TASK_PROGRESS, TASK_STATE
    from longtask.states import TaskState
    from workflows.task_book import TaskBook
    from workflows.task_tree import step_calls

KIND_OF_ACTIVITY: dict[str, StepKind] = {}
ACTIVITY_OF_STEP = {
    StepKind.EMBED: "embed_chunks",
    StepKind.SUMMARIZE: "summarize_pages",
    StepKind.REASON: "reason_across_pages",
    StepKind.REPORT: "write_report",
}
KIND_OF_ACTIVITY.update({name: kind for kind, name in ACTIVITY_OF_STEP.items()})
# Mirror writes are advisory: a few quick tries, then the task goes on without them.
MIRROR_RETRY = RetryPolicy(initial_interval=timedelta(milliseconds=200), maximum_attempts=3)
MIRROR_TIMEOUT = timedelta(seconds=5)
MIRROR_RETRY_SECONDS = 2.0
# Failures that no other document can escape: the whole task fails at once on the first.
STOP_TASK_ERRORS = frozenset({"AUTH_FAILED"})


def failure_of(error: ActivityError) -> tuple[str, StepKind | None, CallStats | None]:
    """The message of a step that failed for good, its kind, and the attempts it made."""
    cause = error.cause
    if not isinstance(cause, ApplicationError):
        return str(error), None, None
    stats = None
    if cause.details:
        with contextlib.suppress(ValueError):
            stats = CallStats.model_validate(cause.details[0])
    return cause.message, KIND_OF_ACTIVITY.get(error.activity_type or ""), stats


@workflow.defn(name="DocumentTask")
class DocumentTaskWorkflow:
    @workflow.init
    def __init__(self, task: TaskInput) -> None:
        self._task = task
        self._book = TaskBook(task, workflow.info().start_time)
        self._paused = self._book.machine.state is TaskState.PAUSED
        self._dirty = False
        self._cadence = CheckpointCadence()
        self._slots = asyncio.Semaphore(task.document_concurrency)
        self._rolling_over = False
        # Set when a failure dooms every document alike (a refused API key): stop at once.
        self._stop_reason: str | None = None

    @workflow.run
    async def run(self, task: TaskInput) -> TaskResult:
        if self._book.machine.state is TaskState.PENDING:
            self._go(TaskState.RUNNING, "worker picked the task up")
        pump = [
            asyncio.create_task(self._mirror_pump()),
            asyncio.create_task(self._mirror_ticker()),
        ]
        spent = (workflow.now() - self._book.started_at).total_seconds()
        try:
            await asyncio.wait_for(self._work(), timeout=max(task.deadline_seconds - spent, 0.001))
            if self._rolling_over:
                for running in pump:
                    running.cancel()
                await self._write_checkpoint()
                workflow.continue_as_new(self._book.carry_over())
        except TimeoutError:
            return await self._end(
                pump, TaskState.TIMED_OUT, f"deadline of {task.deadline_seconds:.0f} s passed"
            )
        except asyncio.CancelledError:
            await self._end(pump, TaskState.CANCELLED, "cancel requested")
            raise
        if self._stop_reason is not None:
            return await self._end(pump, TaskState.FAILED, self._stop_reason)
        failed = [r for r in self._book.reports.values() if r.state is TaskState.FAILED]
        if failed:
            reason = f"{len(failed)} of {len(self._book.reports)} documents failed"
            return await self._end(pump, TaskState.FAILED, reason)
        return await self._end(pump, TaskState.COMPLETED, "every document reported")

    async def _work(self) -> None:
        documents = await workflow.execute_activity(
            "load_documents",
            LoadRequest(paths=self._task.paths),
            result_type=list[DocumentRef],
            start_to_close_timeout=timedelta(minutes=5),
            retry_policy=self._task.policy.retry_policy(),
            summary=f"find documents in {', '.join(self._task.paths)}",
        )
        resume_from = self._task.resume_from
        if resume_from is not None:
            resumed = await workflow.execute_activity(
                "load_resume_state",
                ResumeRequest(task_id=self._task.task_id, checkpoint_id=resume_from.checkpoint_id),
                result_type=ResumeState,
                start_to_close_timeout=timedelta(minutes=1),
                retry_policy=self._task.policy.retry_policy(),
                summary=f"resume from checkpoint {resume_from.checkpoint_id}",
            )
            self._book.take_results(resumed)
        self._book.set_documents(documents)
        self._mark_dirty()
        processing = asyncio.create_task(self._process_all(documents))
        stopping = asyncio.create_task(
            workflow.wait_condition(lambda: self._stop_reason is not None)
        )
        await workflow.wait([processing, stopping], return_when=asyncio.FIRST_COMPLETED)
        if not processing.done():
            processing.cancel()  # the steps in flight are cancelled with it
            with contextlib.suppress(asyncio.CancelledError):
                await processing
        stopping.cancel()

    async def _process_all(self, documents: list[DocumentRef]) -> None:
        await asyncio.gather(*(self._process(document) for document in documents))

    def _history_is_long(self) -> bool:
        info = workflow.info()
        return (
            info.get_current_history_length() >= self._task.max_history_events
            or info.is_continue_as_new_suggested()
        )

    async def _process(self, document: DocumentRef) -> None:
        if document.index in self._book.reports:
            self._book.recall_finished(document, workflow.now())  # reported by an earlier run
            self._mark_dirty()
            return
        async with self._slots:
            # A long history hands the documents not started yet to a fresh run.
            if self._rolling_over or self._history_is_long():
                self._rolling_over = True
                return
            try:
                embedded, summarized = await asyncio.gather(
                    self._step(document, StepKind.EMBED),
                    self._step(document, StepKind.SUMMARIZE),
                )
                summaries = summarized.outputs
                analysis = await self._step(
                    document, StepKind.REASON, summaries=summaries, key_passages=embedded.outputs
                )
                report = await self._step(
                    document, StepKind.REPORT, summaries=summaries, analysis=analysis.outputs[0]
                )
            except ActivityError as error:
                message, kind, stats = failure_of(error)
                self._book.document_failed(document, message, kind, stats, workflow.now())
                cause = error.cause
                if isinstance(cause, ApplicationError) and cause.type in STOP_TASK_ERRORS:
                    self._stop_reason = f"stopped at the first {cause.type}: {message}"
                self._mark_dirty()
                return
        self._book.document_done(document, report.outputs[0])
        self._mark_dirty()

    async def _step(self, document: DocumentRef, kind: StepKind, **context: Any) -> StepResult:
        done_before = self._book.done_before(document, kind)
        if done_before is not None:
            # Finished by an earlier run of this task: its results stand, no call is made.
            skipped = StepResult(kind=kind, document=document.index, outputs=done_before,
                                 usage=TokenUsage())  # fmt: skip
            self._book.step_finished(document, kind, "", skipped, workflow.now(), ran=False)
            self._mark_dirty()
            return skipped
        await workflow.wait_condition(lambda: not self._paused)
        calls = step_calls(document, kind)
        policy = self._task.policy
        timeouts = StepTimeouts.for_step(
            policy, kind, calls, self._task.call_concurrency, self._task.heartbeat_timeout_seconds
        )
        request = StepRequest(
            task_id=self._task.task_id,
            document=document,
            model=self._task.models.for_step(kind),
            policy=policy,
            call_concurrency=self._task.call_concurrency,
            partial_response=self._book.partial_before(document, kind),
            **context,
        )
        result: StepResult = await workflow.execute_activity(
            ACTIVITY_OF_STEP[kind],
            request,
            result_type=StepResult,
            start_to_close_timeout=timedelta(seconds=timeouts.start_to_close_seconds),
            heartbeat_timeout=timedelta(seconds=timeouts.heartbeat_seconds),
            retry_policy=policy.retry_policy(),
            summary=f"{kind.value}: {calls} call(s) for {document.name}",
        )
        self._book.step_finished(document, kind, request.model, result, workflow.now())
        self._mark_dirty()
        return result

    @workflow.signal(name="step_progress")
    def step_progress(self, event: ProgressEvent) -> None:
        if self._book.progress(event, workflow.now()):
            self._mark_dirty()

    @workflow.update(name="pause")
    def pause(self) -> str:
        self._paused = True
        self._go(TaskState.PAUSED, "pause requested")
        return self._book.machine.state.value

    @pause.validator
    def _validate_pause(self) -> None:
        if not self._book.machine.can_go(TaskState.PAUSED):
            raise ApplicationError(f"a {self._book.machine.state} task cannot be paused")

    @workflow.update(name="resume")
    def resume(self) -> str:
        self._paused = False
        self._go(TaskState.RUNNING, "resume requested")
        self._book.follow_retries(workflow.now())
        return self._book.machine.state.value

    @resume.validator
    def _validate_resume(self) -> None:
        if self._book.machine.state is not TaskState.PAUSED:
            raise ApplicationError(f"a {self._book.machine.state} task is not paused")

    @workflow.query(name="status")
    def status(self) -> TaskStatus:
        return self._book.status(workflow.now())

    def _go(self, target: TaskState, reason: str) -> None:
        self._book.go(target, workflow.now(), reason)
        self._mark_dirty()
        self._publish()

    def _publish(self) -> None:
        """State, progress and cost as search attributes, so tasks can be filtered by them.

        Called on each transition and each checkpoint, not on every progress report: each
        call is an event in the history.
        """
        if not self._task.search_attributes or not workflow.patched("search-attributes"):
            return
        record = self._book.record(workflow.now())
        workflow.upsert_search_attributes(
            [
                TASK_STATE.value_set(self._book.machine.state.value),
                TASK_PROGRESS.value_set(float(record.progress)),
                TASK_COST.value_set(float(self._book.usage.cost())),
            ]
        )

    def _mark_dirty(self) -> None:
        self._dirty = True
        workflow.set_current_details(self._book.details(workflow.now()))

    async def _mirror_pump(self) -> None:
        """Writes the newest checkpoint whenever the cadence says so, one write at a time."""
        while True:
            await workflow.wait_condition(lambda: self._dirty)
            self._dirty = False
            record = self._book.record(workflow.now())
            now = workflow.now().timestamp()
            if not self._cadence.due(record.step, record.progress, now):
                continue
            if await self._write_checkpoint():
                self._cadence.mark(record.step, record.progress, now)
                self._publish()
            else:
                # Redis is down or slow: try again a little later, off the steps' path.
                await asyncio.sleep(MIRROR_RETRY_SECONDS)
                self._dirty = True

    async def _mirror_ticker(self) -> None:
        """Wakes the pump on the time rule; one timer per period, not one per wake-up."""
        while True:
            await asyncio.sleep(self._cadence.every_seconds)
            self._dirty = True

    async def _write_checkpoint(self, error: str | None = None) -> bool:
        """Mirror a checkpoint of the task as it is now; False when Redis could not take it."""
        write: MirrorWrite = self._book.checkpoint(workflow.now(), error)
        try:
            await workflow.execute_local_activity(
                "write_checkpoint",
                write,
                result_type=bool,
                start_to_close_timeout=MIRROR_TIMEOUT,
                retry_policy=MIRROR_RETRY,
            )
        except ActivityError as failure:
            workflow.logger.warning("checkpoint %s not mirrored: %s", write.checkpoint.id, failure)
            return False
        return True

    async def _end(
        self, pump: list[asyncio.Task[None]], state: TaskState, reason: str
    ) -> TaskResult:
        """Enter a terminal state, write the last checkpoint, and answer or raise accordingly."""
        for running in pump:
            running.cancel()
        self._go(state, reason)
        await self._write_checkpoint(error=None if state is TaskState.COMPLETED else reason)
        result = self._book.result()
        if state in (TaskState.COMPLETED, TaskState.CANCELLED):
            return result
        raise ApplicationError(
            f"task {state.value}: {reason}",
            result.model_dump(mode="json"),
            type=f"TASK_{state.value.upper()}",
            non_retryable=True,
        )
