"""Whether any worker polls a task queue: without one a task waits and updates never answer."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from temporalio.api.enums.v1 import TaskQueueType
from temporalio.api.taskqueue.v1 import TaskQueue
from temporalio.api.workflowservice.v1 import DescribeTaskQueueRequest
from temporalio.client import Client

# The server lists a poller for minutes after its worker went away. A live worker polls again
# at least every minute or so (a long poll lasts about 60 s), so one silent for longer is gone.
POLLER_FRESH = timedelta(seconds=90)


async def worker_count(client: Client, task_queue: str) -> int:
    """How many workers polled ``task_queue`` for workflow tasks lately."""
    answer = await client.workflow_service.describe_task_queue(
        DescribeTaskQueueRequest(
            namespace=client.namespace,
            task_queue=TaskQueue(name=task_queue),
            task_queue_type=TaskQueueType.TASK_QUEUE_TYPE_WORKFLOW,
        )
    )
    now = datetime.now(UTC)
    fresh = {
        poller.identity
        for poller in answer.pollers
        if not poller.HasField("last_access_time")
        or now - poller.last_access_time.ToDatetime(tzinfo=UTC) <= POLLER_FRESH
    }
    return len(fresh)
