"""LTM_TRACING=console: a worker process and `ltm` print OpenTelemetry spans for the task's
workflow, its activities and each provider call."""

from __future__ import annotations

import asyncio
import json
import re
from pathlib import Path
from typing import Any

from temporalio.client import Client

from longtask.settings import Settings
from longtask.tooling.servers import LlmServer
from longtask.tooling.worker_process import WorkerProcess
from tests.cli_runs import ltm
from tests.conftest import EXAMPLES

TRACING = {"LTM_TRACING": "console"}


def spans(text: str) -> list[dict[str, Any]]:
    """Every span the console exporter printed into ``text`` (between other log lines)."""
    decoder = json.JSONDecoder()
    found = []
    for start in (m.start() for m in re.finditer(r'^\{\n    "name": ', text, re.MULTILINE)):
        span, _ = decoder.raw_decode(text[start:])
        found.append(span)
    return found


def span_names(text: str) -> set[str]:
    return {span["name"] for span in spans(text)}


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
    printed = spans(log.read_text())
    names = {span["name"] for span in printed}
    assert {"RunWorkflow:DocumentTask", "RunActivity:process_documents"} <= names
    assert {"llm.chat", "llm.embed"} <= names
    # Each provider call is a child of the activity that made it, and names its model.
    activities = {
        span["context"]["span_id"]
        for span in printed
        if span["name"] == "RunActivity:process_documents"
    }
    calls = [span for span in printed if span["name"].startswith("llm.")]
    assert all(span["parent_id"] in activities for span in calls)
    assert {"gpt-4.1", "deepseek-v3.2"} <= {span["attributes"]["llm.model"] for span in calls}
