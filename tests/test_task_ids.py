"""Task ids: one rule, kept by the starter and by the workflow; checkpoints of one task only."""

from __future__ import annotations

import uuid

import pytest
from redis.asyncio import Redis
from temporalio.client import Client, WorkflowFailureError
from temporalio.exceptions import ApplicationError
from temporalio.worker import Worker

from activities.mirror import write_checkpoint_to
from longtask.checkpoint_reader import load_checkpoint
from longtask.client import TaskClient
from longtask.client_errors import UsageError
from longtask.engine.names import INVALID_TASK_ID
from longtask.models import DocumentRef, report_file_of
from longtask.settings import Settings
from longtask.task_ids import is_checkpoint_of, task_id_problem
from longtask.task_start import task_input
from tests.conftest import EXAMPLES
from tests.test_mirror_privacy import a_write
from workflows.document_task import DocumentTaskWorkflow

REFUSED = ["rc.", "rc_", "rc\n", "rc ", " rc", "-rc", "", "a b", "a/b", "é", "x" * 129]
ACCEPTED = ["rc", "r", "rc.2", "a_b-c.d", "task-0123456789ab", "x" * 128]


def test_ids_that_hide_characters_or_share_a_report_folder_are_refused() -> None:
    for refused in REFUSED:
        problem = task_id_problem(refused)
        assert problem is not None and "\n" not in problem, refused
    for accepted in ACCEPTED:
        assert task_id_problem(accepted) is None, accepted


def test_every_accepted_id_is_its_own_report_folder() -> None:
    document = DocumentRef(index=0, path="/in/a.txt", name="a.txt", sha256="", pages=1, chunks=1)
    folders = {report_file_of(task_id, document).split("/")[0] for task_id in ACCEPTED}
    assert folders == set(ACCEPTED)


def test_the_starter_refuses_a_bad_task_id(settings: Settings) -> None:
    for refused in ("rc.", "rc\n"):
        with pytest.raises(UsageError, match="task id"):
            task_input(settings, [str(EXAMPLES)], refused)
    assert task_input(settings, [str(EXAMPLES)], "rc").task_id == "rc"


def test_a_checkpoint_belongs_to_its_task_exactly() -> None:
    assert is_checkpoint_of("a_1800000000000", "a")
    assert is_checkpoint_of("a_b_1800000000000", "a_b")
    assert not is_checkpoint_of("a_b_1800000000000", "a")
    assert not is_checkpoint_of("a_", "a")
    assert not is_checkpoint_of("ab_1800000000000", "a")


async def test_resume_refuses_the_checkpoint_of_a_task_whose_id_starts_alike(
    client: Client, settings: Settings, redis: Redis
) -> None:
    owner = f"acct-{uuid.uuid4().hex[:8]}"
    other = f"{owner}_b"
    write = a_write(other)
    assert await write_checkpoint_to(redis, write, mirror_messages=True)
    foreign = write.checkpoint.id
    assert await load_checkpoint(redis, other, foreign) is not None
    assert await load_checkpoint(redis, owner, foreign) is None
    with pytest.raises(UsageError) as refused:
        await TaskClient(client, settings).resume(owner, foreign)
    message = str(refused.value)
    assert "\n" not in message and f"not one of task {owner}'s" in message


async def test_a_bad_id_started_straight_through_temporal_fails_at_once(
    client: Client, settings: Settings, worker: Worker
) -> None:
    task = task_input(settings, [str(EXAMPLES)], None)
    cases = {
        f"rc-{uuid.uuid4().hex[:6]}.": "task id",  # would share a report folder
        f"rc-{uuid.uuid4().hex[:6]}\n": "task id",  # a newline in every key and file name
    }
    for bad_id, expected in cases.items():
        with pytest.raises(WorkflowFailureError) as failed:
            await client.execute_workflow(
                DocumentTaskWorkflow.run,
                task.model_copy(update={"task_id": bad_id}),
                id=bad_id,
                task_queue=settings.task_queue,
            )
        cause = failed.value.cause
        assert isinstance(cause, ApplicationError), bad_id
        assert cause.type == INVALID_TASK_ID and cause.non_retryable
        assert expected in cause.message
    # A good id given to the task but not to its workflow: keys and history would disagree.
    mismatched = f"wf-{uuid.uuid4().hex[:8]}"
    with pytest.raises(WorkflowFailureError) as failed:
        await client.execute_workflow(
            DocumentTaskWorkflow.run, task, id=mismatched, task_queue=settings.task_queue
        )
    assert isinstance(failed.value.cause, ApplicationError)
    assert "differs from its workflow id" in failed.value.cause.message
