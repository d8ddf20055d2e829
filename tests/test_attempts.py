"""How a step fails after provider failures: retried after the right wait, or stopped at once."""

from __future__ import annotations

import time
from datetime import timedelta

import httpx2 as httpx
import openai

from activities.attempts import AttemptLedger, ProviderFailure, handover, step_failure
from activities.errors import StreamBrokenError
from longtask.models import CallStats
from longtask.policies import ErrorKind, TimeoutPolicy

POLICY = TimeoutPolicy()
SECRET = "sk-never-shown"


def status_error(status: int, headers: dict[str, str] | None = None) -> openai.APIStatusError:
    request = httpx.Request("POST", "http://127.0.0.1/v1/chat/completions")
    response = httpx.Response(status, headers=headers or {}, request=request)
    return openai.APIStatusError(
        f"{status} from provider, key {SECRET}", response=response, body=None
    )


def failure(item: int, error: BaseException) -> ProviderFailure:
    return ProviderFailure(item, f"summarize page {item + 1}/9 of a.pdf", error, SECRET)


def server_error() -> BaseException:
    return StreamBrokenError("stream ended without a finish reason", ErrorKind.CONNECTION)


def test_retryable_failures_wait_5_10_20_then_give_up_at_the_fourth() -> None:
    ledger = AttemptLedger()
    waits = []
    for _ in range(3):
        error = step_failure([failure(2, status_error(503))], ledger, POLICY, SECRET)
        assert not error.non_retryable and error.type == "SERVER_ERROR"
        waits.append(error.next_retry_delay)
    assert waits == [timedelta(seconds=5), timedelta(seconds=10), timedelta(seconds=20)]
    assert ledger.attempt_of(2) == 3
    final = step_failure([failure(2, status_error(503))], ledger, POLICY, SECRET)
    assert final.non_retryable
    assert "gave up after 4 attempts" in final.message
    assert final.message.startswith("summarize page 3/9 of a.pdf: SERVER_ERROR: ")


def test_each_call_counts_its_own_attempts() -> None:
    ledger = AttemptLedger(failures={1: 2})
    error = step_failure(
        [failure(1, server_error()), failure(4, server_error())], ledger, POLICY, SECRET
    )
    # Call 1 is on its third failure (wait 20 s), call 4 on its first (5 s): the longest wins.
    assert error.next_retry_delay == timedelta(seconds=20)
    assert ledger.failures == {1: 3, 4: 1}


def test_non_retryable_kinds_stop_at_once_without_the_key() -> None:
    for status, kind in ((400, "INVALID_REQUEST"), (401, "AUTH_FAILED"), (403, "AUTH_FAILED")):
        error = step_failure([failure(0, status_error(status))], AttemptLedger(), POLICY, SECRET)
        assert error.non_retryable and error.type == kind
        assert SECRET not in error.message and "***" in error.message


def test_rate_limit_waits_what_the_provider_asks_without_using_attempts() -> None:
    ledger = AttemptLedger()
    asked_ms = status_error(429, {"retry-after-ms": "1500"})
    error = step_failure([failure(0, asked_ms)], ledger, POLICY, SECRET)
    assert error.type == "RATE_LIMITED" and not error.non_retryable
    assert error.next_retry_delay == timedelta(seconds=1.5)
    assert ledger.attempt_of(0) == 0 and ledger.rate_limit_waits == {0: 1}
    too_long = status_error(429, {"retry-after": "3600"})
    capped = step_failure([failure(0, too_long)], ledger, POLICY, SECRET)
    assert capped.next_retry_delay == timedelta(seconds=60)


def test_rate_limit_waits_are_bounded_then_count_as_failures() -> None:
    ledger = AttemptLedger(rate_limit_waits={0: POLICY.rate_limit_max_waits})
    error = step_failure(
        [failure(0, status_error(429, {"retry-after": "1"}))], ledger, POLICY, SECRET
    )
    assert error.next_retry_delay == timedelta(seconds=5)
    assert ledger.attempt_of(0) == 1


def test_a_setting_restores_stopping_at_the_first_429() -> None:
    strict = TimeoutPolicy(stop_on_rate_limit=True)
    error = step_failure([failure(0, status_error(429))], AttemptLedger(), strict, SECRET)
    assert error.non_retryable and error.type == "RATE_LIMITED"


def test_timeouts_are_retried_as_timeouts() -> None:
    error = step_failure([failure(0, TimeoutError())], AttemptLedger(), POLICY, SECRET)
    assert error.type == "TIMEOUT" and not error.non_retryable


def test_a_worker_shutdown_hands_over_without_a_provider_attempt() -> None:
    error = handover(3, 9, POLICY, CallStats(attempts=3, successes=3))
    assert error.type == "WORKER_SHUTDOWN" and not error.non_retryable
    assert error.next_retry_delay == timedelta(seconds=POLICY.worker_loss_retry_seconds)
    assert "3 of 9 calls done" in error.message


def test_a_server_error_never_retries_sooner_than_its_retry_after() -> None:
    error = step_failure(
        [failure(0, status_error(503, {"retry-after": "8"}))], AttemptLedger(), POLICY, SECRET
    )
    assert error.next_retry_delay == timedelta(seconds=8)


def test_a_retry_after_that_is_no_wait_falls_back_to_the_policy_wait() -> None:
    """nan, inf, a negative number or words: the provider named no usable wait."""
    for raw in ("nan", "inf", "-inf", "-5", "NaN", "soon", ""):
        for name in ("retry-after", "retry-after-ms"):
            limited = step_failure(
                [failure(0, status_error(429, {name: raw}))], AttemptLedger(), POLICY, SECRET
            )
            assert limited.next_retry_delay == timedelta(seconds=5), (name, raw)
            unavailable = step_failure(
                [failure(0, status_error(503, {name: raw}))], AttemptLedger(), POLICY, SECRET
            )
            assert unavailable.next_retry_delay == timedelta(seconds=5), (name, raw)


def test_a_usable_retry_after_ms_wins_over_a_useless_retry_after() -> None:
    headers = {"retry-after-ms": "nan", "retry-after": "2"}
    error = step_failure([failure(0, status_error(429, headers))], AttemptLedger(), POLICY, SECRET)
    assert error.next_retry_delay == timedelta(seconds=2)


def test_an_echoed_authorization_header_never_reaches_the_failure_text() -> None:
    echoed = openai.APIError(
        "invalid request: header Authorization: Bearer sk-live-abcdefghijklmnop was refused",
        request=httpx.Request("POST", "http://127.0.0.1/v1/chat/completions"),
        body=None,
    )
    one = failure(0, echoed)
    error = step_failure([one], AttemptLedger(), POLICY, SECRET)
    for text in (error.message, str(one)):
        assert "sk-live" not in text and "abcdefghijklmnop" not in text
        assert "Bearer ***" in text


async def test_a_step_taken_over_waits_out_its_last_failures_wait() -> None:
    """The ledger travels in the heartbeat details: a worker that takes the step over after
    its first one died still waits what the provider asked before it calls again."""
    ledger = AttemptLedger()
    before = time.time()
    error = step_failure([failure(0, status_error(429, {"retry-after-ms": "400"}))], ledger,
                         POLICY, SECRET)  # fmt: skip
    assert error.next_retry_delay == timedelta(seconds=0.4)
    assert before + 0.4 <= ledger.not_before <= time.time() + 0.4
    taken_over = AttemptLedger.model_validate(ledger.model_dump(mode="json"))
    await taken_over.wait_its_turn(POLICY.rate_limit_max_wait_seconds)
    assert time.time() >= taken_over.not_before
    # Against a skewed clock the wait is bounded.
    skewed = AttemptLedger(not_before=time.time() + 3600)
    waited = time.monotonic()
    await skewed.wait_its_turn(0.05)
    assert time.monotonic() - waited < 1.0
