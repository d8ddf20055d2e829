"""The asyncio task client: start, follow and steer tasks (public API: longtask.client)."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from datetime import timedelta
from typing import Any, Literal, Self

from redis.asyncio import Redis
from redis.exceptions import RedisError
from temporalio.client import (
    Client,
    WorkflowExecutionDescription,
    WorkflowExecutionStatus,
    WorkflowHandle,
)
from temporalio.service import RPCError, RPCStatusCode

from longtask.agent import AgentStatus, TaskOutcome
from longtask.checkpoint_reader import list_checkpoints, load_checkpoint
from longtask.checkpoints import Checkpoint, progress_key
from longtask.client_errors import (
    NoWorkerError,
    StackUnreachableError,
    TaskNotFoundError,
    TaskRefusedError,
    UsageError,
    no_worker_answered_hint,
    no_worker_hint,
    task_module_hint,
)
from longtask.connections import connect_redis, connect_temporal
from longtask.engine.names import DOCUMENT_TASK, STEER_SIGNAL, STEERED_QUERY
from longtask.engine.steering import SteerAnswer, SteerRequest
from longtask.models import TaskInput, TaskResult, TaskStatus
from longtask.progress import ProgressRecord
from longtask.settings import Settings, load_settings, redact_url
from longtask.signal_answers import signal_then_read
from longtask.task_by_name import (
    agent_outcome,
    resume_named_task,
    start_named_task,
)
from longtask.task_list import TaskFilter, TaskSummary, list_tasks
from longtask.task_queue import worker_count
from longtask.task_resume import checkpoint_problem, previous_input, resume_task_run
from longtask.task_start import checked_budget, settings_budget, start_task, task_input
from longtask.task_status import agent_status_record, mirrored_record, status_record
from longtask.tooling.live_view import query_agent_status, query_status

# How long pause and resume wait for a worker to take the update before giving up.
UPDATE_WAIT = timedelta(seconds=30)
WATCH_POLL_SECONDS = 0.5


class TaskClient:
    """Start, follow and steer tasks; one Temporal connection, Redis connections per call."""

    def __init__(self, client: Client, settings: Settings) -> None:
        self.temporal = client
        self.settings = settings

    @classmethod
    async def connect(cls, settings: Settings | None = None) -> Self:
        settings = settings or load_settings()
        try:
            client = await connect_temporal(settings)
        except RuntimeError:
            raise StackUnreachableError(
                f"cannot reach Temporal at {settings.temporal_address}; start the stack with "
                "`make up`, or set LTM_TEMPORAL_ADDRESS to where it runs"
            ) from None
        return cls(client, settings)

    async def workers(self) -> int:
        """How many workers poll this client's task queue."""
        return await worker_count(self.temporal, self.settings.task_queue)

    async def require_worker(self) -> None:
        if await self.workers() == 0:
            raise NoWorkerError(no_worker_hint(self.settings.task_queue))

    async def start(
        self,
        paths: list[str],
        *,
        task_id: str | None = None,
        models: dict[str, str | None] | None = None,
        budget_usd: float | None = None,
        budget_tokens: int | None = None,
        new_run: bool = False,
    ) -> str:
        """Start a task on ``paths``; its id (given, or generated). A budget limit not named
        is the settings' (LTM_BUDGET_*). An id already used is refused unless ``new_run``
        (then its ended task starts again from zero)."""
        budget = checked_budget(budget_usd, budget_tokens, settings_budget(self.settings))
        task = task_input(self.settings, paths, task_id, models, budget)
        return await start_task(self.temporal, self.settings, task, new_run)

    async def start_input(self, task: TaskInput, new_run: bool = False) -> str:
        """Start a task from a complete input (see ``longtask.task_start.task_input``)."""
        return await start_task(self.temporal, self.settings, task, new_run)

    def handle(self, task_id: str) -> WorkflowHandle[Any, TaskResult]:
        return self.temporal.get_workflow_handle(task_id, result_type=TaskResult)

    async def describe(self, task_id: str) -> WorkflowExecutionDescription:
        """The task's newest run as Temporal describes it; TaskNotFoundError if there is none."""
        try:
            return await self.handle(task_id).describe()
        except RPCError as error:
            if error.status == RPCStatusCode.NOT_FOUND:
                raise TaskNotFoundError(
                    f"no task {task_id} in namespace {self.temporal.namespace}; check the id "
                    "(`ltm list` shows the tasks)"
                ) from None
            raise

    async def describe_status(self, task_id: str) -> WorkflowExecutionStatus:
        """The Temporal status of the task's newest run; TaskNotFoundError if there is none."""
        return (await self.describe(task_id)).status or WorkflowExecutionStatus.RUNNING

    async def task_name(self, task_id: str) -> str:
        """The task's workflow: ``DocumentTask``, or the name of a long task of one's own."""
        return (await self.describe(task_id)).workflow_type

    async def query(self, task_id: str) -> TaskStatus | None:
        """The document task's own answer, or None when no worker can answer now."""
        await self.describe_status(task_id)
        return await query_status(self.handle(task_id))

    async def status(self, task_id: str) -> dict[str, Any]:
        """The progress record plus ``state`` (what `ltm status --json` prints): from the
        task itself, else from the Redis mirror."""
        record, _ = await self.status_from(task_id)
        return record

    async def status_from(self, task_id: str) -> tuple[dict[str, Any], bool]:
        """``status``, and whether the task answered it itself (not the Redis mirror)."""
        name = await self.task_name(task_id)
        # Without a worker a query only waits for its timeout: go to the mirror at once.
        workers = await self.workers()
        if workers and name == DOCUMENT_TASK:
            status = await query_status(self.handle(task_id))
            if status is not None:
                return status_record(status, await self.prices(task_id)), True
        elif workers:
            answer = await query_agent_status(self.handle(task_id))
            if answer is not None:
                return agent_status_record(name, answer), True
        try:
            return await self.mirrored_status(task_id, workers), False
        except NoWorkerError as error:
            if name == DOCUMENT_TASK:
                raise
            raise NoWorkerError(f"{error}; {task_module_hint(name)}") from None

    async def mirrored_status(self, task_id: str, workers: int) -> dict[str, Any]:
        """The task's newest progress record in the Redis mirror."""
        redis = self.redis()
        try:
            raw = await redis.get(progress_key(task_id))
        except RedisError:
            raise self.redis_unreachable() from None
        finally:
            await redis.aclose()
        if raw is None and not workers:
            raise NoWorkerError(
                f"task {task_id}: Redis holds no progress yet and "
                + no_worker_hint(self.settings.task_queue)
            )
        if raw is None:
            raise NoWorkerError(
                f"task {task_id}: no worker answered the status query in time and Redis holds "
                "no progress yet; try again in a moment; "
                + no_worker_answered_hint(self.settings.task_queue)
            )
        return mirrored_record(raw)

    async def watch(self, task_id: str) -> AsyncIterator[ProgressRecord]:
        """Each new progress record of the task until its run ends (the last one included)."""
        document_task = await self.task_name(task_id) == DOCUMENT_TASK
        handle = self.handle(task_id)
        last: ProgressRecord | None = None
        while True:
            running = (await handle.describe()).status == WorkflowExecutionStatus.RUNNING
            status: TaskStatus | AgentStatus | None = (
                await query_status(handle) if document_task else await query_agent_status(handle)
            )
            if status is not None and status.record != last:
                last = status.record
                yield last
            if not running:
                return
            await asyncio.sleep(WATCH_POLL_SECONDS)

    async def prices(self, task_id: str) -> dict[str, float]:
        """The prices per million tokens the task was started with (fixed for its life)."""
        task = await previous_input(self.handle(task_id), self.temporal)
        return dict(task.prices)

    async def result(self, task_id: str) -> TaskResult | None:
        """The ended document task's result (waiting for the end); None when it was
        cancelled. A long task of one's own answers ``outcome`` instead."""
        from longtask.task_resume import outcome

        name = await self.task_name(task_id)
        if name != DOCUMENT_TASK:
            raise UsageError(f"task {task_id} is a {name} task; its result is `outcome`")
        return await outcome(self.handle(task_id))

    async def outcome(self, task_id: str) -> TaskOutcome[Any]:
        """How a long task of one's own ended, with its own result (waiting for the end)."""
        await self.describe_status(task_id)
        handle = self.temporal.get_workflow_handle(task_id, result_type=TaskOutcome[Any])
        return await agent_outcome(handle)

    async def start_task(
        self,
        name: str,
        params: dict[str, Any],
        *,
        task_id: str | None = None,
        new_run: bool = False,
        budget_usd: float | None = None,
        budget_tokens: int | None = None,
    ) -> str:
        """Start the long task ``name`` of LTM_TASK_MODULES with its parameters; its id.
        The settings fill in the rest of its input (models, policy, budget, prices)."""
        budget = None
        if budget_usd is not None or budget_tokens is not None:
            budget = checked_budget(budget_usd, budget_tokens, settings_budget(self.settings))
        return await start_named_task(
            self.temporal, self.settings, name, params, task_id, new_run, budget
        )

    async def list_tasks(self, task_filter: TaskFilter | None = None) -> list[TaskSummary]:
        """Tasks of the namespace, newest first, as the search attributes describe them."""
        return await list_tasks(self.temporal, task_filter or TaskFilter())

    async def pause(self, task_id: str) -> str:
        """Start no new step of the task until it is resumed; its state after."""
        return await self._steer(task_id, "pause")

    async def resume(
        self,
        task_id: str,
        checkpoint_id: str | None = None,
        budget_usd: float | None = None,
        budget_tokens: int | None = None,
    ) -> str:
        """Continue a paused task, or start a new run of an ended one from a checkpoint (the
        newest, or ``checkpoint_id``) with its budget, each limit named here replacing the
        old one; a sentence saying what happened."""
        # A checkpoint id of another task is bad input: refused before asking anyone.
        checkpoint_problem(task_id, checkpoint_id)
        description = await self.describe(task_id)
        ended = description.status != WorkflowExecutionStatus.RUNNING
        if not ended and checkpoint_id is None:
            await self._steer(task_id, "resume")
            return f"task {task_id} resumed"
        name = description.workflow_type
        redis = self.redis()
        try:
            if name != DOCUMENT_TASK and ended:
                budget = (budget_usd, budget_tokens)
                return await resume_named_task(
                    self.temporal, self.settings, redis, name, task_id, checkpoint_id, budget
                )
            return await resume_task_run(
                self.temporal,
                self.settings,
                redis,
                task_id,
                checkpoint_id,
                budget_usd,
                budget_tokens,
            )
        except RedisError:
            raise self.redis_unreachable() from None
        finally:
            await redis.aclose()

    async def cancel(self, task_id: str) -> None:
        """Ask the task to end cancelled; its checkpoints stay."""
        status = await self.describe_status(task_id)
        if status != WorkflowExecutionStatus.RUNNING:
            raise TaskRefusedError(
                f"task {task_id} has already ended ({status.name.lower()}); nothing to cancel"
            )
        await self.handle(task_id).cancel()

    async def list_checkpoints(self, task_id: str) -> list[str]:
        """The task's checkpoint ids in the Redis mirror, newest first."""
        redis = self.redis()
        try:
            return await list_checkpoints(redis, task_id)
        except RedisError:
            raise self.redis_unreachable() from None
        finally:
            await redis.aclose()

    async def load_checkpoint(
        self, task_id: str, checkpoint_id: str | None = None
    ) -> Checkpoint | None:
        """The task's newest checkpoint, or the one named; None when Redis holds none."""
        redis = self.redis()
        try:
            return await load_checkpoint(redis, task_id, checkpoint_id)
        except RedisError:
            raise self.redis_unreachable() from None
        finally:
            await redis.aclose()

    def redis(self) -> Redis:
        return connect_redis(self.settings)

    def redis_unreachable(self) -> StackUnreachableError:
        return StackUnreachableError(
            f"cannot reach Redis at {redact_url(self.settings.redis_url)}; start the stack "
            "with `make up`, or set LTM_REDIS_URL to where it runs"
        )

    async def _steer(self, task_id: str, name: Literal["pause", "resume"]) -> str:
        description = await self.describe(task_id)
        status = description.status or WorkflowExecutionStatus.RUNNING
        if status != WorkflowExecutionStatus.RUNNING:
            raise TaskRefusedError(
                f"task {task_id} has ended ({status.name.lower()}); it cannot {name}"
                + ("; `ltm resume` starts a new run of it" if name == "resume" else "")
            )
        await self.require_worker()
        # Asked by signal, answered through a query: an update sent while the task's workflow
        # task timed out can leave a history that no longer replays (longtask/engine/steering.py).
        request = SteerRequest(request_id=uuid.uuid4().hex, action=name)
        try:
            answer = await signal_then_read(
                self.handle(task_id), STEER_SIGNAL, request, STEERED_QUERY, request.request_id,
                SteerAnswer, UPDATE_WAIT.total_seconds(),
            )  # fmt: skip
        except TimeoutError:
            # A worker that died lately is still listed: the request waits for one that lives.
            raise NoWorkerError(
                f"no worker took the {name} of task {task_id} within "
                f"{UPDATE_WAIT.total_seconds():.0f} s; it stays asked and happens once a worker "
                f"runs the task; {no_worker_answered_hint(self.settings.task_queue)}"
            ) from None
        except RPCError as error:
            if error.status == RPCStatusCode.NOT_FOUND:  # the run closed before taking it
                raise TaskRefusedError(
                    f"task {task_id} ended before it took the {name}; see `ltm status {task_id}`"
                ) from None
            if error.status == RPCStatusCode.FAILED_PRECONDITION:  # its workflow task fails
                task_name = description.workflow_type
                raise TaskRefusedError(
                    f"task {task_id}: its workers cannot run it now ({error.message}); see the "
                    "worker's log"
                    + ("" if task_name == DOCUMENT_TASK else f"; {task_module_hint(task_name)}")
                ) from None
            raise
        if answer.refused:
            raise TaskRefusedError(f"task {task_id}: {answer.refused}")
        return answer.state
