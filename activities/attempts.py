"""Provider attempts of each call of a step, and how a step fails: at once, or retried later.

The ledger lives in heartbeat details, so it survives retries and workers: a call's attempt
count grows only with its own provider failures, never with a lost worker.
"""

from __future__ import annotations

import asyncio
import logging
import time
from datetime import timedelta

from pydantic import BaseModel, Field
from temporalio.exceptions import ApplicationError, ApplicationErrorCategory

from activities.errors import kind_of, provider_message, retry_after_seconds
from longtask.engine.names import WORKER_SHUTDOWN
from longtask.models import CallStats
from longtask.policies import NON_RETRYABLE_KINDS, ErrorKind, TimeoutPolicy

# Expected failures (a timeout, a 429, a 5xx, a cut stream) are one line each here; the SDK
# logs them at debug level only (BENIGN), so a traceback in the log always means a bug.
log = logging.getLogger("activities.calls")


class ProviderFailure(Exception):
    """One failed provider call of a step, with what it was doing; its text (``str``) has
    the API key blanked, so it may be mirrored or logged."""

    def __init__(self, item: int, where: str, error: BaseException, secret: str) -> None:
        super().__init__(f"{where}: {provider_message(error, secret)}")
        self.item = item
        self.where = where
        self.error = error
        self.kind = kind_of(error)


class AttemptLedger(BaseModel):
    """Per call (by item index): provider failures so far and rate-limit waits so far."""

    failures: dict[int, int] = Field(default_factory=dict)
    rate_limit_waits: dict[int, int] = Field(default_factory=dict)
    stats: CallStats = Field(default_factory=CallStats)
    # Wall-clock time (epoch seconds) before which no call of the step starts again: its last
    # failure's backoff or the provider's Retry-After. In the heartbeat details, so a worker
    # that takes the step over (its first one died) waits it out too, instead of asking the
    # provider sooner than it said.
    not_before: float = 0.0

    async def wait_its_turn(self, most_seconds: float) -> None:
        """Sleep until ``not_before`` (at most ``most_seconds``, against skewed clocks)."""
        wait = min(self.not_before - time.time(), most_seconds)
        if wait > 0:
            await asyncio.sleep(wait)

    def attempt_of(self, item: int) -> int:
        """0-based provider attempt the next call of ``item`` makes."""
        return self.failures.get(item, 0)

    @property
    def has_failures(self) -> bool:
        return any(self.failures.values()) or any(self.rate_limit_waits.values())


def _message(failure: ProviderFailure, secret: str, note: str = "") -> str:
    return f"{failure.where}: {failure.kind.value}: {provider_message(failure.error, secret)}{note}"


def step_failure(
    failures: list[ProviderFailure], ledger: AttemptLedger, policy: TimeoutPolicy, secret: str
) -> ApplicationError:
    """Book each failed call, then say how the step fails.

    Non-retryable kinds and calls out of attempts fail the step for good. Otherwise it is
    retried after the longest wait any failed call needs: its backoff (5, 10, 20 s) or the
    provider's Retry-After, bounded.
    """
    waits: list[float] = []
    fatal: tuple[ProviderFailure, str] | None = None
    # Per failure, which of its allowances it used: said in the log line and the message.
    counted: list[tuple[ProviderFailure, str]] = []
    for failure in failures:
        item = failure.item
        waited = ledger.rate_limit_waits.get(item, 0)
        may_wait = not policy.stop_on_rate_limit and waited < policy.rate_limit_max_waits
        if failure.kind is ErrorKind.RATE_LIMITED and may_wait:
            ledger.rate_limit_waits[item] = waited + 1
            asked = retry_after_seconds(failure.error)
            wait = policy.wait_before_retry(0) if asked is None else asked
            waits.append(min(wait, policy.rate_limit_max_wait_seconds))
            counted.append(
                (failure, f"rate-limit wait {waited + 1} of {policy.rate_limit_max_waits}")
            )
            continue
        stop_now = failure.kind in NON_RETRYABLE_KINDS or (
            failure.kind is ErrorKind.RATE_LIMITED and policy.stop_on_rate_limit
        )
        if stop_now:
            fatal = fatal or (failure, "")
            counted.append((failure, "not retryable"))
            continue
        ledger.failures[item] = ledger.failures.get(item, 0) + 1
        failed = ledger.failures[item]
        counted.append((failure, f"call attempt {failed} of {policy.max_attempts}"))
        if failed >= policy.max_attempts:
            fatal = fatal or (failure, f" (gave up after {failed} attempts)")
        else:
            # A 503 often names its own Retry-After: never retry sooner than the provider asks.
            asked = retry_after_seconds(failure.error) or 0.0
            backoff = policy.wait_before_retry(failed - 1)
            waits.append(max(backoff, min(asked, policy.rate_limit_max_wait_seconds)))
    details = ledger.stats.model_dump()
    if fatal is not None:
        for failure, used in counted:
            then = "given up" if failure is fatal[0] else "stopped with it"
            _log_line(failure, used, then, secret)
        failure, note = fatal
        return ApplicationError(
            _message(failure, secret, note),
            details,
            type=failure.kind.value,
            non_retryable=True,
            category=ApplicationErrorCategory.BENIGN,
        )
    wait = max(waits)
    ledger.not_before = time.time() + wait
    for failure, used in counted:
        _log_line(failure, used, f"retry in {wait:g} s", secret)
    first, used = counted[0]
    return ApplicationError(
        _message(first, secret, f" ({used}; retry in {wait:g} s)"),
        details,
        type=first.kind.value,
        next_retry_delay=timedelta(seconds=wait),
        category=ApplicationErrorCategory.BENIGN,
    )


def _log_line(failure: ProviderFailure, used: str, then: str, secret: str) -> None:
    """One line per failed call: where (step, document), what, which attempt, what next."""
    said = provider_message(failure.error, secret).splitlines()[0][:160]
    log.warning("%s: %s: %s (%s; %s)", failure.where, failure.kind.value, said, used, then)


def handover(
    done: int, total: int, policy: TimeoutPolicy, stats: CallStats, why: str = ""
) -> ApplicationError:
    """The step stops before its last call: its worker shuts down, or another step of the
    same activity met a rate limit. It is taken up again at once, by this or another worker."""
    why = why or "worker shutting down"
    return ApplicationError(
        f"{why}: handed over with {done} of {total} calls done",
        stats.model_dump(),
        type=WORKER_SHUTDOWN,
        next_retry_delay=timedelta(seconds=policy.worker_loss_retry_seconds),
        category=ApplicationErrorCategory.BENIGN,
    )
