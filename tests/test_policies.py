"""The timeout and retry numbers, pinned at their defaults."""

from __future__ import annotations

from datetime import timedelta

from longtask.policies import (
    HANG_LIMITS,
    NON_RETRYABLE_KINDS,
    ErrorKind,
    HangLimits,
    StepKind,
    StepTimeouts,
    TaskType,
    TimeoutPolicy,
)

POLICY = TimeoutPolicy()


def timeouts(task_type: TaskType) -> list[float]:
    return [POLICY.attempt_timeout(task_type, a) for a in range(POLICY.max_attempts)]


def test_attempt_timeouts_grow_and_cap_at_300() -> None:
    assert timeouts(TaskType.REASONING) == [60, 120, 240, 300]
    assert timeouts(TaskType.EMBEDDING) == [45, 90, 180, 300]
    assert timeouts(TaskType.DEFAULT) == [30, 60, 120, 240]


def test_unknown_task_type_uses_multiplier_one() -> None:
    policy = TimeoutPolicy(multipliers={TaskType.REASONING: 2.0})
    assert policy.attempt_timeout(TaskType.EMBEDDING, 0) == 30


def test_waits_between_attempts_are_5_10_20_capped_at_60() -> None:
    assert [POLICY.wait_before_retry(a) for a in range(3)] == [5, 10, 20]
    assert POLICY.wait_before_retry(10) == 60
    assert POLICY.max_attempts == 4


def test_temporal_retry_policy_hands_lost_workers_over_at_once() -> None:
    retry = POLICY.retry_policy()
    # Provider failures set their own wait (next_retry_delay); this interval is a lost worker's:
    # the shortest timer a server with the stack's tuning fires on time (shorter ones come later).
    assert retry.initial_interval == timedelta(seconds=0.1)
    assert retry.backoff_coefficient == 1.0
    # 4 provider attempts + 6 rate-limit waits + 10 lost workers, at the most.
    assert retry.maximum_attempts == 20
    assert sorted(retry.non_retryable_error_types or []) == ["AUTH_FAILED", "INVALID_REQUEST"]


def test_calls_are_retried_until_their_own_attempts_are_used_up() -> None:
    retry = POLICY.calls_retry_policy()
    # No cap: lost workers and missed heartbeats never fail a document; the ledger does.
    assert retry.maximum_attempts == 0
    assert retry.initial_interval == timedelta(seconds=0.1)
    assert retry.backoff_coefficient == 1.0
    assert sorted(retry.non_retryable_error_types or []) == ["AUTH_FAILED", "INVALID_REQUEST"]


def test_the_first_chunk_limit_is_the_same_on_every_attempt_within_its_timeout() -> None:
    limits = [POLICY.first_chunk_limit(TaskType.REASONING, a, 50) for a in range(4)]
    assert limits == [50, 50, 50, 50]
    tight = TimeoutPolicy(base_timeout_seconds=1)
    assert tight.first_chunk_limit(TaskType.DEFAULT, 0, 2) == 1  # never past the attempt's timeout


def test_hang_limits_fit_each_task_type_and_are_not_the_heartbeat() -> None:
    # A reasoning model may think for tens of seconds; no limit is a 2 s heartbeat timeout.
    assert POLICY.configured_hang_limits(TaskType.REASONING, "o3") == HangLimits(
        first_chunk_seconds=50, silence_seconds=30
    )
    assert POLICY.configured_hang_limits(TaskType.DEFAULT, "x").first_chunk_seconds == 30
    assert POLICY.configured_hang_limits(TaskType.EMBEDDING, "x").first_chunk_seconds == 20
    assert min(h.first_chunk_seconds for h in HANG_LIMITS.values()) >= 20


def test_a_model_entry_wins_over_its_task_type() -> None:
    slow = HangLimits(first_chunk_seconds=120, silence_seconds=40)
    quick = HangLimits(first_chunk_seconds=5, silence_seconds=5)
    policy = TimeoutPolicy(hang_limits={"o3": slow, "reasoning": quick})
    assert policy.configured_hang_limits(TaskType.REASONING, "o3") == slow
    assert policy.configured_hang_limits(TaskType.REASONING, "gemini-2.5-flash") == quick
    assert policy.configured_hang_limits(TaskType.DEFAULT, "gemini-2.5-flash").silence_seconds == 20


def test_a_learned_limit_is_one_and_a_half_times_the_p99_plus_5_s_within_bounds() -> None:
    # Nothing known yet: the configured limit.
    assert POLICY.learned_limit(30, None) == 30
    # A fast model (p99 0.3 s): stalls caught at the 10 s floor.
    assert POLICY.learned_limit(30, 0.3) == 10
    # A p99 of 10 s: 20 s; of 30 s: 50 s.
    assert POLICY.learned_limit(30, 10) == 20
    assert POLICY.learned_limit(50, 30) == 50
    # A slow one (p99 100 s): widened, at most 4 x the configured limit.
    assert POLICY.learned_limit(30, 100) == 120
    # A configured limit under the floor is the floor; learning may still widen it.
    assert POLICY.learned_limit(2, 0.01) == 5.015
    assert TimeoutPolicy(learn_hang_limits=False).learned_limit(30, 0.3) == 30


def test_only_invalid_requests_and_auth_failures_stop_at_once() -> None:
    assert {ErrorKind.INVALID_REQUEST, ErrorKind.AUTH_FAILED} == NON_RETRYABLE_KINDS
    retryable = set(ErrorKind) - NON_RETRYABLE_KINDS
    assert retryable == {
        ErrorKind.RATE_LIMITED,
        ErrorKind.TIMEOUT,
        ErrorKind.SERVER_ERROR,
        ErrorKind.CONNECTION,
    }


def test_step_kinds_map_to_task_types() -> None:
    assert StepKind.EMBED.task_type is TaskType.EMBEDDING
    assert StepKind.REASON.task_type is TaskType.REASONING
    assert StepKind.SUMMARIZE.task_type is TaskType.DEFAULT
    assert StepKind.REPORT.task_type is TaskType.DEFAULT


def test_step_budget_lets_every_call_use_its_longest_attempt() -> None:
    budget = StepTimeouts.for_step(POLICY, StepKind.SUMMARIZE, calls=20, concurrency=8, heartbeat=2)
    # 3 waves of 8 calls, each allowed 240 s on its last attempt, plus a minute of slack.
    assert budget.start_to_close_seconds == 3 * 240 + 60
    assert budget.heartbeat_seconds == 2
