"""With no worker on the task queue, `ltm` says how to start one instead of hanging or
staying blank."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
from pathlib import Path

from temporalio.client import Client

from longtask.settings import Settings
from longtask.states import TaskState
from longtask.task_queue import worker_count
from longtask.tooling.servers import LlmServer
from longtask.tooling.worker_process import WorkerProcess
from tests.cli_runs import LTM, ltm, one_line
from tests.conftest import EXAMPLES
from tests.tasks import slow_task_on_a_worker, wait_for_status

HINT = "no worker polls task queue"


async def test_start_status_watch_and_pause_name_the_missing_worker(
    client: Client, settings: Settings
) -> None:
    started = await ltm(settings, "start", str(EXAMPLES))
    assert started.returncode == 0, started.stderr
    task_id = started.stdout.strip()
    assert HINT in started.stderr and "make worker" in started.stderr

    status = await ltm(settings, "status", task_id)
    assert status.returncode == 1  # no worker answered and Redis has nothing yet
    assert HINT in one_line(status)

    for steer in ("pause", "resume"):
        refused = await ltm(settings, steer, task_id)
        assert refused.returncode == 1
        line = one_line(refused)
        assert HINT in line and repr(settings.task_queue) in line

    warning = await first_error_line_of_watch(settings, task_id)
    assert HINT in warning
    await client.get_workflow_handle(task_id).terminate("test over")


async def first_error_line_of_watch(settings: Settings, task_id: str) -> str:
    """`ltm watch` keeps watching; its warning comes first, then the test stops it."""
    env = {
        **os.environ,
        "LTM_TEMPORAL_ADDRESS": settings.temporal_address,
        "LTM_TASK_QUEUE": settings.task_queue,
        "LTM_REDIS_URL": settings.redis_url,
    }
    process = await asyncio.create_subprocess_exec(
        str(LTM), "watch", task_id, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
    )
    try:
        assert process.stderr is not None
        line = await asyncio.wait_for(process.stderr.readline(), timeout=60)
        return line.decode()
    finally:
        process.terminate()
        await process.wait()


async def test_a_worker_that_died_lately_is_still_listed_and_ltm_says_what_to_do(
    client: Client,
    settings: Settings,
    llm: LlmServer,
    workers: list[WorkerProcess],
    tmp_path: Path,
) -> None:
    first, handle = await slow_task_on_a_worker(
        client, settings, llm, workers, tmp_path / "docs", pages=30
    )
    first.process.send_signal(signal.SIGKILL)
    assert first.process.wait(timeout=10) == -signal.SIGKILL
    # Temporal still lists the dead worker's poller: nothing tells it from a live one yet.
    assert await worker_count(client, settings.task_queue) == 1

    # pause gives up after a bounded wait, in one line saying what to do, and the status
    # comes from the mirror with a warning that the task itself did not answer.
    paused, status = await asyncio.gather(
        ltm(settings, "pause", handle.id), ltm(settings, "status", handle.id)
    )
    assert paused.returncode == 1
    line = one_line(paused)
    assert "no worker took the pause" in line and "died lately" in line and "make worker" in line
    assert "stays asked" in line
    assert status.returncode == 0, status.stderr
    assert status.stdout.startswith(f"{handle.id}: running")
    assert "no worker answered" in one_line(status) and "Redis mirror" in one_line(status)
    warning = await first_error_line_of_watch(settings, handle.id)
    assert "no worker answered" in warning and "make worker" in warning

    # As the line says, the pause happens once a worker runs the task again.
    workers.append(WorkerProcess(settings, tmp_path / "second.log"))
    await wait_for_status(
        handle, lambda s: TaskState.PAUSED in [t.target for t in s.transitions], seconds=120
    )
    resumed = await ltm(settings, "resume", handle.id)
    assert resumed.returncode == 0, resumed.stderr
    # The slow calls only had to keep the task running until it was resumed: the rest is fast.
    llm.reset()
    assert (await handle.result()).state is TaskState.COMPLETED
