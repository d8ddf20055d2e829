"""Progress of running steps: heartbeat details for durability, throttled signals for the task.

An activity runs one step or, for a batch, every step of several documents. Each step keeps
its own StepReporter; the activity's ActivityPulse heartbeats all of them together and tells
the task workflow how far they got.
"""

from __future__ import annotations

import asyncio
import time
from types import TracebackType
from typing import Any

from pydantic import BaseModel, Field, ValidationError
from temporalio import activity
from temporalio.client import Client, WorkflowHandle

from activities.asking import ask_by_signal, ask_by_update
from activities.attempts import AttemptLedger
from activities.continuation import join_continuation
from activities.metrics import record_tokens
from longtask.cost import CostLedger, TokenUsage
from longtask.engine.names import STEPS_PROGRESS_SIGNAL as PROGRESS_SIGNAL
from longtask.models import (
    DocumentOutcome,
    ProgressEvent,
    StepResult,
    TakeDocuments,
    TakenDocuments,
)
from longtask.policies import StepKind
from longtask.progress import ProgressRecord, build_record

# A batch waits this long at most for its task to hand it documents; a slower answer (a task
# whose worker is gone) leaves the places empty, and the task hands the documents on later.
TAKE_SECONDS = 30.0
# A document that ended is signalled this soon (not at the usual cadence): its task refills its
# window of documents in flight from these signals. At most this often per activity.
DOCUMENT_ENDED_SIGNAL_SECONDS = 0.25


def slot_of(document: int, kind: StepKind) -> str:
    return f"{document}:{kind.value}"


class StepHeartbeat(BaseModel):
    """What a running step has: its progress record and every result it already got."""

    record: ProgressRecord
    outputs: dict[int, str] = Field(default_factory=dict)
    usage: TokenUsage = Field(default_factory=TokenUsage)
    ledger: AttemptLedger = Field(default_factory=AttemptLedger)
    costs: CostLedger = Field(default_factory=CostLedger)
    partial_text: str | None = None
    chunks: int = 0


class ActivityHeartbeat(BaseModel):
    """Heartbeat details of an activity: running steps, finished steps, ended documents.

    Temporal keeps the newest details across attempts and workers, so a retried or resumed
    activity starts from them instead of calling the provider again for finished work.
    """

    steps: dict[str, StepHeartbeat] = Field(default_factory=dict)
    finished: dict[str, StepResult] = Field(default_factory=dict)
    outcomes: dict[int, DocumentOutcome] = Field(default_factory=dict)
    # A batch that takes documents: those it took and its task has not booked as ended (with
    # what an earlier run of the task finished of them), and which of its first documents the
    # task has. A new attempt starts them at once, before its task answers it.
    held: TakenDocuments = Field(default_factory=TakenDocuments)


def restored_heartbeat() -> ActivityHeartbeat:
    """The details the previous attempt of this activity left, if any."""
    details = activity.info().heartbeat_details
    if not details:
        return ActivityHeartbeat()
    try:
        return ActivityHeartbeat.model_validate(details[0])
    except ValidationError:
        # Details of an older release: start the activity afresh rather than fail it.
        activity.logger.warning("heartbeat details of another format ignored")
        return ActivityHeartbeat()


class StepReporter:
    """The state of one running step: outputs per call, tokens, attempts, streamed text."""

    def __init__(
        self,
        task_id: str,
        document: int,
        kind: StepKind,
        total: int,
        attempt: int,
        previous: StepHeartbeat | None,
    ) -> None:
        self.document = document
        self.kind = kind
        self.total = total
        self._task_id = task_id
        self._attempt = attempt
        self._started = time.monotonic()
        self.outputs: dict[int, str] = dict(previous.outputs) if previous else {}
        self.usage = previous.usage if previous else TokenUsage()
        self.ledger = previous.ledger if previous else AttemptLedger()
        self.costs = previous.costs if previous else CostLedger()
        # Text a previous attempt streamed before it was cut: the retry continues from it.
        self.resumed_text = (previous.partial_text or "") if previous else ""
        # A new attempt after a provider failure is a retry; after a lost worker it is not.
        self.retrying = attempt > 1 and self.ledger.has_failures
        # Whether a new attempt read the step's hold in Redis yet (activities/holds.py).
        self.hold_read = False
        self._partial_prefix = ""
        self._partial: list[str] = []
        self.chunks = 0
        self.signalled = (-1, -1)

    @property
    def slot(self) -> str:
        return slot_of(self.document, self.kind)

    def item_done(self, index: int, output: str, model: str, prompt: int, completion: int) -> None:
        self.outputs[index] = output
        self.usage.add(model, prompt, completion)
        attempt = self.ledger.attempt_of(index) + 1
        self.costs.record(self.kind.value, model, attempt, "success", prompt, completion)
        record_tokens(self.kind.value, model, prompt, completion)

    def attempt_failed(
        self, model: str, attempt: int, status: str, streamed: int, prompt: int = 0
    ) -> None:
        """Book a failed attempt: a stream cut after the provider began its answer is billed
        for its ``prompt`` and for the ``streamed`` tokens it sent before the cut."""
        self.usage.add(model, prompt, streamed)
        self.costs.record(self.kind.value, model, attempt, status, prompt, streamed)
        if prompt or streamed:
            record_tokens(self.kind.value, model, prompt, streamed)

    def tokens_saved(self, model: str, tokens: int) -> None:
        """Completion tokens a continued stream did not pay again."""
        self.usage.add_saved(model, tokens)
        self.costs.record(self.kind.value, model, 0, "saved", saved=tokens, calls=0)

    def streamed_text(self) -> str:
        """What the current attempt itself has streamed (without the resumed text)."""
        return "".join(self._partial)

    def streaming(self, parts: list[str], chunks: int) -> None:
        """Record the stream so far: ``parts`` is the live list the stream appends to."""
        self._partial = parts
        self.chunks = chunks

    def continue_from(self, prefix: str) -> None:
        """This attempt continues ``prefix``: the text so far starts with it."""
        self._partial_prefix = prefix

    def partial_text(self) -> str:
        """The answer so far: resumed text joined with what this attempt has streamed."""
        return join_continuation(self._partial_prefix, "".join(self._partial))

    def details(self) -> StepHeartbeat:
        record = build_record(
            self._task_id,
            len(self.outputs),
            self.total,
            time.monotonic() - self._started,
            {"document": self.document, "kind": self.kind.value, "attempt": self._attempt},
        )
        return StepHeartbeat(
            record=record,
            outputs=self.outputs,
            usage=self.usage,
            ledger=self.ledger,
            costs=self.costs,
            partial_text=self.partial_text() or None,
            chunks=self.chunks,
        )

    def event(self, retrying: bool = False) -> ProgressEvent:
        self.signalled = (len(self.outputs), self.chunks)
        return ProgressEvent(
            document=self.document,
            kind=self.kind,
            done=len(self.outputs),
            total=self.total,
            done_items=sorted(self.outputs),
            attempt=self._attempt,
            retrying=retrying,
            stats=self.ledger.stats,
            usage=self.usage,
        )

    @property
    def changed(self) -> bool:
        return self.signalled != (len(self.outputs), self.chunks)


class ActivityPulse:
    """Heartbeats every step of one activity and signals their progress to the task.

    Heartbeats go out on a timer rather than per result, so an activity that waits on a slow
    call still proves its worker is alive; the SDK throttles what reaches the server. The
    calls of all its steps share one gate, and once ``halted`` no new call starts.
    """

    def __init__(self, client: Client, task_id: str, signal_seconds: float, calls: int) -> None:
        info = activity.info()
        self._client = client
        self._task_id = task_id
        self._signal_seconds = signal_seconds
        timeout = info.heartbeat_timeout.total_seconds() if info.heartbeat_timeout else 10.0
        # Eight chances per timeout: a worker held back a second by a loaded machine still
        # proves it is alive in time (the worker throttles to the same cadence).
        self._heartbeat_seconds = timeout / 8
        self._attempt = info.attempt
        self._workflow_id = info.workflow_id
        restored = restored_heartbeat()
        self._restored_steps = restored.steps
        self.finished = restored.finished
        self.outcomes = restored.outcomes
        self.held = restored.held
        self._held_json: dict[str, Any] | None = None
        self._running: dict[str, StepReporter] = {}
        self._finished_json: dict[str, Any] = {}
        self._outcomes_json: dict[str, Any] = {}
        self.abandoned: dict[str, StepResult] = {}
        self._urgent: list[ProgressEvent] = []
        # Last word of steps that finished since the last signal: without it, the task would
        # count a batch's finished steps only when the whole batch ends.
        self._settled: list[ProgressEvent] = []
        self.gate = asyncio.Semaphore(calls)
        self.halted = False
        # Set by a batch that takes its documents from the task (activities/batch.py).
        self.takes_documents = False
        self.asks_by_signal = False
        self._document_ended = False
        self._last_signal = 0.0
        self._loop: asyncio.Task[None] | None = None
        self._signal_task: asyncio.Task[None] | None = None

    def step(self, document: int, kind: StepKind, total: int) -> StepReporter:
        """A reporter for a step starting now, with whatever an earlier attempt left of it."""
        slot = slot_of(document, kind)
        reporter = StepReporter(
            self._task_id, document, kind, total, self._attempt, self._restored_steps.get(slot)
        )
        self._running[slot] = reporter
        if reporter.retrying:
            # Said at once: a retried step that succeeds quickly would end before the timer.
            self._urgent.append(reporter.event(retrying=True))
            if self._signal_task is None or self._signal_task.done():
                self._send_progress(self._urgent + self._settled)
        return reporter

    def step_finished(self, reporter: StepReporter, result: StepResult) -> None:
        self._running.pop(reporter.slot, None)
        self.finished[reporter.slot] = result
        self._settled.append(reporter.event())
        if reporter.kind is StepKind.REPORT and not self.takes_documents:
            # A document's last step: the task may start another in its place, so say it soon
            # (a batch that takes documents says it with its next take instead).
            self._document_ended = True

    def step_abandoned(self, reporter: StepReporter, result: StepResult) -> None:
        """A step that failed for good: its attempts travel with the document's outcome."""
        self._running.pop(reporter.slot, None)
        self.abandoned[reporter.slot] = result

    def begun_in_earlier_attempts(self) -> set[int]:
        """Documents of which an earlier attempt had begun a step (running or finished), by
        its heartbeat details."""
        running = {int(slot.split(":", 1)[0]) for slot in self._restored_steps}
        return running | {result.document for result in self.finished.values()}

    def unfinished_steps(self) -> list[StepResult]:
        """Steps begun in this attempt or an earlier one and neither finished nor given up:
        no outputs, only what they paid (tokens, attempts)."""
        left = {slot: reporter.details() for slot, reporter in self._running.items()}
        for slot, earlier in self._restored_steps.items():
            if slot not in self.finished and slot not in self.abandoned:
                left.setdefault(slot, earlier)
        unfinished = []
        for slot, step in left.items():
            document, kind = slot.split(":", 1)
            unfinished.append(
                StepResult(
                    kind=StepKind(kind),
                    document=int(document),
                    outputs=[],
                    usage=step.usage,
                    stats=step.ledger.stats,
                    ledger=step.costs,
                )
            )
        return unfinished

    def running_step(self, document: int, kind: StepKind) -> StepReporter | None:
        return self._running.get(slot_of(document, kind))

    def may_start(self) -> bool:
        return not self.halted and not activity.is_worker_shutdown()

    def details(self) -> ActivityHeartbeat:
        return ActivityHeartbeat(
            steps={slot: reporter.details() for slot, reporter in self._running.items()},
            finished=self.finished,
            outcomes=self.outcomes,
            held=self.held,
        )

    def heartbeat(self) -> None:
        activity.heartbeat(self._details_json())

    def _details_json(self) -> dict[str, Any]:
        """``details().model_dump(mode="json")``, with finished steps and ended documents
        dumped once: they do not change, and a batch heartbeats many times a second."""
        finished = self._dumped_once(self._finished_json, self.finished)
        outcomes = self._dumped_once(self._outcomes_json, self.outcomes)
        steps = {slot: reporter.details().model_dump(mode="json")
                 for slot, reporter in self._running.items()}  # fmt: skip
        if self._held_json is None:
            self._held_json = self.held.model_dump(mode="json")
        return {"steps": steps, "finished": finished, "outcomes": outcomes, "held": self._held_json}

    def keep_held(self, held: TakenDocuments) -> None:
        """What the batch holds now, for the next heartbeat (dumped once per change)."""
        self.held = held
        self._held_json = None

    @staticmethod
    def _dumped_once(
        cache: dict[str, Any], models: dict[str, StepResult] | dict[int, DocumentOutcome]
    ) -> dict[str, Any]:
        for gone in cache.keys() - {str(key) for key in models}:
            del cache[gone]
        for key, model in models.items():
            if str(key) not in cache:
                cache[str(key)] = model.model_dump(mode="json")
        # A copy: the SDK encodes the details later, and the cache changes meanwhile.
        return dict(cache)

    async def __aenter__(self) -> ActivityPulse:
        self.heartbeat()
        self._loop = asyncio.create_task(self._run())
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self._loop is not None:
            self._loop.cancel()
        # Whatever happened, the newest results go out with the completion or failure.
        self.heartbeat()
        if self._signal_task is not None and not self._signal_task.done():
            self._signal_task.cancel()

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(self._heartbeat_seconds)
            self.heartbeat()
            since = time.monotonic() - self._last_signal
            due = since >= self._signal_seconds or (
                self._document_ended and since >= DOCUMENT_ENDED_SIGNAL_SECONDS
            )
            busy = self._signal_task is not None and not self._signal_task.done()
            if (self._urgent or due) and not busy:
                changed = [r.event() for r in self._running.values() if r.changed]
                events = self._urgent + self._settled + changed
                if events:
                    self._send_progress(events)

    def progress_for_take(self) -> list[ProgressEvent]:
        """What the next progress signal would say, to go with a take instead (one workflow
        task fewer); nothing while a signal is on its way, so events keep their order."""
        if self._signal_task is not None and not self._signal_task.done():
            return []
        changed = [r.event() for r in self._running.values() if r.changed]
        events = self._urgent + self._settled + changed
        self._urgent = []
        self._settled = []
        self._last_signal = time.monotonic()
        return events

    async def take(self, ask: TakeDocuments) -> TakenDocuments | None:
        """The task's answer to a batch's take: documents for its free places (none once the
        task says so) and those it has; None when it could not be asked or did not answer
        (the batch then runs out what it has, and hands its ended documents over later)."""
        if self._workflow_id is None:
            return None
        handle = self._client.get_workflow_handle(self._workflow_id)
        try:
            if self.asks_by_signal:
                return await ask_by_signal(handle, ask, TAKE_SECONDS)
            return await asyncio.wait_for(ask_by_update(handle, ask), timeout=TAKE_SECONDS)
        except Exception as error:  # a closed task, an RPC failure, no answer in time
            activity.logger.info("batch %d takes no more documents: %s", ask.batch, error)
            return None

    def _send_progress(self, events: list[ProgressEvent]) -> None:
        if self._workflow_id is None:
            return
        self._urgent = []
        self._settled = []
        self._document_ended = False
        self._last_signal = time.monotonic()
        handle = self._client.get_workflow_handle(self._workflow_id)
        self._signal_task = asyncio.create_task(_signal_quietly(handle, events))


async def _signal_quietly(handle: WorkflowHandle[Any, Any], events: list[ProgressEvent]) -> None:
    """Progress is advisory: a closed or unreachable workflow must not fail the step."""
    try:
        await handle.signal(PROGRESS_SIGNAL, events)
    except Exception as error:
        activity.logger.debug("progress signal dropped: %s", error)
