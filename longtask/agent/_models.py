"""What crosses Temporal for a user's long task: its input, outcome, status, and the requests
and results of its model, embedding and tool calls."""

from __future__ import annotations

from datetime import datetime
from typing import Any, Generic, TypeVar

from pydantic import BaseModel, ConfigDict, Field

from longtask.checkpoints import StepRecord
from longtask.cost import DEFAULT_PRICES_PER_MILLION, CostLedger, Price, TaskBudget, TokenUsage
from longtask.models import CallStats
from longtask.policies import TimeoutPolicy
from longtask.progress import ProgressNode, ProgressRecord
from longtask.states import TaskState, TaskStateMachine, Transition

ResultT = TypeVar("ResultT")

# The SPEC's task types and their timeout multipliers; a task may add its own.
DEFAULT_TASK_TYPES: dict[str, float] = {"embedding": 1.5, "reasoning": 2.0, "default": 1.0}


def default_routes() -> dict[str, str]:
    """The model each task type uses unless a call names one (the settings' routes)."""
    return {
        "embedding": "deepseek-v3.2",
        "default": "deepseek-v3.2",
        "reasoning": "gemini-2.5-flash",
    }


class AgentCarry(BaseModel):
    """What one run of a task hands to the next: continue-as-new, or a resume."""

    messages: list[dict[str, Any]] = Field(default_factory=list)
    variables: dict[str, Any] = Field(default_factory=dict)
    step_results: list[StepRecord] = Field(default_factory=list)
    machine: TaskStateMachine | None = None
    usage: TokenUsage = Field(default_factory=TokenUsage)
    ledger: CostLedger = Field(default_factory=CostLedger)
    progress: ProgressNode | None = None
    calls: int = 0
    started_at: datetime | None = None
    # Time the task ran before the run it was resumed from began: its clock goes on from it.
    elapsed_seconds: float = Field(0.0, ge=0)
    last_checkpoint_ms: int = 0
    runs: int = 1


class LongTaskInput(BaseModel):
    """The fields every long task's input has; a task's own input model extends it.

    Names of models only, never credentials: workers read the API key from their environment.
    """

    model_config = ConfigDict(allow_inf_nan=False)

    task_id: str
    # Model per task type ("embedding", "reasoning", "default", or a type the task adds).
    models: dict[str, str] = Field(default_factory=default_routes)
    # Timeout multiplier per task type: the SPEC's three plus any the task adds.
    task_types: dict[str, float] = Field(default_factory=lambda: dict(DEFAULT_TASK_TYPES))
    policy: TimeoutPolicy = Field(default_factory=TimeoutPolicy)
    heartbeat_timeout_seconds: float = Field(2.0, gt=0)
    budget: TaskBudget = Field(default_factory=TaskBudget)
    prices: dict[str, Price] = Field(default_factory=lambda: dict(DEFAULT_PRICES_PER_MILLION))
    deadline_seconds: float = Field(24 * 3600, gt=0)
    # Past this many history events, `TaskContext.continue_as_new_if_long` starts a new run.
    max_history_events: int = Field(10_000, ge=50, le=50_000)
    # ... or past this many bytes: each model call carries its conversation, so a long one
    # would otherwise grow a run's history with the square of its turns.
    max_history_bytes: int = Field(8 * 1024 * 1024, ge=10_000, le=40 * 1024 * 1024)
    search_attributes: bool = False
    carried: AgentCarry | None = None


class TaskOutcome(BaseModel, Generic[ResultT]):
    """How a long task ended: its own typed result when it completed, the bookkeeping always."""

    task_id: str
    state: TaskState
    result: ResultT | None = None
    reason: str = ""
    usage: TokenUsage = Field(default_factory=TokenUsage)
    cost_so_far: float = 0.0
    ledger: CostLedger = Field(default_factory=CostLedger)


class AgentStatus(BaseModel):
    """What the `status` query answers: the progress record, state, log, tree and cost."""

    record: ProgressRecord
    state: TaskState
    transitions: list[Transition]
    tree: ProgressNode
    usage: TokenUsage
    cost_so_far: float
    ledger: CostLedger
    calls: int
    messages: int
    variables: dict[str, Any] = Field(default_factory=dict)


class ToolCall(BaseModel):
    """A tool call a model asked for, in OpenAI's shape (arguments are JSON text)."""

    id: str
    name: str
    arguments: str = "{}"


class ModelCallRequest(BaseModel):
    """One model call: the conversation, optional tools (OpenAI format), streamed or not."""

    task_id: str
    step: str
    call: int
    task_type: str
    multiplier: float
    model: str
    messages: list[dict[str, Any]]
    tools: list[dict[str, Any]] = Field(default_factory=list)
    stream: bool = False
    policy: TimeoutPolicy


class ModelAnswer(BaseModel):
    """A model's answer: its text, the tools it wants called, and what it cost."""

    text: str
    tool_calls: list[ToolCall] = Field(default_factory=list)
    finish_reason: str = ""
    model: str = ""
    usage: TokenUsage = Field(default_factory=TokenUsage)
    ledger: CostLedger = Field(default_factory=CostLedger)
    stats: CallStats = Field(default_factory=CallStats)
    # Why the call failed for good: only in ``map_calls(..., allow_failures=True)``'s answers.
    error: str = ""

    def as_message(self) -> dict[str, Any]:
        """The assistant turn to append to the conversation."""
        message: dict[str, Any] = {"role": "assistant", "content": self.text or None}
        if self.tool_calls:
            message["tool_calls"] = [
                {"id": c.id, "type": "function",
                 "function": {"name": c.name, "arguments": c.arguments}}
                for c in self.tool_calls
            ]  # fmt: skip
        return message


class MapCallsRequest(BaseModel):
    """A batch of a long task's model calls, one activity (``TaskContext.map_calls``)."""

    task_id: str
    step: str
    # The task's number of the batch's first call; the others follow in order.
    first_call: int
    task_type: str
    multiplier: float
    model: str
    conversations: list[list[dict[str, Any]]]
    policy: TimeoutPolicy
    call_concurrency: int = Field(8, ge=1)


class MapCallsAnswer(BaseModel):
    """A batch's answers by position, the calls that failed for good, and what it all cost
    (failed attempts included)."""

    answers: dict[int, ModelAnswer] = Field(default_factory=dict)
    failed: dict[int, str] = Field(default_factory=dict)
    usage: TokenUsage = Field(default_factory=TokenUsage)
    ledger: CostLedger = Field(default_factory=CostLedger)
    stats: CallStats = Field(default_factory=CallStats)


class EmbedRequest(BaseModel):
    task_id: str
    step: str
    call: int
    model: str
    multiplier: float
    texts: list[str]
    policy: TimeoutPolicy


class EmbedAnswer(BaseModel):
    vectors: list[list[float]]
    usage: TokenUsage = Field(default_factory=TokenUsage)
    ledger: CostLedger = Field(default_factory=CostLedger)
    stats: CallStats = Field(default_factory=CallStats)


class ToolRequest(BaseModel):
    """One run of a user's tool: its arguments as the model (or the task) gave them."""

    task_id: str
    call_id: str
    arguments: dict[str, Any] = Field(default_factory=dict)
    # What the task tells every tool (e.g. the corpus it works on); JSON-able.
    context: dict[str, Any] = Field(default_factory=dict)
    # Models for tools that embed or call a model themselves.
    models: dict[str, str] = Field(default_factory=dict)
    policy: TimeoutPolicy = Field(default_factory=TimeoutPolicy)


class ToolAnswer(BaseModel):
    """A tool's output as JSON-able data, and any tokens it spent calling models."""

    output: Any = None
    usage: TokenUsage = Field(default_factory=TokenUsage)
    ledger: CostLedger = Field(default_factory=CostLedger)
