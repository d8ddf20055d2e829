"""The task workflow: state machine, document fan-out, progress roll-up, checkpoint cadence.

Deterministic orchestration only: every read of a file, call to a model or write to Redis
happens in an activity. Activity names are stable strings; renaming one breaks running tasks.
What the task knows about itself is kept in its TaskBook (workflows/task_book.py).
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
from datetime import timedelta
from typing import Any

from temporalio import workflow
from temporalio.common import RetryPolicy
from temporalio.exceptions import ActivityError, ApplicationError
from temporalio.workflow import ActivityCancellationType

with workflow.unsafe.imports_passed_through():
    from activities.checkpoint_sink import offer_checkpoint
    from longtask.checkpoints import MirrorWrite
    from longtask.cost import TokenUsage
    from longtask.models import (
        BatchRequest,
        BatchResult,
        CallStats,
        DocumentRef,
        LoadRequest,
        ModelCheckResult,
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
    from longtask.policies import STOP_TASK_KINDS, StepKind, StepTimeouts
    from longtask.progress import CheckpointCadence
    from longtask.search_attributes import TASK_COST, TASK_PROGRESS, TASK_STATE
    from longtask.states import TaskState
    from longtask.task_ids import INVALID_TASK_ID, task_id_problem
    from workflows.task_book import TaskBook
    from workflows.task_tree import step_node

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
# The final checkpoint (an ended task, or a hand-over to a new run) is a regular activity, so it
# survives the worker; Redis gets about 20 s to come back before the task ends without it.
FINAL_CHECKPOINT_RETRY = RetryPolicy(
    initial_interval=timedelta(milliseconds=500),
    backoff_coefficient=2.0,
    maximum_interval=timedelta(seconds=5),
    maximum_attempts=6,
)
# A large task finishes many steps a second: its checkpoints are at least this far apart
# (every finished result is durable in Temporal at once; the mirror is for outside readers).
LARGE_TASK_CHECKPOINT_SECONDS = 1.0
# Batches a task keeps in flight at least when it has documents enough, so a small task's
# documents still run side by side.
MIN_BATCHES_IN_FLIGHT = 4
# Patch id: small tasks fill a batch before they spread over more (see _batches).
SMALL_TASKS_FILL_BATCHES = "small-tasks-fill-batches"
# Patch id: the window of documents in flight is refilled as documents end (see _roll).
DOCUMENTS_WINDOW = "documents-window"


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


def _check_task_id(task_id: str) -> None:
    """A task started past the starter (straight through a Temporal client) meets the same
    rule on task ids: it fails at once, before any write names its keys or report folder."""
    problem = task_id_problem(task_id)
    if problem is None and task_id != workflow.info().workflow_id:
        problem = (
            f"task id {task_id!r} differs from its workflow id {workflow.info().workflow_id!r}; "
            "start the task with the workflow id equal to its task id"
        )
    if problem is not None:
        raise ApplicationError(problem, type=INVALID_TASK_ID, non_retryable=True)


def cut_of(error: ActivityError) -> BatchResult | None:
    """What the steps of a batch that failed for good paid, from its failure's details; None
    when the failure does not say (a timeout, a release before batches said it)."""
    cause = error.cause
    if not isinstance(cause, ApplicationError) or len(cause.details) < 2:
        return None
    with contextlib.suppress(ValueError):
        return BatchResult.model_validate(cause.details[1])
    return None


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
        # Set when the budget is reached: no new batch starts, those in flight finish.
        self._budget_reason: str | None = None

    @workflow.run
    async def run(self, task: TaskInput) -> TaskResult:
        if workflow.patched("task-id-checked"):
            _check_task_id(task.task_id)
        # Checkpoints reach Redis through the worker's sink (activities/checkpoint_sink.py
        # says why); runs begun before it keep the local activity they recorded.
        self._sink = workflow.patched("checkpoint-sink")
        if self._book.machine.state is TaskState.PENDING:
            self._go(TaskState.RUNNING, "worker picked the task up")
        pump = [
            asyncio.create_task(
                self._mirror_pump() if self._sink else self._local_activity_mirror_pump()
            ),
            asyncio.create_task(self._mirror_ticker()),
        ]
        spent = (workflow.now() - self._book.started_at).total_seconds()
        try:
            await asyncio.wait_for(self._work(), timeout=max(task.deadline_seconds - spent, 0.001))
            if self._rolling_over:
                for running in pump:
                    running.cancel()
                await self._final_checkpoint()
                workflow.continue_as_new(self._book.carry_over())
        except TimeoutError:
            return await self._end(
                pump, TaskState.TIMED_OUT, f"deadline of {task.deadline_seconds:.0f} s passed"
            )
        except asyncio.CancelledError:
            await self._end(pump, TaskState.CANCELLED, "cancel requested")
            raise
        except ActivityError as error:
            # Finding the documents failed for good (none of them usable): the task ends
            # failed with the reasons, in its state and its mirror. Older runs failed bare.
            if not workflow.patched("load-failure-ends-task"):
                raise
            return await self._end(pump, TaskState.FAILED, failure_of(error)[0])
        if self._stop_reason is not None:
            return await self._end(pump, TaskState.FAILED, self._stop_reason)
        if self._budget_reason is not None and len(self._book.reports) < len(self._book.documents):
            return await self._end(pump, TaskState.BUDGET_EXCEEDED, self._budget_reason)
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
            # A worker lost while it reads a large folder is replaced within seconds.
            heartbeat_timeout=timedelta(seconds=self._task.heartbeat_timeout_seconds),
            retry_policy=self._task.policy.retry_policy(),
            summary=f"find documents in {', '.join(self._task.paths)}",
        )
        # A run carried over by continue-as-new checked its models already.
        if self._task.check_models and self._task.carried is None:
            await self._check_models()
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
        self._book.set_documents(documents, workflow.now())
        self._check_budget()
        self._mark_dirty()
        processing = asyncio.create_task(self._process_all(documents))
        stopping = asyncio.create_task(
            workflow.wait_condition(lambda: self._stop_reason is not None)
        )
        try:
            await workflow.wait([processing, stopping], return_when=asyncio.FIRST_COMPLETED)
        finally:
            # Stopped, or the task itself is cancelled: the steps in flight are cancelled
            # with the processing, and the task waits until they stopped calling the model.
            stopping.cancel()
            if not processing.done():
                processing.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await processing

    async def _check_models(self) -> None:
        """One tiny call per model before any document's first step; an unknown model or a
        refused key fails the task here (an ActivityError), its cost booked either way."""
        try:
            checked: ModelCheckResult = await workflow.execute_activity(
                "check_models",
                self._task.models,
                result_type=ModelCheckResult,
                # Each call is bounded at 60 s; a worker lost meanwhile costs no more than this.
                start_to_close_timeout=timedelta(minutes=2),
                retry_policy=self._task.policy.retry_policy(),
                summary="check each model of the route once",
            )
        except ActivityError as error:
            cause = error.cause
            if isinstance(cause, ApplicationError) and cause.details:
                with contextlib.suppress(ValueError):
                    self._book_check(ModelCheckResult.model_validate(cause.details[0]))
            raise
        self._book_check(checked)

    def _book_check(self, checked: ModelCheckResult) -> None:
        self._book.usage.merge(checked.usage)
        self._book.ledger.merge(checked.ledger)

    async def _process_all(self, documents: list[DocumentRef]) -> None:
        if not workflow.patched("document-batches"):
            # Runs begun before batches: one activity per step of each document.
            await asyncio.gather(*(self._process(document) for document in documents))
            return
        todo: list[DocumentRef] = []
        for document in documents:
            if document.index in self._book.reports:
                continue
            report = self._book.done_before(document, StepKind.REPORT)
            if report is not None:
                # Reported by an earlier run: nothing left to call.
                self._book.recall_finished(document, workflow.now())
                self._book.document_done(document, report[0])
                self._mark_dirty()
                continue
            todo.append(document)
        if workflow.patched(DOCUMENTS_WINDOW):
            await self._roll(todo)
            return
        batches = self._batches(todo)
        size = len(batches[0]) if batches else 1
        window = asyncio.Semaphore(max(1, self._task.document_concurrency // size))
        # On a cancel, a plain gather ends as soon as a batch still waiting for its turn is
        # cancelled, and the task ended before the running batches had answered with what they
        # finished. Gathering every outcome waits for all of them.
        wait_for_all = workflow.patched("cancel-waits-for-batches")
        ended = await asyncio.gather(
            *(self._batch(number, batch, window) for number, batch in enumerate(batches)),
            return_exceptions=wait_for_all,
        )
        for outcome in ended:
            if isinstance(outcome, BaseException):
                raise outcome

    async def _roll(self, documents: list[DocumentRef]) -> None:
        """Keep ``document_concurrency`` documents in flight, a new batch as documents end.

        A batch activity ends when its slowest document does; counted in batches, the window
        would stand idle by that tail. Counted in documents, a document whose report a batch
        has signalled frees its place at once, and the next batch takes the free places (at
        least a quarter of a batch, so that batches stay few).
        """
        size = len(self._batches(documents)[0]) if documents else 1
        least = max(1, size // 4)
        waiting = list(documents)
        running: list[asyncio.Task[None]] = []
        self._flying: set[int] = set()
        try:
            while waiting and not self._halted():
                await workflow.wait_condition(
                    functools.partial(self._room_for, min(least, len(waiting)))
                )
                if self._halted():
                    break
                take = min(self._free_places(), size, len(waiting))
                batch, waiting = waiting[:take], waiting[take:]
                running.append(asyncio.create_task(self._rolling_batch(len(running), batch)))
        except asyncio.CancelledError:
            # The task is cancelled: its running batches answer with what they finished.
            for task in running:
                task.cancel()
            await asyncio.gather(*running, return_exceptions=True)
            raise
        ended = await asyncio.gather(*running, return_exceptions=True)
        if waiting and self._halted() and not self._stopped():
            # A long history: the documents not started go to a fresh run.
            self._rolling_over = True
        for outcome in ended:
            if isinstance(outcome, BaseException):
                raise outcome

    async def _rolling_batch(self, number: int, documents: list[DocumentRef]) -> None:
        indexes = {document.index for document in documents}
        self._flying |= indexes
        try:
            await self._batch(number, documents, asyncio.Semaphore(1))
        finally:
            self._flying -= indexes

    def _room_for(self, documents: int) -> bool:
        return self._free_places() >= documents or self._halted()

    def _free_places(self) -> int:
        """Places in the window: documents in flight are those of running batches whose report
        no progress signal has shown done yet."""
        busy = sum(1 for index in self._flying if not self._reported(index))
        return self._task.document_concurrency - busy

    def _reported(self, index: int) -> bool:
        node = step_node(self._book.tree, self._book.documents[index], StepKind.REPORT)
        return node.done >= node.total

    def _stopped(self) -> bool:
        return self._budget_reason is not None or self._stop_reason is not None

    def _halted(self) -> bool:
        """No new batch starts: the task stops, its budget is spent, or its history is long."""
        return self._stopped() or self._rolling_over or self._history_is_long()

    def _batches(self, documents: list[DocumentRef]) -> list[list[DocumentRef]]:
        """Documents in batches as large as allowed, yet enough of them to run side by side."""
        task = self._task
        spread = -(-len(documents) // MIN_BATCHES_IN_FLIGHT)
        if workflow.patched(SMALL_TASKS_FILL_BATCHES):
            # A batch's documents already run side by side, under its own call limit; more
            # batches only take more of the workers' activity slots, which many small tasks
            # at once then wait for. A batch gets at least as many documents as its calls.
            spread = max(spread, task.call_concurrency)
        size = max(1, min(spread, task.batch_documents, task.document_concurrency))
        return [documents[i : i + size] for i in range(0, len(documents), size)]

    def _batch_timeouts(self, documents: list[DocumentRef]) -> StepTimeouts:
        """Room for every step of every document, one step kind after another."""
        task = self._task
        seconds = sum(
            StepTimeouts.for_step(
                task.policy,
                kind,
                sum(document.calls(kind) for document in documents),
                task.call_concurrency,
                task.heartbeat_timeout_seconds,
            ).start_to_close_seconds
            for kind in StepKind
        )
        return StepTimeouts(
            heartbeat_seconds=task.heartbeat_timeout_seconds, start_to_close_seconds=seconds
        )

    async def _batch(
        self, number: int, documents: list[DocumentRef], window: asyncio.Semaphore
    ) -> None:
        async with window:
            await workflow.wait_condition(lambda: not self._paused)
            if self._budget_reason is not None or self._stop_reason is not None:
                return
            # A long history hands the documents not started yet to a fresh run.
            if self._rolling_over or self._history_is_long():
                self._rolling_over = True
                return
            for document in documents:
                self._book.document_started(document.index)
            keys = [step_key(d.path, kind) for d in documents for kind in StepKind]
            earlier = self._book.resume
            request = BatchRequest(
                task_id=self._task.task_id,
                batch=number,
                documents=documents,
                models=self._task.models,
                policy=self._task.policy,
                call_concurrency=self._task.call_concurrency,
                done={k: earlier.results[k] for k in keys if k in earlier.results},
                partials={k: earlier.partials[k] for k in keys if k in earlier.partials},
            )
            timeouts = self._batch_timeouts(documents)
            calls = sum(document.calls(kind) for document in documents for kind in StepKind)
            first, last = documents[0].name, documents[-1].name
            summary = f"batch {number + 1}: {len(documents)} document(s) ({first} .. {last}), "
            retry = self._task.policy.retry_policy()
            if workflow.patched("batches-fail-by-call-attempts"):
                # Lost workers no longer use up a batch's attempts; its calls' own do.
                retry = self._task.policy.calls_retry_policy()
                summary += f"{calls} call(s) of at most {self._task.policy.max_attempts} "
                summary += "provider attempts each; Temporal's attempt also counts hand-overs"
            else:
                summary += f"{calls} call(s)"
            try:
                result: BatchResult = await workflow.execute_activity(
                    "process_documents",
                    request,
                    result_type=BatchResult,
                    start_to_close_timeout=timedelta(seconds=timeouts.start_to_close_seconds),
                    heartbeat_timeout=timedelta(seconds=timeouts.heartbeat_seconds),
                    retry_policy=retry,
                    # A cancelled task ends only once its batches stopped calling the model.
                    cancellation_type=ActivityCancellationType.WAIT_CANCELLATION_COMPLETED,
                    summary=summary,
                )
            except ActivityError as error:
                message, _kind, _stats = failure_of(error)
                now = workflow.now()
                cut = cut_of(error)
                if cut is not None:
                    # The tokens its steps paid count, failed or not.
                    self._book.batch_ended(documents, cut, now)
                for document in documents:
                    if document.index not in self._book.reports:
                        self._book.document_failed(document, message, None, None, now)
                cause = error.cause
                if isinstance(cause, ApplicationError) and (cause.type or "") in STOP_TASK_KINDS:
                    self._stop_reason = f"stopped at the first {cause.type}: {message}"
                self._mark_dirty()
                return
            # A batch cut by the task's cancel answers too, with what it had finished.
            self._book.batch_ended(documents, result, workflow.now())
            self._check_budget()
            self._mark_dirty()

    def _check_budget(self) -> None:
        if self._budget_reason is None:
            self._budget_reason = self._book.budget_reached()

    def _history_is_long(self) -> bool:
        info = workflow.info()
        return (
            info.get_current_history_length() >= self._task.max_history_events
            or info.is_continue_as_new_suggested()
        )

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

    @workflow.signal(name="step_progress")
    def step_progress(self, event: ProgressEvent) -> None:
        """Progress of one step, as activities of older releases send it."""
        self.steps_progress([event])

    @workflow.signal(name="steps_progress")
    def steps_progress(self, events: list[ProgressEvent]) -> None:
        now = workflow.now()
        booked = [self._book.progress(event, now) for event in events]
        if any(booked):
            self._check_budget()
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
                TASK_COST.value_set(float(self._book.cost())),
            ]
        )

    def _mark_dirty(self) -> None:
        self._dirty = True
        workflow.set_current_details(self._book.details(workflow.now()))

    async def _mirror_pump(self) -> None:
        """Hands the newest checkpoint to the worker's sink whenever the cadence says so.

        Every wake-up comes from the history (a result, a signal, a timer), never from a mirror
        write, so the commands it issues (search attributes, the pause between checkpoints of
        a large task) fall in the same place on every replay.
        """
        while True:
            await workflow.wait_condition(lambda: self._dirty)
            self._dirty = False
            now = workflow.now()
            record = self._book.record(now)
            if not self._cadence.due(record.step, record.progress, now.timestamp()):
                continue
            self._offer_checkpoint()
            self._cadence.mark(record.step, record.progress, now.timestamp())
            self._publish()
            if not self._book.inline:
                await asyncio.sleep(LARGE_TASK_CHECKPOINT_SECONDS)

    def _offer_checkpoint(self) -> None:
        """Hand the checkpoint of the task as it is now to the worker's sink, unless replaying."""
        now = workflow.now()
        if workflow.unsafe.is_replaying():
            # Mirrored when it was first taken; only its id is accounted for.
            self._book.skip_checkpoint(now)
            return
        offer_checkpoint(workflow.info().task_queue, self._book.checkpoint(now))

    async def _final_checkpoint(self, error: str | None = None) -> None:
        """The task's last checkpoint: through the sink at once, and durably by an activity."""
        if not self._sink:
            await self._write_checkpoint(error)
            return
        write = self._book.checkpoint(workflow.now(), error).model_copy(update={"final": True})
        if not workflow.unsafe.is_replaying():
            offer_checkpoint(workflow.info().task_queue, write)
        try:
            await workflow.execute_activity(
                "write_checkpoint",
                write,
                result_type=bool,
                start_to_close_timeout=MIRROR_TIMEOUT,
                retry_policy=FINAL_CHECKPOINT_RETRY,
                summary=f"mirror checkpoint {write.checkpoint.id}",
            )
        except (ActivityError, ApplicationError) as failure:
            # The task's outcome stands; the sink keeps trying while this worker runs.
            workflow.logger.warning("checkpoint %s not mirrored: %s", write.checkpoint.id, failure)

    async def _mirror_ticker(self) -> None:
        """Wakes the pump on the time rule; one timer per period, not one per wake-up."""
        while True:
            await asyncio.sleep(self._cadence.every_seconds)
            self._dirty = True

    async def _local_activity_mirror_pump(self) -> None:
        """The mirror of runs begun before the sink: a local activity per checkpoint."""
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
                "write_checkpoint",
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

    async def _end(
        self, pump: list[asyncio.Task[None]], state: TaskState, reason: str
    ) -> TaskResult:
        """Enter a terminal state, write the last checkpoint, and answer or raise accordingly."""
        for running in pump:
            running.cancel()
        self._go(state, reason)
        await self._final_checkpoint(error=None if state is TaskState.COMPLETED else reason)
        result = self._book.result(reason)
        # A spent budget is a clean stop: the task answers, and a new run may continue it.
        if state in (TaskState.COMPLETED, TaskState.CANCELLED, TaskState.BUDGET_EXCEEDED):
            return result
        raise ApplicationError(
            f"task {state.value}: {reason}",
            result.model_dump(mode="json"),
            type=f"TASK_{state.value.upper()}",
            non_retryable=True,
        )
