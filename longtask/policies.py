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


class HangLimits(BaseModel):
    """How long a healthy provider may keep a call silent: before its first chunk (for an
    embedding, its whole answer) and between two chunks of a stream."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    first_chunk_seconds: float = Field(gt=0)
    silence_seconds: float = Field(gt=0)


# Limits no healthy provider trips, with room over the long tails real models show (time to
# first token, p99: ~5 s for an embedding batch, ~10 s for a chat answer, ~30 s for a reasoning
# model that thinks first; pauses mid-stream of a few seconds). They find hung calls, not dead
# workers: that is the heartbeat timeout's job, and the two are never tied together.
HANG_LIMITS: dict[TaskType, HangLimits] = {
    TaskType.EMBEDDING: HangLimits(first_chunk_seconds=20, silence_seconds=20),
    TaskType.DEFAULT: HangLimits(first_chunk_seconds=30, silence_seconds=20),
    TaskType.REASONING: HangLimits(first_chunk_seconds=50, silence_seconds=30),
}


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
    # Hang limits by model name or task type over the built-in HANG_LIMITS; a model's own entry
    # wins. They are the same on every attempt, never past the attempt's timeout: a live
    # provider answers within them whatever the attempt, and what a slower model needs is learned.
    hang_limits: dict[str, HangLimits] = Field(default_factory=dict)
    # Each model's limits follow what its answers show (activities/latency.py): 1.5 x the p99
    # observed + 5 s, never under ``learned_floor_seconds`` (or the configured limit, if lower)
    # nor over ``learned_ceiling_factor`` x the configured limit.
    learn_hang_limits: bool = True
    learned_margin: float = Field(1.5, ge=1.0)
    learned_slack_seconds: float = Field(5.0, ge=0)
    learned_floor_seconds: float = Field(10.0, gt=0)
    learned_ceiling_factor: float = Field(4.0, ge=1.0)
    # 429: wait what the provider asks, at most this long; or stop at once, as the article did.
    rate_limit_max_wait_seconds: float = Field(60.0, gt=0)
    rate_limit_max_waits: int = Field(6, ge=0)
    stop_on_rate_limit: bool = False
    # 0.1 s: the shortest retry a server with timerProcessorMaxTimeShift=100ms fires on time
    # (0.11 s measured; asked for 0.05 or 0.01 s it fires after 0.17-0.25 s).
    worker_loss_retry_seconds: float = Field(0.1, gt=0)
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

    def configured_hang_limits(self, task_type: TaskType, model: str) -> HangLimits:
        """The model's own limits if set, else its task type's, else the built-in ones."""
        return (
            self.hang_limits.get(model)
            or self.hang_limits.get(task_type.value)
            or HANG_LIMITS.get(task_type, HANG_LIMITS[TaskType.DEFAULT])
        )

    def learned_limit(self, configured: float, observed_p99: float | None) -> float:
        """A limit learned from the p99 of a model's observed times, within bounds around the
        configured one; the configured limit while nothing is known."""
        if not self.learn_hang_limits or observed_p99 is None:
            return configured
        floor = min(self.learned_floor_seconds, configured)
        ceiling = configured * self.learned_ceiling_factor
        learned = observed_p99 * self.learned_margin + self.learned_slack_seconds
        return min(max(learned, floor), ceiling)

    def first_chunk_limit(self, task_type: TaskType, attempt: int, seconds: float) -> float:
        """How long attempt ``attempt`` may wait for a first chunk whose limit is ``seconds``:
        that long, never past the attempt's timeout.

        It does not grow per attempt as the attempt's timeout does: a true stall on a retry
        must be caught as soon as on the first attempt."""
        return min(float(seconds), self.attempt_timeout(task_type, attempt))

    def retry_policy(self) -> RetryPolicy:
        """Temporal's side of the rule, for the short activities that make no provider call.

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

    def calls_retry_policy(self) -> RetryPolicy:
        """Temporal's side of the rule for activities that call the provider.

        No attempt cap: a Temporal attempt also ends when a worker dies, shuts down or misses a
        heartbeat, and none of those may fail a document while workers are up. What fails a
        call is its own provider attempts (at most ``max_attempts``) and rate-limit waits, kept
        per call in heartbeat details; past them the activity fails for good by itself.
        """
        return RetryPolicy(
            initial_interval=timedelta(seconds=self.worker_loss_retry_seconds),
            backoff_coefficient=1.0,
            maximum_attempts=0,
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
