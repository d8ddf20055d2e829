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
    # Each provider call is a child of the activity that made it, and names its model: the
    # steps' calls under the batch, the one tiny call per model under the model check.
    calls = [span for span in printed if span["name"].startswith("llm.")]
    by_parent = {
        activity: [span for span in calls if span["parent_id"] in span_ids(printed, activity)]
        for activity in ("RunActivity:process_documents", "RunActivity:check_models")
    }
    assert sum(len(found) for found in by_parent.values()) == len(calls)
    steps = by_parent["RunActivity:process_documents"]
    assert {"gpt-4.1", "deepseek-v3.2"} <= {span["attributes"]["llm.model"] for span in steps}
    checks = {
        (s["name"], s["attributes"]["llm.model"]) for s in by_parent["RunActivity:check_models"]
    }
    assert checks == {
        ("llm.embed", settings.model_embedding),
        ("llm.chat", settings.model_intermediate),
        ("llm.chat", settings.model_reasoning),
        ("llm.chat", settings.model_final),
    }


def span_ids(printed: list[dict[str, Any]], name: str) -> set[str]:
    return {span["context"]["span_id"] for span in printed if span["name"] == name}
