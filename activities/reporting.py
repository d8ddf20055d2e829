"""Progress of a running step: heartbeat details for durability, throttled signals for the task."""

from __future__ import annotations

import asyncio
import time
from types import TracebackType
from typing import Any

from pydantic import BaseModel, Field
from temporalio import activity
from temporalio.client import Client, WorkflowHandle

from activities.attempts import AttemptLedger
from activities.continuation import join_continuation
from activities.metrics import record_tokens
from longtask.cost import TokenUsage
from longtask.models import ProgressEvent
from longtask.policies import StepKind
from longtask.progress import ProgressRecord, build_record

PROGRESS_SIGNAL = "step_progress"


class StepHeartbeat(BaseModel):
    """Heartbeat details of a step: its progress record and every result it already has.

    Temporal keeps the newest details across attempts and workers, so a retried or resumed
    step starts from them instead of calling the provider again for finished items.
    """

    record: ProgressRecord
    outputs: dict[int, str] = Field(default_factory=dict)
    usage: TokenUsage = Field(default_factory=TokenUsage)
    ledger: AttemptLedger = Field(default_factory=AttemptLedger)
    partial_text: str | None = None
    chunks: int = 0


def restored_heartbeat() -> StepHeartbeat | None:
    """The details the previous attempt of this step left, if any."""
    details = activity.info().heartbeat_details
    if not details:
        return None
    return StepHeartbeat.model_validate(details[0])


class StepReporter:
    """Keeps a step's details current, heartbeats them, and tells the workflow how far it got.

    Heartbeats go out on a timer rather than per result, so a step that waits on a slow call
    still proves its worker is alive; the SDK throttles what reaches the server.
    """

    def __init__(
        self,
        client: Client,
        task_id: str,
        document: int,
        kind: StepKind,
        total: int,
        signal_seconds: float,
    ) -> None:
        info = activity.info()
        self._client = client
        self._task_id = task_id
        self._document = document
        self._kind = kind
        self._total = total
        self._signal_seconds = signal_seconds
        timeout = info.heartbeat_timeout.total_seconds() if info.heartbeat_timeout else 10.0
        self._heartbeat_seconds = timeout / 4
        self._attempt = info.attempt
        self._workflow_id = info.workflow_id
        self._started = time.monotonic()
        previous = restored_heartbeat()
        self.outputs: dict[int, str] = dict(previous.outputs) if previous else {}
        self.usage = previous.usage if previous else TokenUsage()
        self.ledger = previous.ledger if previous else AttemptLedger()
        # Text a previous attempt streamed before it was cut: the retry continues from it.
        self.resumed_text = (previous.partial_text or "") if previous else ""
        self._partial_prefix = ""
        self._partial: list[str] = []
        self._chunks = 0
        self._signalled_done = -1
        self._last_signal = 0.0
        self._loop: asyncio.Task[None] | None = None
        self._signal_task: asyncio.Task[None] | None = None

    def item_done(self, index: int, output: str, model: str, prompt: int, completion: int) -> None:
        self.outputs[index] = output
        self.usage.add(model, prompt, completion)
        record_tokens(self._kind.value, model, prompt, completion)

    def streaming(self, parts: list[str], chunks: int) -> None:
        """Record the stream so far: ``parts`` is the live list the stream appends to."""
        self._partial = parts
        self._chunks = chunks

    def continue_from(self, prefix: str) -> None:
        """This attempt continues ``prefix``: the text so far starts with it."""
        self._partial_prefix = prefix

    def partial_text(self) -> str:
        """The answer so far: resumed text joined with what this attempt has streamed."""
        return join_continuation(self._partial_prefix, "".join(self._partial))

    def details(self) -> StepHeartbeat:
        done = len(self.outputs)
        record = build_record(
            self._task_id,
            done,
            self._total,
            time.monotonic() - self._started,
            {"document": self._document, "kind": self._kind.value, "attempt": self._attempt},
        )
        partial = self.partial_text() or None
        return StepHeartbeat(
            record=record,
            outputs=self.outputs,
            usage=self.usage,
            ledger=self.ledger,
            partial_text=partial,
            chunks=self._chunks,
        )

    def heartbeat(self) -> None:
        activity.heartbeat(self.details().model_dump(mode="json"))

    async def __aenter__(self) -> StepReporter:
        self.heartbeat()
        # A new attempt after a provider failure is a retry; after a lost worker it is not.
        if self._attempt > 1 and self.ledger.has_failures:
            self._send_progress(retrying=True)
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
            due = time.monotonic() - self._last_signal >= self._signal_seconds
            if due and (len(self.outputs) != self._signalled_done or self._chunks):
                self._send_progress(retrying=False)

    def _send_progress(self, retrying: bool) -> None:
        if self._workflow_id is None or (self._signal_task and not self._signal_task.done()):
            return
        event = ProgressEvent(
            document=self._document,
            kind=self._kind,
            done=len(self.outputs),
            total=self._total,
            done_items=sorted(self.outputs),
            attempt=self._attempt,
            retrying=retrying,
            stats=self.ledger.stats,
        )
        self._signalled_done = event.done
        self._last_signal = time.monotonic()
        handle = self._client.get_workflow_handle(self._workflow_id)
        self._signal_task = asyncio.create_task(_signal_quietly(handle, event))


async def _signal_quietly(handle: WorkflowHandle[Any, Any], event: ProgressEvent) -> None:
    """Progress is advisory: a closed or unreachable workflow must not fail the step."""
    try:
        await handle.signal(PROGRESS_SIGNAL, event)
    except Exception as error:
        activity.logger.debug("progress signal dropped: %s", error)
