"""Each expected error of `ltm`: one line saying what is wrong and what to do, a non-zero exit."""

from __future__ import annotations

import uuid

from temporalio.client import Client
from temporalio.worker import Worker

from longtask.settings import Settings
from longtask.tooling.servers import LlmServer, free_port
from tests.cli_runs import ltm, one_line, run_ltm
from tests.conftest import EXAMPLES
from tests.tasks import start, wait_for_status


def test_an_unknown_task_id_is_named(settings: Settings) -> None:
    for command in ("status", "watch", "pause", "resume", "cancel", "checkpoints"):
        done = run_ltm(settings, command, "no-such-task")
        assert done.returncode == 1, command
        assert "no task no-such-task" in one_line(done), command


def test_a_stack_that_is_not_running_is_named() -> None:
    address = f"127.0.0.1:{free_port()}"  # nothing listens there
    settings = Settings(temporal_address=address)
    done = run_ltm(settings, "status", "some-task")
    assert done.returncode == 1
    line = one_line(done)
    assert f"cannot reach Temporal at {address}" in line and "make up" in line


async def test_an_update_the_state_machine_refuses_gives_its_reason(
    client: Client, settings: Settings, worker: Worker, llm: LlmServer
) -> None:
    llm.add({"type": "delay", "seconds": 2, "times": None})  # still running when refused
    task, handle = await start(client, settings, [EXAMPLES])
    await wait_for_status(handle, lambda s: s.record.total > 0)
    refused = await ltm(settings, "resume", task.task_id)
    assert refused.returncode == 1
    assert f"task {task.task_id}: a running task is not paused" in one_line(refused)
    await handle.cancel()


async def test_cancel_of_an_ended_task_is_refused(
    client: Client, settings: Settings, worker: Worker, llm: LlmServer
) -> None:
    task, handle = await start(client, settings, [EXAMPLES / "incident-postmortem.txt"])
    await handle.result()
    refused = await ltm(settings, "cancel", task.task_id)
    assert refused.returncode == 1
    assert "has already ended (completed); nothing to cancel" in one_line(refused)
    paused = await ltm(settings, "pause", task.task_id)
    assert paused.returncode == 1
    assert "has ended (completed); it cannot pause" in one_line(paused)


async def test_a_task_id_in_use_needs_an_explicit_new_run(
    client: Client, settings: Settings, worker: Worker, llm: LlmServer
) -> None:
    task_id = f"minutes-{uuid.uuid4().hex[:6]}"
    document = str(EXAMPLES / "incident-postmortem.txt")
    first = await ltm(settings, "start", document, "--task-id", task_id)
    assert first.returncode == 0, first.stderr
    await client.get_workflow_handle(task_id).result()

    again = await ltm(settings, "start", document, "--task-id", task_id)
    assert again.returncode == 1
    line = one_line(again)
    assert f"task id {task_id} was used" in line and "--new-run" in line

    llm.add({"type": "delay", "seconds": 1, "times": None})  # the new run stays running
    fresh = await ltm(settings, "start", document, "--task-id", task_id, "--new-run")
    assert fresh.returncode == 0, fresh.stderr
    running = await ltm(settings, "start", document, "--task-id", task_id, "--new-run")
    assert running.returncode == 1
    assert f"task id {task_id} is taken by a running task" in one_line(running)
    await client.get_workflow_handle(task_id).cancel()


async def test_resume_from_a_checkpoint_that_is_not_there(
    client: Client, settings: Settings, worker: Worker, llm: LlmServer
) -> None:
    task, handle = await start(client, settings, [EXAMPLES / "incident-postmortem.txt"])
    await handle.cancel()
    ended = await ltm(settings, "watch", task.task_id)
    assert ended.returncode == 1
    missing = f"{task.task_id}_1"
    refused = await ltm(settings, "resume", task.task_id, "--checkpoint", missing)
    assert refused.returncode == 1
    line = one_line(refused)
    assert f"checkpoint {missing} is not in Redis" in line
    assert f"ltm checkpoints {task.task_id}" in line


def test_a_bad_state_filter_is_refused_before_connecting(settings: Settings) -> None:
    done = run_ltm(settings, "list", "--state", "sleeping")
    assert done.returncode == 2
    assert "invalid choice: 'sleeping'" in done.stderr


def test_a_list_limit_below_one_is_refused(settings: Settings) -> None:
    done = run_ltm(settings, "list", "--limit", "0")
    assert done.returncode == 2
    assert "--limit 0: give 1 or more" in one_line(done)


async def test_a_redis_that_is_not_running_is_named(client: Client, settings: Settings) -> None:
    task, handle = await start(client, settings, [EXAMPLES])  # no worker: it stays pending
    away = f"redis://127.0.0.1:{free_port()}/0"
    done = await ltm(settings, "checkpoints", task.task_id, extra_env={"LTM_REDIS_URL": away})
    assert done.returncode == 1
    line = one_line(done)
    assert f"cannot reach Redis at {away}" in line and "make up" in line
    await handle.terminate("test over")
