"""Timeout and retry policy as typed objects, turned into Temporal options."""

from __future__ import annotations

from datetime import timedelta
from enum import StrEnum

from pydantic import BaseModel, ConfigDict, Field, PositiveInt
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
# Failures no other document can escape (a refused key): the whole task stops at the first.
STOP_TASK_KINDS: frozenset[str] = frozenset({ErrorKind.AUTH_FAILED.value})


def default_multipliers() -> dict[TaskType, float]:
    return {TaskType.EMBEDDING: 1.5, TaskType.REASONING: 2.0, TaskType.DEFAULT: 1.0}


class TimeoutPolicy(BaseModel):
    """Per-attempt timeouts growing x2 up to a cap, and exponential waits between attempts.

    Attempts here are provider attempts of one call. A worker that dies or shuts down is not a
    provider failure: its step is handed to another worker after ``worker_loss_retry_seconds``
    and uses up none of the call's attempts nor waits its backoff.
    """

    base_timeout_seconds: float = Field(30.0, gt=0)
    max_timeout_seconds: float = Field(300.0, gt=0)
    max_retries: int = Field(3, ge=0)
    multipliers: dict[TaskType, float] = Field(default_factory=default_multipliers)
    backoff_first_seconds: float = Field(5.0, gt=0)
    backoff_coefficient: float = Field(2.0, ge=1.0)
    backoff_max_seconds: float = Field(60.0, gt=0)
    # A call that sends nothing for this long is hung: cut and retried. The first chunk may take
    # longer on later attempts (x2 each, up to the attempt's timeout) for slow-thinking models.
    stall_seconds: float = Field(2.0, gt=0)
    # 429: wait what the provider asks, at most this long; or stop at once, as the article did.
    rate_limit_max_wait_seconds: float = Field(60.0, gt=0)
    rate_limit_max_waits: int = Field(6, ge=0)
    stop_on_rate_limit: bool = False
    worker_loss_retry_seconds: float = Field(0.2, gt=0)
    max_worker_losses: int = Field(10, ge=0)

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

    def first_chunk_limit(self, task_type: TaskType, attempt: int) -> float:
        """How long attempt ``attempt`` may wait for a first answer before it counts as hung."""
        grown = float(self.stall_seconds * 2**attempt)
        return min(grown, self.attempt_timeout(task_type, attempt))

    def retry_policy(self) -> RetryPolicy:
        """Temporal's side of the rule.

        Provider failures set their own wait (5, 10, 20 s, or the provider's Retry-After) through
        ``next_retry_delay`` and are counted per call in heartbeat details, so the policy's own
        interval is the short one a lost worker gets. Its attempt cap bounds everything at once.
        """
        return RetryPolicy(
            initial_interval=timedelta(seconds=self.worker_loss_retry_seconds),
            backoff_coefficient=1.0,
            maximum_attempts=self.max_attempts + self.rate_limit_max_waits + self.max_worker_losses,
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


class ModelQuota(BaseModel):
    """A provider's per-minute limits for one model; None means not limited."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    rpm: PositiveInt | None = None
    tpm: PositiveInt | None = None
