"""The document task as runs begun before batches (or before the checkpoint sink) go on:
one activity per step of each document, and checkpoints through a local activity.

New runs never take these paths (``document-batches``, ``checkpoint-sink`` patches); they stay
so that histories recorded before them replay, and are kept here, apart from the engine.
"""

from __future__ import annotations

import asyncio
from datetime import timedelta
from typing import TYPE_CHECKING, Any

from temporalio import workflow
from temporalio.common import RetryPolicy
from temporalio.exceptions import ActivityError, ApplicationError

with workflow.unsafe.imports_passed_through():
    from longtask.checkpoints import MirrorWrite
    from longtask.cost import TokenUsage
    from longtask.engine.names import (
        ACTIVITY_OF_STEP,
        STEP_PROGRESS_SIGNAL,
        STOP_TASK_KINDS,
        WRITE_CHECKPOINT,
    )
    from longtask.engine.task_engine import LARGE_TASK_CHECKPOINT_SECONDS
    from longtask.models import DocumentRef, ProgressEvent, StepRequest, StepResult, TaskInput
    from longtask.policies import StepKind, StepTimeouts
    from longtask.progress import CheckpointCadence
    from workflows.activity_failures import failure_of
    from workflows.task_book import TaskBook

# Checkpoints by local activity are advisory: a few quick tries, then the task goes on.
MIRROR_RETRY = RetryPolicy(initial_interval=timedelta(milliseconds=200), maximum_attempts=3)
MIRROR_TIMEOUT = timedelta(seconds=5)
MIRROR_RETRY_SECONDS = 2.0


class LegacyDocumentTask:
    """The paths of runs begun before batches and before the checkpoint sink; mixed into the
    document task's workflow class, whose state it shares."""

    _task: TaskInput
    _book: TaskBook
    _paused: bool
    _dirty: bool
    _cadence: CheckpointCadence | None
    _pumps: tuple[asyncio.Task[None], ...]
    _slots: asyncio.Semaphore
    _rolling_over: bool
    _stop_reason: str | None

    if TYPE_CHECKING:  # the document task's own, and the engine's

        def _mark_dirty(self) -> None: ...

        def _publish(self) -> None: ...

        def _history_is_long(self) -> bool: ...

        async def _checkpoint_ticker(self) -> None: ...

        def steps_progress(self, events: list[ProgressEvent]) -> None: ...

    async def _process(self, document: DocumentRef) -> None:
        if document.index in self._book.reports:
            return  # reported by an earlier run, booked by set_documents
        async with self._slots:
            # A long history hands the documents not started yet to a fresh run.
            if self._rolling_over or self._history_is_long():
                self._rolling_over = True
                return
            self._book.document_started(document.index)
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
                if isinstance(cause, ApplicationError) and (cause.type or "") in STOP_TASK_KINDS:
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
        calls = document.calls(kind)
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

    @workflow.signal(name=STEP_PROGRESS_SIGNAL)
    def step_progress(self, event: ProgressEvent) -> None:
        """Progress of one step, as activities of older releases send it."""
        self.steps_progress([event])

    def _start_local_activity_checkpoints(self) -> None:
        """The pump of runs begun before the sink (a local activity per checkpoint)."""
        self._cadence = CheckpointCadence()
        self._pumps = (
            asyncio.create_task(self._local_activity_mirror_pump()),
            asyncio.create_task(self._checkpoint_ticker()),
        )

    async def _local_activity_mirror_pump(self) -> None:
        """The mirror of runs begun before the sink: a local activity per checkpoint."""
        cadence = self._cadence or CheckpointCadence()
        while True:
            await workflow.wait_condition(lambda: self._dirty)
            self._dirty = False
            record = self._book.record(workflow.now())
            now = workflow.now().timestamp()
            if not cadence.due(record.step, record.progress, now):
                continue
            if await self._write_checkpoint():
                cadence.mark(record.step, record.progress, now)
                self._publish()
                if not self._book.inline:
                    await asyncio.sleep(LARGE_TASK_CHECKPOINT_SECONDS)
            else:
                # Redis is down or slow: try again a little later, off the steps' path.
                await asyncio.sleep(MIRROR_RETRY_SECONDS)
                self._dirty = True

    async def _write_checkpoint(self, error: str | None = None) -> bool:
        """Mirror a checkpoint through a local activity (runs begun before the sink only)."""
        write: MirrorWrite = self._book.checkpoint(workflow.now(), error)
        try:
            await workflow.execute_local_activity(
                WRITE_CHECKPOINT,
                write,
                result_type=bool,
                start_to_close_timeout=MIRROR_TIMEOUT,
                retry_policy=MIRROR_RETRY,
            )
        except (ActivityError, ApplicationError) as failure:
            # A local activity that failed for good raises ApplicationError, not ActivityError.
            workflow.logger.warning("checkpoint %s not mirrored: %s", write.checkpoint.id, failure)
            return False
        return True
