"""The Python client of the long task manager: what the `ltm` command does, for applications.

    tasks = await TaskClient.connect()                    # settings from LTM_* variables
    task_id = await tasks.start(["examples/"])
    async for record in tasks.watch(task_id):             # progress records until it ends
        print(record.progress)

    with SyncTaskClient.connect() as tasks:               # the same calls without asyncio
        print(tasks.status(tasks.start(["examples/"])))

    task_id = await tasks.start_task("Translate", {"folder": "book"})  # LTM_TASK_MODULES
    outcome = await tasks.outcome(task_id)                # its own result, state and cost

Expected problems raise a ``TaskError`` whose message is one line saying what to do.
"""

from longtask.agent import AgentStatus, TaskOutcome
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
from longtask.task_client import TaskClient
from longtask.task_list import TaskFilter, TaskSummary
from longtask.task_status import status_record

__all__ = [
    "AgentStatus",
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
    "TaskOutcome",
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
