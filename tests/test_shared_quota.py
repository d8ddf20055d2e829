"""Two worker processes, two tasks, one provider quota: paced together through Redis."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from pathlib import Path

import pytest
from temporalio.client import Client

from longtask.models import ModelRoute
from longtask.settings import Settings
from longtask.states import TaskState
from longtask.tooling.corpus import write_corpus
from longtask.tooling.servers import LlmServer
from longtask.tooling.worker_process import WorkerProcess
from tests.tasks import start

MODEL = "deepseek-v3.2"
RPM = 60


@pytest.fixture(scope="module")
def quota_llm() -> Iterator[LlmServer]:
    # The server's quota counts every model of one key together; the tasks use one model.
    with LlmServer("--rpm", str(RPM)) as server:
        yield server


async def test_two_workers_share_a_quota_without_exceeding_it(
    client: Client,
    settings: Settings,
    quota_llm: LlmServer,
    workers: list[WorkerProcess],
    tmp_path: Path,
) -> None:
    quota_llm.reset()
    on_quota = settings.model_copy(update={"llm_base_url": quota_llm.base_url})
    limits = {"LTM_RATE_LIMITS": json.dumps({MODEL: {"rpm": RPM}})}
    for name in ("first", "second"):
        workers.append(WorkerProcess(on_quota, tmp_path / f"{name}.log", extra_env=limits))
    one_model = ModelRoute(embedding=MODEL, intermediate=MODEL, reasoning=MODEL, final=MODEL)
    # 2 tasks x 9 one-page documents x 4 calls = 72 calls against a bucket of 60.
    handles = []
    for name in ("a", "b"):
        write_corpus(tmp_path / name, 9, seed=len(name) + ord(name))
        _task, handle = await start(client, on_quota, [tmp_path / name], models=one_model)
        handles.append(handle)
    results = await asyncio.wait_for(asyncio.gather(*(h.result() for h in handles)), 120)

    assert all(result.state is TaskState.COMPLETED for result in results)
    served = quota_llm.requests()
    assert len(served) >= 72
    refused = [r for r in served if r["status"] == 429]
    assert len(refused) <= 1, f"{len(refused)} calls refused: the workers did not share the quota"
