"""Committed histories of the long tasks (the research agent, the example task) replay with
the current code, cover their tools, and hold no API key."""

from __future__ import annotations

import base64
import json
from pathlib import Path

import pytest
from temporalio.client import WorkflowHistory
from temporalio.worker import Replayer

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
    replayer = Replayer(workflows=[ResearchTask, Translate], data_converter=converter)
    result = await replayer.replay_workflow(load(path))
    assert result.replay_failure is None, path.name
    assert not holds_secret(load(path), TEST_API_KEY)


def test_committed_agent_histories_cover_models_tools_and_the_final_checkpoint() -> None:
    research = activities_of(HISTORIES / "research-completed.json")
    assert {"agent.call_model", "tool.index_corpus", "tool.search_corpus"} <= research
    assert "write_checkpoint" in research
    translate = activities_of(HISTORIES / "translate-completed.json")
    assert {"agent.call_model", "tool.list_chapters", "tool.read_chapter"} <= translate
