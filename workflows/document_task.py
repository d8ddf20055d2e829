"""The task workflow: state machine, document fan-out, progress roll-up, checkpoint cadence.

Deterministic orchestration only: every read of a file, call to a model or write to Redis
happens in an activity. Activity names are stable strings; renaming one breaks running tasks.
"""

from __future__ import annotations

import asyncio
import contextlib
from datetime import datetime, timedelta
from typing import Any

from temporalio import workflow
from temporalio.common import RetryPolicy
from temporalio.exceptions import ActivityError, ApplicationError

with workflow.unsafe.imports_passed_through():
    from longtask.checkpoints import (
        Checkpoint,
        CheckpointState,
        MirrorWrite,
        ProgressSnapshot,
        checkpoint_id_for,
        iso_utc,
        next_checkpoint_ms,
    )
    from longtask.cost import TokenUsage
    from longtask.models import (
        CallStats,
        CarriedState,
        DocumentRef,
        DocumentReport,
        LoadRequest,
        ProgressEvent,
        ResumeRequest,
        ResumeState,
        StepRequest,
        StepResult,
        TaskInput,
        TaskResult,
        TaskStatus,
        step_key,
    )
    from longtask.policies import StepKind, StepTimeouts
    from longtask.progress import CheckpointCadence, ProgressNode, ProgressRecord, build_record
    from longtask.states import TaskState, TaskStateMachine
    from workflows.task_tree import (
        apply_event,
        complete_step,
        document_node,
        step_calls,
    )

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


@workflow.defn(name="DocumentTask")
class DocumentTaskWorkflow:
    @workflow.init
    def __init__(self, task: TaskInput) -> None:
        self._task = task
        self._machine = TaskStateMachine()
        self._tree = ProgressNode(name=task.task_id)
        self._documents: list[DocumentRef] = []
        self._reports: dict[int, DocumentReport] = {}
        self._usage = TokenUsage()
        self._stats: dict[str, CallStats] = {}
        self._step_results: list[dict[str, Any]] = []
        self._messages: list[dict[str, Any]] = []
        self._finished_steps: set[str] = set()
        self._retrying: set[str] = set()
        self._paused = False
        self._dirty = False
        self._cadence = CheckpointCadence()
        self._last_checkpoint_ms = 0
        self._last_model = ""
        self._slots = asyncio.Semaphore(task.document_concurrency)
        self._resume = ResumeState()
        self._rolling_over = False
        self._runs = 1
        if task.carried is not None:
            self._take_over(task.carried)

    def _take_over(self, carried: CarriedState) -> None:
        """Pick up where the previous run of this task stopped (continue-as-new)."""
        self._machine = carried.machine
        self._paused = carried.machine.state is TaskState.PAUSED
        self._reports = dict(carried.reports)
        self._stats = dict(carried.stats)
        self._messages = list(carried.messages)
        self._last_checkpoint_ms = carried.last_checkpoint_ms
        self._resume = carried.resume
        self._usage.merge(carried.resume.usage)
        self._runs = carried.runs + 1

    @workflow.run
    async def run(self, task: TaskInput) -> TaskResult:
        if self._machine.state is TaskState.PENDING:
            self._go(TaskState.RUNNING, "worker picked the task up")
        pump = [
            asyncio.create_task(self._mirror_pump()),
            asyncio.create_task(self._mirror_ticker()),
        ]
        remaining = task.deadline_seconds - (workflow.now() - self._started_at).total_seconds()
        try:
            await asyncio.wait_for(self._work(), timeout=max(remaining, 0.001))
            if self._rolling_over:
                for running in pump:
                    running.cancel()
                await self._write_checkpoint(self._record())
                workflow.continue_as_new(self._carry_over())
        except TimeoutError:
            return await self._end(
                pump, TaskState.TIMED_OUT, f"deadline of {task.deadline_seconds:.0f} s passed"
            )
        except asyncio.CancelledError:
            await self._end(pump, TaskState.CANCELLED, "cancel requested")
            raise
        failed = [r for r in self._reports.values() if r.state is TaskState.FAILED]
        if failed:
            reason = f"{len(failed)} of {len(self._reports)} documents failed"
            return await self._end(pump, TaskState.FAILED, reason)
        return await self._end(pump, TaskState.COMPLETED, "every document reported")

    async def _work(self) -> None:
        self._documents = await workflow.execute_activity(
            "load_documents",
            LoadRequest(paths=self._task.paths),
            result_type=list[DocumentRef],
            start_to_close_timeout=timedelta(minutes=5),
            retry_policy=self._task.policy.retry_policy(),
            summary=f"find documents in {', '.join(self._task.paths)}",
        )
        if self._task.resume_from is not None:
            self._resume = await workflow.execute_activity(
                "load_resume_state",
                ResumeRequest(
                    task_id=self._task.task_id, checkpoint_id=self._task.resume_from.checkpoint_id
                ),
                result_type=ResumeState,
                start_to_close_timeout=timedelta(minutes=1),
                retry_policy=self._task.policy.retry_policy(),
                summary=f"resume from checkpoint {self._task.resume_from.checkpoint_id}",
            )
            # The earlier runs' tokens were paid for: the cost so far carries on from them.
            self._usage.merge(self._resume.usage)
        self._tree.children = [document_node(document) for document in self._documents]
        self._mark_dirty()
        await asyncio.gather(*(self._process(document) for document in self._documents))

    @property
    def _started_at(self) -> datetime:
        carried = self._task.carried
        return carried.started_at if carried else workflow.info().start_time

    def _history_is_long(self) -> bool:
        info = workflow.info()
        return (
            info.get_current_history_length() >= self._task.max_history_events
            or info.is_continue_as_new_suggested()
        )

    def _carry_over(self) -> TaskInput:
        """This task's input for its next run: everything done so far travels with it."""
        finished = {step_key(r["path"], r["step"]): list(r["outputs"]) for r in self._step_results}
        carried = CarriedState(
            resume=ResumeState(results=finished, usage=self._usage),
            machine=self._machine,
            reports=self._reports,
            stats=self._stats,
            messages=self._messages,
            started_at=self._started_at,
            last_checkpoint_ms=self._last_checkpoint_ms,
            runs=self._runs,
        )
        return self._task.model_copy(update={"carried": carried, "resume_from": None})

    def _recall_finished(self, document: DocumentRef) -> None:
        """Count the steps an earlier run finished for ``document`` as done here too."""
        for kind in StepKind:
            outputs = self._resume.results.get(step_key(document.path, kind))
            if outputs is not None:
                done = StepResult(kind=kind, document=document.index, outputs=outputs,
                                  usage=TokenUsage())  # fmt: skip
                self._step_finished(document, kind, "", done, ran=False)

    async def _process(self, document: DocumentRef) -> None:
        if document.index in self._reports:
            self._recall_finished(document)  # reported by an earlier run of this task
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
                self._book_failed_step(document, error)
                cause = error.cause
                message = cause.message if isinstance(cause, ApplicationError) else str(error)
                self._reports[document.index] = DocumentReport(
                    name=document.name, state=TaskState.FAILED, error=message
                )
                # Its steps are over: none of them is retrying any more.
                self._retrying = {
                    k for k in self._retrying if not k.startswith(f"{document.index}:")
                }
                self._follow_retries()
                self._mark_dirty()
                return
        self._reports[document.index] = DocumentReport(
            name=document.name, state=TaskState.COMPLETED, report=report.outputs[0]
        )

    async def _step(self, document: DocumentRef, kind: StepKind, **context: Any) -> StepResult:
        done_before = self._resume.results.get(step_key(document.path, kind))
        if done_before is not None:
            # Finished by an earlier run of this task: its results stand, no call is made.
            skipped = StepResult(kind=kind, document=document.index, outputs=done_before,
                                 usage=TokenUsage())  # fmt: skip
            self._step_finished(document, kind, "", skipped, ran=False)
            return skipped
        await workflow.wait_condition(lambda: not self._paused)
        calls = step_calls(document, kind)
        timeouts = StepTimeouts.for_step(
            self._task.policy,
            kind,
            calls,
            self._task.call_concurrency,
            self._task.heartbeat_timeout_seconds,
        )
        request = StepRequest(
            task_id=self._task.task_id,
            document=document,
            model=self._task.models.for_step(kind),
            policy=self._task.policy,
            call_concurrency=self._task.call_concurrency,
            partial_response=self._resume.partials.get(step_key(document.path, kind), ""),
            **context,
        )
        result: StepResult = await workflow.execute_activity(
            ACTIVITY_OF_STEP[kind],
            request,
            result_type=StepResult,
            start_to_close_timeout=timedelta(seconds=timeouts.start_to_close_seconds),
            heartbeat_timeout=timedelta(seconds=timeouts.heartbeat_seconds),
            retry_policy=self._task.policy.retry_policy(),
            summary=f"{kind.value}: {calls} call(s) for {document.name}",
        )
        self._step_finished(document, kind, request.model, result)
        return result

    def _book_failed_step(self, document: DocumentRef, error: ActivityError) -> None:
        """Keep the attempts a step made before it failed for good."""
        kind = KIND_OF_ACTIVITY.get(error.activity_type or "")
        cause = error.cause
        if kind is None or not isinstance(cause, ApplicationError) or not cause.details:
            return
        with contextlib.suppress(ValueError):
            stats = CallStats.model_validate(cause.details[0])
            self._stats[f"{document.index}:{kind.value}"] = stats

    def _calls_by_kind(self) -> dict[StepKind, CallStats]:
        totals: dict[StepKind, CallStats] = {}
        for key, stats in self._stats.items():
            kind = StepKind(key.split(":", 1)[1])
            totals.setdefault(kind, CallStats()).merge(stats)
        return totals

    def _step_finished(
        self,
        document: DocumentRef,
        kind: StepKind,
        model: str,
        result: StepResult,
        ran: bool = True,
    ) -> None:
        key = f"{document.index}:{kind.value}"
        self._finished_steps.add(key)
        self._retrying.discard(key)
        if ran:
            self._stats[key] = result.stats
        complete_step(self._tree, document, kind)
        self._usage.merge(result.usage)
        self._last_model = model or self._last_model
        self._step_results.append(
            {
                "document": document.name,
                "path": document.path,
                "step": kind.value,
                "outputs": result.outputs,
            }
        )
        if ran and kind in (StepKind.REASON, StepKind.REPORT):
            self._messages.append(
                {
                    "role": "assistant",
                    "document": document.name,
                    "step": kind.value,
                    "content": result.outputs[0],
                }
            )
        self._follow_retries()
        self._mark_dirty()

    @workflow.signal(name="step_progress")
    def step_progress(self, event: ProgressEvent) -> None:
        key = f"{event.document}:{event.kind.value}"
        if key in self._finished_steps or not 0 <= event.document < len(self._documents):
            return
        apply_event(self._tree, self._documents[event.document], event)
        self._stats[key] = event.stats
        if event.retrying:
            self._retrying.add(key)
        else:
            self._retrying.discard(key)
        self._follow_retries()
        self._mark_dirty()

    @workflow.update(name="pause")
    def pause(self) -> str:
        self._paused = True
        self._go(TaskState.PAUSED, "pause requested")
        return self._machine.state.value

    @pause.validator
    def _validate_pause(self) -> None:
        if not self._machine.can_go(TaskState.PAUSED):
            raise ApplicationError(f"a {self._machine.state} task cannot be paused")

    @workflow.update(name="resume")
    def resume(self) -> str:
        self._paused = False
        self._go(TaskState.RUNNING, "resume requested")
        self._follow_retries()
        return self._machine.state.value

    @resume.validator
    def _validate_resume(self) -> None:
        if self._machine.state is not TaskState.PAUSED:
            raise ApplicationError(f"a {self._machine.state} task is not paused")

    @workflow.query(name="status")
    def status(self) -> TaskStatus:
        return TaskStatus(
            record=self._record(),
            state=self._machine.state,
            transitions=self._machine.log,
            tree=self._tree.summary(depth=2),
            usage=self._usage,
            cost_so_far=self._usage.cost(),
            retrying_steps=sorted(self._retrying),
            calls=self._calls_by_kind(),
        )

    def _follow_retries(self) -> None:
        """Running and retrying differ only by whether some step is on a second attempt."""
        state = self._machine.state
        if state is TaskState.RUNNING and self._retrying:
            self._go(TaskState.RETRYING, f"retrying {', '.join(sorted(self._retrying))}")
        elif state is TaskState.RETRYING and not self._retrying:
            self._go(TaskState.RUNNING, "retried steps recovered")

    def _go(self, target: TaskState, reason: str) -> None:
        self._machine.go(target, workflow.now(), reason)
        self._mark_dirty()

    def _mark_dirty(self) -> None:
        self._dirty = True
        record = self._record()
        workflow.set_current_details(
            f"**{self._machine.state.value}** {record.progress:.2f} % "
            f"({record.step}/{record.total} steps), "
            f"{len(self._reports)}/{len(self._documents)} documents, "
            f"cost ${self._usage.cost():.6f}"
        )

    def _record(self) -> ProgressRecord:
        elapsed = (workflow.now() - self._started_at).total_seconds()
        record = build_record(
            self._task.task_id,
            self._tree.steps_done(),
            self._tree.steps_total(),
            elapsed,
            {
                "state": self._machine.state.value,
                "documents": len(self._documents),
                "documents_done": len(self._reports),
                "cost_so_far": self._usage.cost(),
                "runs": self._runs,
            },
        )
        if self._machine.is_terminal and self._machine.state is not TaskState.COMPLETED:
            record.eta_seconds = None  # an ended task will not finish: no ETA to give
        return record

    async def _mirror_pump(self) -> None:
        """Writes the newest checkpoint whenever the cadence says so, one write at a time."""
        while True:
            await workflow.wait_condition(lambda: self._dirty)
            record = self._record()
            now = workflow.now().timestamp()
            self._dirty = False
            if self._cadence.due(record.step, record.progress, now):
                if await self._write_checkpoint(record):
                    self._cadence.mark(record.step, record.progress, now)
                else:
                    # Redis is down or slow: try again a little later, off the steps' path.
                    await asyncio.sleep(MIRROR_RETRY_SECONDS)
                    self._dirty = True

    async def _mirror_ticker(self) -> None:
        """Wakes the pump on the time rule; one timer per period, not one per wake-up."""
        while True:
            await asyncio.sleep(self._cadence.every_seconds)
            self._dirty = True

    async def _write_checkpoint(self, record: ProgressRecord, error: str | None = None) -> bool:
        """Mirror a checkpoint of the task as it is now; False when Redis could not take it."""
        now = workflow.now()
        self._last_checkpoint_ms = next_checkpoint_ms(now, self._last_checkpoint_ms)
        checkpoint = Checkpoint(
            id=checkpoint_id_for(self._task.task_id, self._last_checkpoint_ms),
            task_id=self._task.task_id,
            timestamp=iso_utc(now),
            progress=record.progress,
            state=CheckpointState(
                messages=self._messages,
                variables={
                    "state": self._machine.state.value,
                    "paths": self._task.paths,
                    "documents": [d.name for d in self._documents],
                    "reports": {r.name: r.state.value for r in self._reports.values()},
                },
                current_step=record.step,
                step_results=self._step_results,
            ),
            metadata={
                "model": self._last_model,
                "cost_so_far": self._usage.cost(),
                "tokens": self._usage.total_tokens,
                "usage": self._usage.model_dump(),
            },
            error=error,
        )
        write = MirrorWrite(
            checkpoint=checkpoint,
            snapshot=ProgressSnapshot(timestamp=now.timestamp(), status=record),
        )
        try:
            await workflow.execute_local_activity(
                "write_checkpoint",
                write,
                result_type=bool,
                start_to_close_timeout=MIRROR_TIMEOUT,
                retry_policy=MIRROR_RETRY,
            )
        except ActivityError as failure:
            workflow.logger.warning("checkpoint %s not mirrored: %s", checkpoint.id, failure)
            return False
        return True

    async def _end(
        self, pump: list[asyncio.Task[None]], state: TaskState, reason: str
    ) -> TaskResult:
        """Enter a terminal state, write the last checkpoint, and answer or raise accordingly."""
        for task in pump:
            task.cancel()
        self._go(state, reason)
        error = None if state is TaskState.COMPLETED else reason
        await self._write_checkpoint(self._record(), error=error)
        result = TaskResult(
            task_id=self._task.task_id,
            state=state,
            documents=[self._reports[i] for i in sorted(self._reports)],
            usage=self._usage,
            cost_so_far=self._usage.cost(),
            calls=self._calls_by_kind(),
        )
        if state in (TaskState.COMPLETED, TaskState.CANCELLED):
            return result
        raise ApplicationError(
            f"task {state.value}: {reason}",
            result.model_dump(mode="json"),
            type=f"TASK_{state.value.upper()}",
            non_retryable=True,
        )
