"""What `ltm status --json` prints for a task: its progress record and state, then the
document agent's figures or a long task's own."""

from __future__ import annotations

from typing import Any

from longtask.agent import AgentStatus
from longtask.checkpoints import ProgressSnapshot
from longtask.models import TaskStatus


def status_record(status: TaskStatus, prices: dict[str, float] | None = None) -> dict[str, Any]:
    """The task's query answer as the JSON `ltm status --json` prints; ledger rows priced at
    the task's ``prices`` (default: the standard table)."""
    calls = {kind.value: stats.model_dump() for kind, stats in status.calls.items()}
    return {
        **status.record.model_dump(mode="json"),
        "state": status.state.value,
        "cost_so_far": status.cost_so_far,
        "documents": status.documents,
        "documents_done": status.documents_done,
        "documents_failed": status.documents_failed,
        "calls": calls,
        "ledger": [
            {**entry.model_dump(), "cost_usd": entry.cost(prices)}
            for entry in status.ledger.pipeline_rows()
        ],
    }


def agent_status_record(name: str, status: AgentStatus) -> dict[str, Any]:
    """A long task's status as `ltm status --json` prints it: the progress record and state,
    like the document agent's, then its name, cost, ledger and call counts."""
    return {
        **status.record.model_dump(mode="json"),
        "state": status.state.value,
        "task": name,
        "cost_so_far": status.cost_so_far,
        "calls_made": status.calls,
        "messages": status.messages,
        "ledger": [
            {**entry.model_dump(), "cost_usd": entry.cost()}
            for entry in status.ledger.pipeline_rows()
        ],
    }


def mirrored_record(raw: str | bytes) -> dict[str, Any]:
    """The newest progress record the Redis mirror holds (``task:{id}:checkpoint``)."""
    record = ProgressSnapshot.model_validate_json(raw).status
    return {**record.model_dump(mode="json"), "state": record.metadata.get("state", "unknown")}
