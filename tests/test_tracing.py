"""LTM_TRACING=console: a worker process and `ltm` print OpenTelemetry spans for the task's
workflow, its activities and each provider call."""

from __future__ import annotations

import asyncio
import json
import re
from pathlib import Path

from temporalio.client import Client

from longtask.settings import Settings
from tests.cli_runs import ltm
from tests.conftest import EXAMPLES
from tests.servers import LlmServer
from tests.workers import WorkerProcess

TRACING = {"LTM_TRACING": "console"}


def span_names(text: str) -> set[str]:
    return set(re.findall(r'^    "name": "([^"]+)",$', text, re.MULTILINE))


async def test_spans_for_the_task_its_activities_and_provider_calls(
    client: Client,
    settings: Settings,
    llm: LlmServer,
    workers: list[WorkerProcess],
    tmp_path: Path,
) -> None:
    log = tmp_path / "worker.log"
    workers.append(WorkerProcess(settings, log, extra_env=TRACING))
    started = await ltm(
        settings, "start", str(EXAMPLES / "incident-postmortem.txt"), extra_env=TRACING
    )
    assert started.returncode == 0, started.stderr
    task_id = started.stdout.strip()
    assert "StartWorkflow:DocumentTask" in span_names(started.stderr)

    await asyncio.wait_for(client.get_workflow_handle(task_id).result(), timeout=120)
    workers.pop().stop()  # stopped, so every span is written
    names = span_names(log.read_text())
    assert {"RunWorkflow:DocumentTask", "RunActivity:process_documents"} <= names
    assert {"llm.chat", "llm.embed"} <= names
    # A provider call's span names its model.
    assert '"llm.model": "gpt-4.1"' in log.read_text()
    # Each span the worker printed is JSON of its own.
    first = log.read_text().index("{\n")
    json.JSONDecoder().raw_decode(log.read_text()[first:])
