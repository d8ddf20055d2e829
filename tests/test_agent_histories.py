"""Committed histories of the long tasks (the research agent, the example task, a map over
many items) replay with the current code, cover their paths, and hold no API key."""

from __future__ import annotations

import base64
import json
from pathlib import Path

import pytest
from temporalio.client import WorkflowHistory
from temporalio.worker import Replayer

from bench.map_task import BenchMap
from examples.translate import Translate
from longtask.payload_store import data_converter
from tests.conftest import PAYLOAD_THRESHOLD, TEST_API_KEY
from tests.record_history import holds_secret
from workflows.research import ResearchTask

HISTORIES = Path(__file__).parent / "histories" / "agents"


def load(path: Path) -> WorkflowHistory:
    """The history under its own workflow id: a long task checks that it is its task id."""
    events = json.loads(path.read_text())["events"]
    payload = events[0]["workflowExecutionStartedEventAttributes"]["input"]["payloads"][0]
    task_id = json.loads(base64.b64decode(payload["data"]))["task_id"]
    return WorkflowHistory.from_json(task_id, {"events": events})


def activities_of(path: Path) -> set[str]:
    return {
        event["activityTaskScheduledEventAttributes"]["activityType"]["name"]
        for event in json.loads(path.read_text())["events"]
        if "activityTaskScheduledEventAttributes" in event
    }


@pytest.mark.parametrize("path", sorted(HISTORIES.glob("*.json")), ids=lambda path: path.stem)
async def test_committed_agent_histories_replay(path: Path, tmp_path: Path) -> None:
    # Recorded with the payload store's converter; every payload of these is small and inline.
    converter = data_converter(tmp_path, PAYLOAD_THRESHOLD)
    replayer = Replayer(workflows=[ResearchTask, Translate, BenchMap], data_converter=converter)
    result = await replayer.replay_workflow(load(path))
    assert result.replay_failure is None, path.name
    assert not holds_secret(load(path), TEST_API_KEY)


def test_committed_agent_histories_cover_models_tools_and_the_final_checkpoint() -> None:
    research = activities_of(HISTORIES / "research-completed.json")
    assert {"agent.call_model", "tool.index_corpus", "tool.search_corpus"} <= research
    assert "write_checkpoint" in research
    translate = activities_of(HISTORIES / "translate-completed.json")
    assert {"agent.call_model", "tool.list_chapters", "tool.read_chapter"} <= translate


def markers_of(path: Path) -> list[str]:
    return [
        json.loads(base64.b64decode(event["markerRecordedEventAttributes"]["details"]["patch-data"]
                                    ["payloads"][0]["data"]))["id"]
        for event in json.loads(path.read_text())["events"]
        if event.get("markerRecordedEventAttributes", {}).get("markerName") == "core_patch"
    ]  # fmt: skip


def test_runs_on_the_engines_cadence_and_a_retried_batch_of_calls_are_covered() -> None:
    # Recorded under load (tests/record_agent_history.py): older runs have no cadence patch.
    for name in ("research-cadence", "translate-cadence", "map-calls-retry"):
        assert "long-task-cadence" in markers_of(HISTORIES / f"{name}.json"), name
    assert "long-task-cadence" not in markers_of(HISTORIES / "research-completed.json")
    events = json.loads((HISTORIES / "map-calls-retry.json").read_text())["events"]
    attempts = [
        event["activityTaskStartedEventAttributes"].get("attempt", 1)
        for event in events
        if "activityTaskStartedEventAttributes" in event
    ]
    assert "agent.call_models" in activities_of(HISTORIES / "map-calls-retry.json")
    assert max(attempts) >= 2  # the batch with the failed call ran again
