"""The task client without asyncio (public API: longtask.client)."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from types import TracebackType
from typing import Any, Self

from longtask.agent import TaskOutcome
from longtask.checkpoints import Checkpoint
from longtask.models import TaskResult
from longtask.progress import ProgressRecord
from longtask.settings import Settings
from longtask.task_client import TaskClient
from longtask.task_list import TaskFilter, TaskSummary


class SyncTaskClient:
    """``TaskClient`` without asyncio: each call runs on the client's own event loop.

    with SyncTaskClient.connect() as tasks:
        task_id = tasks.start(["examples/"])
        for record in tasks.watch(task_id):
            print(record.progress)
    """

    def __init__(self, runner: asyncio.Runner, tasks: TaskClient) -> None:
        self._runner = runner
        self.tasks = tasks

    @classmethod
    def connect(cls, settings: Settings | None = None) -> SyncTaskClient:
        runner = asyncio.Runner()
        try:
            tasks = runner.run(TaskClient.connect(settings))
        except BaseException:
            runner.close()
            raise
        return cls(runner, tasks)

    def close(self) -> None:
        self._runner.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        trace: TracebackType | None,
    ) -> None:
        self.close()

    def start(self, paths: list[str], **options: Any) -> str:
        return self._runner.run(self.tasks.start(paths, **options))

    def start_task(self, name: str, params: dict[str, Any], **options: Any) -> str:
        return self._runner.run(self.tasks.start_task(name, params, **options))

    def outcome(self, task_id: str) -> TaskOutcome[Any]:
        return self._runner.run(self.tasks.outcome(task_id))

    def status(self, task_id: str) -> dict[str, Any]:
        return self._runner.run(self.tasks.status(task_id))

    def watch(self, task_id: str) -> Iterator[ProgressRecord]:
        """Each new progress record of the task until its run ends."""
        records = self.tasks.watch(task_id)

        async def next_record() -> ProgressRecord:
            return await anext(records)

        while True:
            try:
                yield self._runner.run(next_record())
            except StopAsyncIteration:
                return

    def result(self, task_id: str) -> TaskResult | None:
        return self._runner.run(self.tasks.result(task_id))

    def list_tasks(self, task_filter: TaskFilter | None = None) -> list[TaskSummary]:
        return self._runner.run(self.tasks.list_tasks(task_filter))

    def pause(self, task_id: str) -> str:
        return self._runner.run(self.tasks.pause(task_id))

    def resume(self, task_id: str, checkpoint_id: str | None = None, **budget: Any) -> str:
        return self._runner.run(self.tasks.resume(task_id, checkpoint_id, **budget))

    def cancel(self, task_id: str) -> None:
        self._runner.run(self.tasks.cancel(task_id))

    def list_checkpoints(self, task_id: str) -> list[str]:
        return self._runner.run(self.tasks.list_checkpoints(task_id))

    def load_checkpoint(self, task_id: str, checkpoint_id: str | None = None) -> Checkpoint | None:
        return self._runner.run(self.tasks.load_checkpoint(task_id, checkpoint_id))
