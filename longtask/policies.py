"""Timeout and retry policy as typed objects, turned into Temporal options."""

from __future__ import annotations

from datetime import timedelta
from enum import StrEnum

from pydantic import BaseModel, Field
from temporalio.common import RetryPolicy


class TaskType(StrEnum):
    """Kinds of provider call; each has a timeout multiplier."""

    EMBEDDING = "embedding"
    REASONING = "reasoning"
    DEFAULT = "default"


class StepKind(StrEnum):
    """The steps of the document agent, in order, and the task type each call belongs to."""

    EMBED = "embed"
    SUMMARIZE = "summarize"
    REASON = "reason"
    REPORT = "report"

    @property
    def task_type(self) -> TaskType:
        return _TASK_TYPE_OF_STEP[self]


_TASK_TYPE_OF_STEP = {
    StepKind.EMBED: TaskType.EMBEDDING,
    StepKind.SUMMARIZE: TaskType.DEFAULT,
    StepKind.REASON: TaskType.REASONING,
    StepKind.REPORT: TaskType.DEFAULT,
}


class ErrorKind(StrEnum):
    """Typed provider failures; the names are the ApplicationError types the retry policy sees."""

    INVALID_REQUEST = "INVALID_REQUEST"
    AUTH_FAILED = "AUTH_FAILED"
    RATE_LIMITED = "RATE_LIMITED"
    TIMEOUT = "TIMEOUT"
    SERVER_ERROR = "SERVER_ERROR"
    CONNECTION = "CONNECTION"


# Retrying these cannot help: the request or the credentials must change first.
NON_RETRYABLE_KINDS: frozenset[ErrorKind] = frozenset(
    {ErrorKind.INVALID_REQUEST, ErrorKind.AUTH_FAILED}
)


def default_multipliers() -> dict[TaskType, float]:
    return {TaskType.EMBEDDING: 1.5, TaskType.REASONING: 2.0, TaskType.DEFAULT: 1.0}


class TimeoutPolicy(BaseModel):
    """Per-attempt timeouts growing x2 up to a cap, and exponential waits between attempts."""

    base_timeout_seconds: float = Field(30.0, gt=0)
    max_timeout_seconds: float = Field(300.0, gt=0)
    max_retries: int = Field(3, ge=0)
    multipliers: dict[TaskType, float] = Field(default_factory=default_multipliers)
    backoff_first_seconds: float = Field(5.0, gt=0)
    backoff_coefficient: float = Field(2.0, ge=1.0)
    backoff_max_seconds: float = Field(60.0, gt=0)

    @property
    def max_attempts(self) -> int:
        return self.max_retries + 1

    def attempt_timeout(self, task_type: TaskType, attempt: int) -> float:
        """Timeout in seconds of attempt ``attempt`` (0-based) of a call of ``task_type``.

        ``min(int(base x multiplier x 2**attempt), cap)``; unknown types use 1.0.
        """
        multiplier = self.multipliers.get(task_type, 1.0)
        grown = self.base_timeout_seconds * multiplier * 2**attempt
        return float(min(int(grown), self.max_timeout_seconds))

    def wait_before_retry(self, attempt: int) -> float:
        """Seconds to wait after failed attempt ``attempt`` (0-based): 5, 10, 20, ... up to 60."""
        wait = self.backoff_first_seconds * self.backoff_coefficient**attempt
        return float(min(wait, self.backoff_max_seconds))

    def retry_policy(self) -> RetryPolicy:
        """The same rule as a Temporal RetryPolicy: Temporal is the only layer that retries."""
        return RetryPolicy(
            initial_interval=timedelta(seconds=self.backoff_first_seconds),
            backoff_coefficient=self.backoff_coefficient,
            maximum_interval=timedelta(seconds=self.backoff_max_seconds),
            maximum_attempts=self.max_attempts,
            non_retryable_error_types=sorted(kind.value for kind in NON_RETRYABLE_KINDS),
        )


class StepTimeouts(BaseModel):
    """Temporal activity timeouts for one step of the agent."""

    heartbeat_seconds: float = Field(gt=0)
    start_to_close_seconds: float = Field(gt=0)

    @classmethod
    def for_step(
        cls, policy: TimeoutPolicy, kind: StepKind, calls: int, concurrency: int, heartbeat: float
    ) -> StepTimeouts:
        """Room for every call of the step to use its longest attempt, ``concurrency`` at a time.

        A hung call is cut by its own per-attempt timeout and a dead worker by the heartbeat
        timeout, so this bound only stops a step that is alive but never ends.
        """
        waves = -(-max(calls, 1) // max(concurrency, 1))
        longest = policy.attempt_timeout(kind.task_type, policy.max_retries)
        return cls(heartbeat_seconds=heartbeat, start_to_close_seconds=waves * longest + 60)
