"""The document task, a built-in task on the engine: documents found, models checked, then
the documents fanned out in batches, each batch one activity that runs every step of its
documents and reports their progress.

Deterministic orchestration only: every read of a file, call to a model or write to Redis
happens in an activity. The engine (longtask/engine/task_engine.py) keeps the state machine's
handlers, the checkpoints and the end of the task; what the task knows about itself is kept in
its TaskBook (workflows/task_book.py); runs begun before batches go on in
workflows/document_legacy.py.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
from dataclasses import dataclass, field
from datetime import timedelta

from temporalio import workflow
from temporalio.exceptions import ActivityError, ApplicationError
from temporalio.workflow import ActivityCancellationType

with workflow.unsafe.imports_passed_through():
    from longtask.engine.names import (
        ASK_DOCUMENTS_SIGNAL,
        CHECK_MODELS,
        DOCUMENT_TASK,
        INVALID_TASK_ID,
        LOAD_DOCUMENTS,
        LOAD_RESUME_STATE,
        PATCH_BATCHES_ASK_BY_SIGNAL,
        PATCH_BATCHES_FAIL_BY_CALL_ATTEMPTS,
        PATCH_BATCHES_TAKE_DOCUMENTS,
        PATCH_CANCEL_WAITS_FOR_BATCHES,
        PATCH_CHECKPOINT_SINK,
        PATCH_DOCUMENT_BATCHES,
        PATCH_DOCUMENTS_WINDOW,
        PATCH_LOAD_FAILURE_ENDS_TASK,
        PATCH_SEARCH_ATTRIBUTES,
        PATCH_SMALL_TASKS_FILL_BATCHES,
        PATCH_TASK_ID_CHECKED,
        PROCESS_DOCUMENTS,
        STATUS_QUERY,
        STEPS_PROGRESS_SIGNAL,
        STOP_TASK_KINDS,
        TAKE_DOCUMENTS_UPDATE,
        TAKEN_DOCUMENTS_QUERY,
    )
    from longtask.engine.task_engine import TaskEngine
    from longtask.models import (
        BatchRequest,
        BatchResult,
        DocumentOutcome,
        DocumentRef,
        LoadRequest,
        ModelCheckResult,
        ProgressEvent,
        ResumeRequest,
        ResumeState,
        TakeDocuments,
        TakenDocuments,
        TaskInput,
        TaskResult,
        TaskStatus,
        step_key,
    )
    from longtask.policies import StepKind, StepTimeouts
    from longtask.states import TaskState
    from longtask.task_ids import task_id_problem
    from workflows.activity_failures import cut_of, failure_of
    from workflows.document_legacy import LegacyDocumentTask
    from workflows.task_book import TaskBook
    from workflows.task_tree import step_node

# Batches a task keeps in flight at least when it has documents enough, so a small task's
# documents still run side by side.
MIN_BATCHES_IN_FLIGHT = 4


@dataclass
class _BatchOut:
    """A running batch of a task whose batches take documents: its places, every document it
    was handed, and those it took after it started (a new attempt asks for those again)."""

    places: int
    most: int
    documents: list[DocumentRef] = field(default_factory=list)
    taken: list[DocumentRef] = field(default_factory=list)


async def _cancelled(running: list[asyncio.Task[None]]) -> None:
    """The task is cancelled: its running batches answer with what they finished."""
    for task in running:
        task.cancel()
    await asyncio.gather(*running, return_exceptions=True)


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


@workflow.defn(name=DOCUMENT_TASK)
class DocumentTaskWorkflow(TaskEngine, LegacyDocumentTask):
    _book: TaskBook

    @workflow.init
    def __init__(self, task: TaskInput) -> None:
        self._task = task
        self._book = TaskBook(task, workflow.info().start_time)
        self._paused = self._book.machine.state is TaskState.PAUSED
        self._slots = asyncio.Semaphore(task.document_concurrency)
        self._rolling_over = False
        # Documents not handed to a batch yet, and the running batches that take more.
        self._waiting: list[DocumentRef] = []
        self._out: dict[int, _BatchOut] = {}
        # Batches ask by signal (PATCH_BATCHES_ASK_BY_SIGNAL); each batch's last answer, by
        # the id of its ask, until the batch reads it with a query and asks again.
        self._asks_by_signal = False
        self._answers: dict[int, tuple[str, TakenDocuments]] = {}
        # Set when a failure dooms every document alike (a refused API key): stop at once.
        self._stop_reason: str | None = None
        # Set when the budget is reached: no new batch starts, those in flight finish.
        self._budget_reason: str | None = None

    @workflow.run
    async def run(self, task: TaskInput) -> TaskResult:
        if workflow.patched(PATCH_TASK_ID_CHECKED):
            _check_task_id(task.task_id)
        # Checkpoints reach Redis through the worker's sink (activities/checkpoint_sink.py
        # says why); runs begun before it keep the local activity they recorded.
        self._sink = workflow.patched(PATCH_CHECKPOINT_SINK)
        if self._book.machine.state is TaskState.PENDING:
            self._go(TaskState.RUNNING, "worker picked the task up")
        if self._sink:
            self._start_checkpoints()
        else:
            self._start_local_activity_checkpoints()
        spent = (workflow.now() - self._book.started_at).total_seconds()
        try:
            await asyncio.wait_for(self._work(), timeout=max(task.deadline_seconds - spent, 0.001))
            if self._rolling_over:
                self._stop_checkpoints()
                await self._final_checkpoint()
                workflow.continue_as_new(self._book.carry_over())
        except TimeoutError:
            return await self._end(
                TaskState.TIMED_OUT, f"deadline of {task.deadline_seconds:.0f} s passed"
            )
        except asyncio.CancelledError:
            await self._end(TaskState.CANCELLED, "cancel requested")
            raise
        except ActivityError as error:
            # Finding the documents failed for good (none of them usable): the task ends
            # failed with the reasons, in its state and its mirror. Older runs failed bare.
            if not workflow.patched(PATCH_LOAD_FAILURE_ENDS_TASK):
                raise
            return await self._end(TaskState.FAILED, failure_of(error)[0])
        if self._stop_reason is not None:
            return await self._end(TaskState.FAILED, self._stop_reason)
        if self._budget_reason is not None and len(self._book.reports) < len(self._book.documents):
            return await self._end(TaskState.BUDGET_EXCEEDED, self._budget_reason)
        failed = [r for r in self._book.reports.values() if r.state is TaskState.FAILED]
        if failed:
            reason = f"{len(failed)} of {len(self._book.reports)} documents failed"
            return await self._end(TaskState.FAILED, reason)
        return await self._end(TaskState.COMPLETED, "every document reported")

    async def _work(self) -> None:
        documents = await workflow.execute_activity(
            LOAD_DOCUMENTS,
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
                LOAD_RESUME_STATE,
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
                CHECK_MODELS,
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
        if not workflow.patched(PATCH_DOCUMENT_BATCHES):
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
        if workflow.patched(PATCH_DOCUMENTS_WINDOW):
            if workflow.patched(PATCH_BATCHES_TAKE_DOCUMENTS):
                await self._roll_taking(todo)
            else:
                await self._roll(todo)
            return
        batches = self._batches(todo)
        size = len(batches[0]) if batches else 1
        window = asyncio.Semaphore(max(1, self._task.document_concurrency // size))
        # On a cancel, a plain gather ends as soon as a batch still waiting for its turn is
        # cancelled, and the task ended before the running batches had answered with what they
        # finished. Gathering every outcome waits for all of them.
        wait_for_all = workflow.patched(PATCH_CANCEL_WAITS_FOR_BATCHES)
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
            await _cancelled(running)
            raise
        await self._all_ended(running, bool(waiting))

    async def _roll_taking(self, documents: list[DocumentRef]) -> None:
        """Keep ``document_concurrency`` documents in flight; each batch takes its next
        document from the task the moment one of its places frees (``take_documents``).

        A place of a batch that waited for the task to start a new batch stood idle for the
        signal, the workflow task and the new activity's start: about a fifth of a document's
        time at 200 ms answers. Taken by the batch itself it idles for one update. New
        batches start only on places no batch holds: at the start, after a batch ended.
        """
        size = len(self._batches(documents)[0]) if documents else 1
        least = max(1, size // 4)
        self._asks_by_signal = workflow.patched(PATCH_BATCHES_ASK_BY_SIGNAL)
        self._waiting = list(documents)
        running: list[asyncio.Task[None]] = []

        def next_move() -> bool:
            if self._halted() or (not self._waiting and not self._out):
                return True
            return bool(self._waiting) and self._free_in_window() >= min(least, len(self._waiting))

        try:
            while True:
                await workflow.wait_condition(next_move)
                if self._halted() or (not self._waiting and not self._out):
                    break
                places = min(self._free_in_window(), size, len(self._waiting))
                # A fair share of what is left at most: the batches of a task end near each
                # other, as a loop's last documents do (a fixed cap would end them together
                # mid-way, and the window would empty while new batches start).
                spread = max(1, self._task.document_concurrency // size)
                most = max(places, -(-len(self._waiting) // spread))
                batch, self._waiting = self._waiting[:places], self._waiting[places:]
                number = len(running)
                self._out[number] = _BatchOut(places=places, most=most, documents=list(batch))
                running.append(asyncio.create_task(self._taking_batch(number)))
        except asyncio.CancelledError:
            await _cancelled(running)
            raise
        await self._all_ended(running, bool(self._waiting))

    async def _all_ended(self, running: list[asyncio.Task[None]], left: bool) -> None:
        """Wait for every batch; documents ``left`` by a long history go to a fresh run."""
        ended = await asyncio.gather(*running, return_exceptions=True)
        if left and self._halted() and not self._stopped():
            self._rolling_over = True
        for outcome in ended:
            if isinstance(outcome, BaseException):
                raise outcome

    async def _taking_batch(self, number: int) -> None:
        out = self._out[number]
        try:
            await self._batch(number, out.documents, asyncio.Semaphore(1), out)
        finally:
            del self._out[number]
            self._answers.pop(number, None)
            # Documents handed over and not ended (an answer to a take that never reached the
            # batch, or taken after the batch stopped) wait for another batch.
            back = [d for d in out.documents if d.index not in self._book.reports]
            if back and not self._stopped():
                for document in back:
                    self._book.document_put_back(document.index)
                self._waiting = back + self._waiting

    def _free_in_window(self) -> int:
        """Places no running batch holds: a batch holds its places while it has documents
        that no progress signal or answer has shown ended."""
        busy = 0
        for out in self._out.values():
            left = sum(1 for d in out.documents if not self._ended(d.index))
            busy += min(out.places, left)
        return self._task.document_concurrency - busy

    @workflow.signal(name=ASK_DOCUMENTS_SIGNAL)
    def ask_documents(self, ask: TakeDocuments) -> None:
        """A batch's ask (see ``take_documents``); it reads the answer with a query. An ask
        signalled twice (its RPC retried) is answered once."""
        last = self._answers.get(ask.batch)
        if last is not None and last[0] == ask.ask_id:
            return
        self._answers[ask.batch] = (ask.ask_id, self._answer(ask))

    @workflow.query(name=TAKEN_DOCUMENTS_QUERY)
    def taken_documents(self, ask_id: str) -> TakenDocuments | None:
        """The answer to a batch's ask, once its signal was handled; None before."""
        for answered, answer in self._answers.values():
            if answered == ask_id:
                return answer
        return None

    @workflow.update(name=TAKE_DOCUMENTS_UPDATE)
    def take_documents(self, ask: TakeDocuments) -> TakenDocuments:
        """Tasks begun before PATCH_BATCHES_ASK_BY_SIGNAL: a batch's ask as an update."""
        return self._answer(ask)

    def _answer(self, ask: TakeDocuments) -> TakenDocuments:
        """Book the documents a running batch ended, then hand it ``want`` more from those
        waiting, unless the task is paused, stopping or handing over to a fresh run (then
        none, and the batch runs out); on a new attempt of the batch (``again``), those it
        took and did not end, and which of its documents the task already has."""
        out = self._out.get(ask.batch)
        if out is None:
            return TakenDocuments()
        self.steps_progress(ask.events)
        self._book_ended(out, ask.ended)
        go = not (self._paused or self._halted())
        if ask.again:
            given = [d for d in out.taken if d.index not in self._book.reports]
        elif not go or not self._waiting:
            given = []
        else:
            count = min(ask.want, len(self._waiting), out.most - len(out.documents))
            given, self._waiting = self._waiting[:count], self._waiting[count:]
            for document in given:
                self._book.document_started(document.index)
            out.documents.extend(given)
            out.taken.extend(given)
            if given:
                self._mark_dirty()
        keys = [step_key(d.path, kind) for d in given for kind in StepKind]
        earlier = self._book.resume
        return TakenDocuments(
            documents=given,
            done={k: earlier.results[k] for k in keys if k in earlier.results},
            partials={k: earlier.partials[k] for k in keys if k in earlier.partials},
            ended=self._ended_of(out, ask),
            go=go,
        )

    def _ended_of(self, out: _BatchOut, ask: TakeDocuments) -> list[int]:
        """Which documents the batch may stop carrying: on a new attempt every one of its own
        the task has (it may not know), else those it just handed over. Not every ended one
        on each answer: that list grows with the batch, and a batch asks once per document."""
        if ask.again:
            return [d.index for d in out.documents if d.index in self._book.reports]
        return [o.index for o in ask.ended if o.index in self._book.reports]

    def _book_ended(self, out: _BatchOut, ended: list[DocumentOutcome]) -> None:
        """Book how documents of a running batch ended, each once (an answer the batch never
        got makes it hand them over again, with its next take or its result)."""
        mine = {document.index: document for document in out.documents}
        fresh = [o for o in ended if o.index in mine and o.index not in self._book.reports]
        if not fresh:
            return
        now = workflow.now()
        for outcome in fresh:
            self._book.document_outcome(mine[outcome.index], outcome, now)
        self._check_budget()
        self._mark_dirty()

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

    def _ended(self, index: int) -> bool:
        return index in self._book.reports or self._reported(index)

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
        if workflow.patched(PATCH_SMALL_TASKS_FILL_BATCHES):
            # A batch's documents already run side by side, under its own call limit; more
            # batches only take more of the workers' activity slots, which many small tasks
            # at once then wait for. A batch gets at least as many documents as its calls.
            spread = max(spread, task.call_concurrency)
        size = max(1, min(spread, task.batch_documents, task.document_concurrency))
        return [documents[i : i + size] for i in range(0, len(documents), size)]

    def _batch_timeouts(self, documents: list[DocumentRef], share: float = 1) -> StepTimeouts:
        """Room for every step of every document, one step kind after another; ``share``
        times that for a batch that takes more documents than it starts with."""
        task = self._task
        seconds = share * sum(
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
        self,
        number: int,
        documents: list[DocumentRef],
        window: asyncio.Semaphore,
        out: _BatchOut | None = None,
    ) -> None:
        """Run ``documents`` as one activity; ``out``: the batch takes more as places free."""
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
                places=out.places if out else None,
                most=out.most if out else None,
                compact_outcomes=out is not None and not self._book.inline,
                asks_by_signal=out is not None and self._asks_by_signal,
            )
            # Room for every document the batch may take, each as long as its first ones.
            share = out.most / len(documents) if out else 1
            timeouts = self._batch_timeouts(documents, share)
            calls = sum(document.calls(kind) for document in documents for kind in StepKind)
            first, last = documents[0].name, documents[-1].name
            summary = f"batch {number + 1}: {len(documents)} document(s) ({first} .. {last}), "
            if out is not None:
                summary += f"taking up to {out.most} as places free, {out.places} at a time; "
            retry = self._task.policy.retry_policy()
            if workflow.patched(PATCH_BATCHES_FAIL_BY_CALL_ATTEMPTS):
                # Lost workers no longer use up a batch's attempts; its calls' own do.
                retry = self._task.policy.calls_retry_policy()
                summary += f"{calls} call(s) of at most {self._task.policy.max_attempts} "
                summary += "provider attempts each; Temporal's attempt also counts hand-overs"
            else:
                summary += f"{calls} call(s)"
            try:
                result: BatchResult = await workflow.execute_activity(
                    PROCESS_DOCUMENTS,
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
                documents = out.documents if out else documents
                message, _kind, _stats = failure_of(error)
                now = workflow.now()
                cut = cut_of(error)
                if cut is not None and out is not None:
                    self._book_ended(out, cut.outcomes)
                    cut = cut.model_copy(update={"outcomes": []})
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
            if out is not None:
                self._book_ended(out, result.outcomes)
                result = result.model_copy(update={"outcomes": []})
                documents = out.documents
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

    @workflow.signal(name=STEPS_PROGRESS_SIGNAL)
    def steps_progress(self, events: list[ProgressEvent]) -> None:
        now = workflow.now()
        booked = [self._book.progress(event, now) for event in events]
        if any(booked):
            self._check_budget()
            self._mark_dirty()

    @workflow.query(name=STATUS_QUERY)
    def status(self) -> TaskStatus:
        return self._book.status(workflow.now())

    def _publishes(self) -> bool:
        return self._task.search_attributes and workflow.patched(PATCH_SEARCH_ATTRIBUTES)

    async def _final_checkpoint(self, error: str | None = None) -> None:
        if self._sink:
            await super()._final_checkpoint(error)
        else:
            await self._write_checkpoint(error)

    async def _end(self, state: TaskState, reason: str) -> TaskResult:
        """Enter a terminal state, write the last checkpoint, and answer or raise accordingly."""
        await self._finish(state, reason)
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
