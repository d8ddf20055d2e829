"""Every step of several documents in one activity: the unit of work of large tasks.

One activity per provider call would cap a task at what the Temporal server schedules per
second (about 70 activities/s here), far below what the provider answers. A batch carries
the calls of many documents; every finished call is in its heartbeat details within an
eighth of the heartbeat timeout, so a retry or a new worker redoes none of them.

Within a batch each document goes embed and summarize, then reason, then report. A document
whose step fails for good ends failed and the others go on; a failure that must wait
(server error, rate limit) stops that document until the batch's retry, which redoes only
what is not finished; a refused key stops the batch and the task. A document found unusable
when the task began (activities/documents.py) ends failed at once, saying what is wrong.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Sequence
from datetime import timedelta
from typing import Any, TypeVar

from temporalio import activity
from temporalio.exceptions import ApplicationError, ApplicationErrorCategory

from activities.attempts import handover
from activities.documents import is_unusable, unusable_reason
from activities.metrics import record_document
from activities.report_files import ReportStore
from activities.reporting import ActivityPulse, slot_of
from activities.steps import DocumentSteps
from longtask.cost import TokenUsage
from longtask.engine.names import BAD_INPUT, PROCESS_DOCUMENTS
from longtask.models import (
    BatchRequest,
    BatchResult,
    CallStats,
    DocumentOutcome,
    DocumentRef,
    StepRequest,
    StepResult,
    TakeDocuments,
    TakenDocuments,
    step_key,
)
from longtask.policies import STOP_TASK_KINDS, StepKind, TimeoutPolicy
from longtask.states import TaskState

log = logging.getLogger(__name__)
Result = TypeVar("Result")
# A batch that takes documents holds a quarter of its places in reserve (at least one).
RESERVE_SHARE = 4
# Step outputs a large task still reads from an ended document: its last messages.
KEPT_OUTPUTS = (StepKind.REASON, StepKind.REPORT)
# Logged when the server takes a running batch from a live worker (benchmarks count it).
LIVE_STEP_TAKEN = "step taken from a live worker"


def _settled(results: Sequence[StepResult | BaseException]) -> list[StepResult]:
    """Results of steps run side by side, after all of them ended; the first failure raised."""
    for result in results:
        if isinstance(result, BaseException):
            raise result
    return [result for result in results if isinstance(result, StepResult)]


def batch_failure(
    errors: list[BaseException], cut: BatchResult, policy: TimeoutPolicy, attempt: int
) -> BaseException:
    """How a batch with documents still to do fails: for good on a refused key; otherwise
    retried after the longest wait any of its documents needs.

    The failure's details are the attempts made (``CallStats``) and what every step of the
    batch paid (``paid_for(cut)``): should this failure be its last, the task books those
    tokens in its ledger and cost. ``attempt`` is Temporal's (1-based): a bug, which no call's
    attempts count, is retried after the policy's backoff for it (5, 10, 20 ... 60 s), not at
    a lost worker's pace.
    """
    failures = [error for error in errors if isinstance(error, ApplicationError)]
    stats = CallStats()
    for failure in failures:
        if failure.details:
            stats.merge(CallStats.model_validate(failure.details[0]))
    details = (stats.model_dump(), paid_for(cut).model_dump(mode="json"))
    others = [error for error in errors if not isinstance(error, ApplicationError)]
    if others:
        bug = others[0]
        log.error("batch failed on an unexpected error", exc_info=bug)
        return ApplicationError(
            f"unexpected {type(bug).__name__}: {bug}",
            *details,
            type=type(bug).__name__,
            next_retry_delay=timedelta(seconds=policy.wait_before_retry(attempt - 1)),
        )
    fatal = [failure for failure in failures if failure.non_retryable]
    if fatal:
        return ApplicationError(fatal[0].message, *details, type=fatal[0].type, non_retryable=True)
    longest = max(failures, key=lambda f: f.next_retry_delay or timedelta(0))
    return ApplicationError(
        f"{len(failures)} document(s) to retry; first: {longest.message}",
        *details,
        type=longest.type,
        next_retry_delay=longest.next_retry_delay,
        category=ApplicationErrorCategory.BENIGN,
    )


def paid_for(cut: BatchResult) -> BatchResult:
    """The tokens and attempts of every step of ``cut``, without texts: a failure's details do
    not go to the payload store, and the server refuses a failure past its size limit."""
    steps = [*(step for outcome in cut.outcomes for step in outcome.steps), *cut.unended]
    return BatchResult(
        batch=cut.batch,
        outcomes=[],
        unended=[step.model_copy(update={"outputs": []}) for step in steps],
    )


async def unless_worker_stops(work: Awaitable[Result]) -> Result | None:
    """``work``'s result, or None once the worker begins to shut down: ``work`` is cancelled
    then, so the activity hands its steps over at once instead of after its calls in flight.
    A cancel of the activity itself cancels ``work`` and waits for it to stop."""
    running = asyncio.ensure_future(work)
    stopping = asyncio.ensure_future(activity.wait_for_worker_shutdown())
    try:
        await asyncio.wait({running, stopping}, return_when=asyncio.FIRST_COMPLETED)
    except asyncio.CancelledError:
        running.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await running
        raise
    finally:
        stopping.cancel()
    if running.done():
        return running.result()
    running.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await running
    return None


def taken_from_a_live_worker() -> bool:
    """Whether the server gave this running activity up (its heartbeat timed out, or it is
    no longer found) while this worker is alive: a hand-over by mistake."""
    details = activity.cancellation_details()
    return details is not None and (details.timed_out or details.not_found)


def cancelled_by_its_task() -> bool:
    """Whether this activity is cancelled because its task asked, not because its worker
    stops, it was paused or timed out: only then does it answer with what it has."""
    details = activity.cancellation_details()
    return details is not None and details.cancel_requested


class _Taking:
    """The documents of a batch that takes more from its task as its places free, and those
    of them the task already has (handed over with a take: run and sent no more)."""

    def __init__(self, request: BatchRequest) -> None:
        self.request = request
        # Whether the task may still hand over documents (it said none, or a document failed).
        self.more = request.places is not None
        # Whether documents held in reserve may start (not once the task said it is paused).
        self.go = True
        # Whether the task answered this attempt: a new attempt starts at once only documents
        # an earlier one had begun; the rest wait for the task's word (it may be paused now).
        self.cleared = True
        self.begun: set[int] = set()
        self.early = 0  # documents started before the task answered
        # Whether ended documents go to the task as they end (not once it did not answer).
        self.reporting = True
        self.handed: set[int] = set()
        self._first = {document.index for document in request.documents}
        # Documents it took (not among its first) that the task has not booked as ended: what
        # the heartbeat details carry, kept as answers come instead of found again each time.
        self._held: dict[int, DocumentRef] = {}
        # Documents an earlier attempt held, started before the task answers this one.
        self.restored = 0

    def room(self) -> int:
        most = self.request.most or len(self.request.documents)
        return most - len(self.request.documents)

    def finished(self, index: int, pulse: ActivityPulse) -> bool:
        return index in pulse.outcomes or index in self.handed

    def ended(self, pulse: ActivityPulse) -> list[DocumentOutcome]:
        """Documents ended in this batch and not handed to the task yet."""
        mine = {document.index for document in self.request.documents}
        return [outcome for index, outcome in pulse.outcomes.items() if index in mine]

    def restore(self, pulse: ActivityPulse) -> None:
        """A new attempt: the documents the last one held, from its heartbeat details."""
        held = pulse.held
        self.handed |= set(held.ended)
        self.restored = len(self._merge(held))
        self.begun = pulse.begun_in_earlier_attempts()
        self.cleared = False

    def may_start(self, document: DocumentRef) -> bool:
        return self.go and (self.cleared or document.index in self.begun)

    def add(self, taken: TakenDocuments | None, pulse: ActivityPulse) -> list[DocumentRef]:
        """Take the task's answer: documents to run (returned: those new to the batch), and
        those it has (dropped from the heartbeat details, which then carry only what the task
        does not hold)."""
        if taken is None:
            return []  # no answer: what ended stays here, for the next ask or the result
        new = self._merge(taken)
        for index in taken.ended:
            self.handed.add(index)
            self._held.pop(index, None)
            pulse.outcomes.pop(index, None)
        self._keep(pulse)
        return new

    def _merge(self, taken: TakenDocuments) -> list[DocumentRef]:
        known = {document.index for document in self.request.documents}
        new = [document for document in taken.documents if document.index not in known]
        self._held |= {
            d.index: d for d in new if d.index not in self._first and d.index not in self.handed
        }
        self.request = self.request.model_copy(
            update={
                "documents": [*self.request.documents, *new],
                "done": {**self.request.done, **taken.done},
                "partials": {**self.request.partials, **taken.partials},
            }
        )
        return new

    def _keep(self, pulse: ActivityPulse) -> None:
        """Heartbeat what the batch holds: documents it took that the task has not booked,
        and which of its first ones the task has (a new attempt skips those)."""
        held = list(self._held.values())
        keys = {step_key(document.path, kind) for document in held for kind in StepKind}
        pulse.keep_held(
            TakenDocuments(
                documents=held,
                done={key: self.request.done[key] for key in keys & self.request.done.keys()},
                partials={
                    key: self.request.partials[key] for key in keys & self.request.partials.keys()
                },
                ended=sorted(self.handed & self._first),
            )
        )


class DocumentBatches:
    def __init__(self, steps: DocumentSteps, reports: ReportStore) -> None:
        self._steps = steps
        self._reports = reports

    @activity.defn(name=PROCESS_DOCUMENTS)
    async def process_documents(self, request: BatchRequest) -> BatchResult:
        taking = _Taking(request)
        async with self._steps.pulse(request.task_id, request.call_concurrency) as pulse:
            pulse.takes_documents = request.places is not None
            pulse.asks_by_signal = request.asks_by_signal
            try:
                ended = await unless_worker_stops(self._run(taking, pulse))
            except asyncio.CancelledError:
                request = taking.request
                if not cancelled_by_its_task():
                    if taken_from_a_live_worker():
                        # A heartbeat missed while alive (a machine too loaded for the
                        # heartbeat timeout): the step runs on elsewhere; said for operators.
                        log.warning("%s: batch %d", LIVE_STEP_TAKEN, request.batch)
                    raise
                # The task is cancelled: its last checkpoint is written from what this answer
                # holds, so a resumed run skips every step finished here. Calls in flight were
                # cut by the cancel and are not made again by this batch.
                activity.logger.info("batch %d cancelled by its task", request.batch)
                return self._cut(request, pulse)
        # Every document the batch ran: those it began with and those it took.
        request = taking.request
        if ended is None:
            # The worker stops: every step goes to another worker at once, streamed text and
            # finished calls in the heartbeat details; calls cut here are asked again there.
            cut = self._cut(request, pulse)
            done = sum(len(outcome.steps) for outcome in cut.outcomes) + len(pulse.finished)
            stop = handover(done, len(request.documents) * len(StepKind), request.policy,
                            CallStats(), "worker stopping")  # fmt: skip
            raise batch_failure([stop], cut, request.policy, activity.info().attempt)
        errors = [error for error in ended if isinstance(error, BaseException)]
        if errors:
            raise batch_failure(
                errors, self._cut(request, pulse), request.policy, activity.info().attempt
            )
        # Documents handed to the task with a take are no longer here.
        kept = [pulse.outcomes[d.index] for d in request.documents if d.index in pulse.outcomes]
        return BatchResult(batch=request.batch, outcomes=kept)

    async def _run(self, taking: _Taking, pulse: ActivityPulse) -> Sequence[BaseException | None]:
        """Every document of the batch side by side; for a batch that takes documents, at
        most ``places`` at once, each free place filled from the task."""
        request = taking.request
        if request.places is None:
            return await asyncio.gather(
                *(self._document(request, d, pulse) for d in request.documents),
                return_exceptions=True,
            )
        asking: asyncio.Task[TakenDocuments | None] | None = None
        if activity.info().attempt > 1:
            # Documents this batch took in an earlier attempt and did not end are its own:
            # those its heartbeat details name as begun start now, the others once the task
            # says go; the task's answer adds any taken after the last heartbeat, and names
            # those it already has.
            taking.restore(pulse)
            ask = TakeDocuments(batch=request.batch, again=True, ended=taking.ended(pulse))
            asking = asyncio.create_task(pulse.take(ask))
        waiting = [d for d in taking.request.documents if not taking.finished(d.index, pulse)]
        running: set[asyncio.Task[None]] = set()
        ended: list[BaseException | None] = []
        try:
            while True:
                while len(running) < request.places:
                    chosen = next((d for d in waiting if taking.may_start(d)), None)
                    if chosen is None:
                        break
                    waiting.remove(chosen)
                    taking.early += not taking.cleared
                    begun = self._document(taking.request, chosen, pulse)
                    running.add(asyncio.create_task(begun))
                # A few documents in reserve: a freed place starts the next one at once, not
                # after the take's round trip.
                reserve = max(1, request.places // RESERVE_SHARE)
                want = request.places + reserve - len(running) - len(waiting)
                want = min(want, taking.room()) if taking.more and pulse.may_start() else 0
                ended_here = taking.ended(pulse) if taking.reporting else []
                if asking is None and (want > 0 or ended_here):
                    # What ended goes with the ask (or alone, once the batch takes no more):
                    # the task books it now, and the heartbeat details stop carrying it.
                    ask = TakeDocuments(
                        batch=request.batch,
                        want=max(want, 0),
                        ended=ended_here,
                        events=pulse.progress_for_take(),
                    )
                    asking = asyncio.create_task(pulse.take(ask))
                if not running and asking is None:
                    return ended
                waits: set[asyncio.Future[Any]] = {*running, *([asking] if asking else [])}
                done, _ = await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
                if asking is not None and asking in done:
                    taken, asked = asking.result(), ask
                    asking = None
                    new = taking.add(taken, pulse)
                    # Answered or not (a task out of reach says nothing), the wait is over.
                    taking.cleared = True
                    if taken is None:
                        # No answer: what ends from now on goes with the batch's result.
                        taking.more = taking.reporting = False
                    else:
                        waiting.extend(d for d in new if not taking.finished(d.index, pulse))
                        if asked.want > 0 and not taken.documents:
                            taking.more = False
                    if asked.again:
                        activity.logger.info(
                            "batch %d, attempt %d, took back %d document(s) it held "
                            "(%d from its heartbeat details, %d from its task); %d had begun "
                            "a step and started at once",
                            request.batch, activity.info().attempt, taking.restored + len(new),
                            taking.restored, len(new), taking.early,
                        )  # fmt: skip
                    if taken is not None and not taken.go:
                        # Paused or stopping: what is in reserve goes back unstarted.
                        taking.go = taking.more = False
                for task in done & running:
                    running.discard(task)
                    error = task.exception()
                    ended.append(error)
                    if error is not None:
                        # The batch fails once its documents in flight end: it starts none of
                        # its reserve and takes no more (a new attempt takes them back).
                        taking.go = taking.more = False
        except asyncio.CancelledError:
            for task in [*running, *([asking] if asking else [])]:
                task.cancel()
            await asyncio.gather(*running, *([asking] if asking else []), return_exceptions=True)
            raise

    @staticmethod
    def _cut(request: BatchRequest, pulse: ActivityPulse) -> BatchResult:
        """What a batch stopped before its end had done, document by document."""
        ended = [d.index for d in request.documents if d.index in pulse.outcomes]
        steps = [*pulse.finished.values(), *pulse.abandoned.values(), *pulse.unfinished_steps()]
        return BatchResult(
            batch=request.batch,
            outcomes=[pulse.outcomes[index] for index in ended],
            unended=[step for step in steps if step.document not in ended],
        )

    async def _document(
        self, request: BatchRequest, document: DocumentRef, pulse: ActivityPulse
    ) -> None:
        if document.index in pulse.outcomes:
            return  # ended in an earlier attempt of this batch
        if is_unusable(document):
            # Found unusable when the task began: no call is made, the message says why.
            reason = await asyncio.to_thread(unusable_reason, document)
            record_document("failed")
            pulse.outcomes[document.index] = DocumentOutcome(
                index=document.index, state=TaskState.FAILED, error=reason, error_type=BAD_INPUT
            )
            return

        async def run(kind: StepKind, **context: Any) -> StepResult:
            done = request.done.get(step_key(document.path, kind))
            if done is not None:
                # Finished by an earlier run of the task: its result stands, nothing is paid.
                return StepResult(
                    kind=kind, document=document.index, outputs=done, usage=TokenUsage()
                )
            step = StepRequest(
                task_id=request.task_id,
                document=document,
                model=request.models.for_step(kind),
                policy=request.policy,
                call_concurrency=request.call_concurrency,
                partial_response=request.partials.get(step_key(document.path, kind), ""),
                **context,
            )
            return await self._steps.run_step(step, kind, pulse)

        try:
            embedded, summarized = _settled(
                await asyncio.gather(
                    run(StepKind.EMBED), run(StepKind.SUMMARIZE), return_exceptions=True
                )
            )
            summaries = summarized.outputs
            analysis = await run(
                StepKind.REASON, summaries=summaries, key_passages=embedded.outputs
            )
            report = await run(StepKind.REPORT, summaries=summaries, analysis=analysis.outputs[0])
        except ApplicationError as error:
            if not error.non_retryable or (error.type or "") in STOP_TASK_KINDS:
                raise
            record_document("failed")
            pulse.outcomes[document.index] = DocumentOutcome(
                index=document.index,
                state=TaskState.FAILED,
                error=error.message,
                error_type=error.type or "",
                steps=self._steps_of(document, pulse),
            )
            return
        text = report.outputs[0]
        report_file = await self._reports.save(request.task_id, document, text)
        record_document("completed")
        steps = self._steps_of(document, pulse)
        if request.compact_outcomes:
            # A large task keeps no outputs of ended documents but its last messages (the
            # analysis and the report), and reads the report from its file.
            steps = [step if step.kind in KEPT_OUTPUTS else step.model_copy(update={"outputs": []})
                     for step in steps]  # fmt: skip
            text = "" if report_file else text
        pulse.outcomes[document.index] = DocumentOutcome(
            index=document.index,
            state=TaskState.COMPLETED,
            report=text,
            report_file=report_file,
            steps=steps,
        )

    @staticmethod
    def _steps_of(document: DocumentRef, pulse: ActivityPulse) -> list[StepResult]:
        """The steps this batch ran for ``document``, finished or given up."""
        steps = []
        for kind in StepKind:
            slot = slot_of(document.index, kind)
            result = pulse.finished.pop(slot, None) or pulse.abandoned.pop(slot, None)
            if result is not None:
                steps.append(result)
        return steps
