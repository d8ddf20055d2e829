"""With no worker on the task queue, `ltm` says how to start one instead of hanging or
staying blank."""

from __future__ import annotations

import asyncio
import os
import subprocess

from temporalio.client import Client

from longtask.settings import Settings
from tests.cli_runs import LTM, ltm, one_line
from tests.conftest import EXAMPLES

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

    paused = await ltm(settings, "pause", task_id)
    assert paused.returncode == 1
    line = one_line(paused)
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
