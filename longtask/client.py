"""The Python client of the long task manager: what the `ltm` command does, for applications.

    tasks = await TaskClient.connect()                    # settings from LTM_* variables
    task_id = await tasks.start(["examples/"])
    async for record in tasks.watch(task_id):             # progress records until it ends
        print(record.progress)

    with SyncTaskClient.connect() as tasks:               # the same calls without asyncio
        print(tasks.status(tasks.start(["examples/"])))

Expected problems raise a ``TaskError`` whose message is one line saying what to do.
"""

from longtask.checkpoint_reader import list_checkpoints, load_checkpoint, resume_task
from longtask.checkpoints import Checkpoint
from longtask.client_errors import (
    CheckpointNotFoundError,
    NoWorkerError,
    StackUnreachableError,
    TaskError,
    TaskIdTakenError,
    TaskNotFoundError,
    TaskRefusedError,
    UsageError,
)
from longtask.models import TaskResult, TaskStatus
from longtask.progress import ProgressRecord
from longtask.states import TaskState
from longtask.sync_client import SyncTaskClient
from longtask.task_client import TaskClient, status_record
from longtask.task_list import TaskFilter, TaskSummary

__all__ = [
    "Checkpoint",
    "CheckpointNotFoundError",
    "NoWorkerError",
    "ProgressRecord",
    "StackUnreachableError",
    "SyncTaskClient",
    "TaskClient",
    "TaskError",
    "TaskFilter",
    "TaskIdTakenError",
    "TaskNotFoundError",
    "TaskRefusedError",
    "TaskResult",
    "TaskState",
    "TaskStatus",
    "TaskSummary",
    "UsageError",
    "list_checkpoints",
    "load_checkpoint",
    "resume_task",
    "status_record",
]
