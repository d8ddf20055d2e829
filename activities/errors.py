"""One classifier from provider outcomes to typed errors the retry policy understands."""

from __future__ import annotations

import json
from datetime import timedelta

import openai
from temporalio.exceptions import ApplicationError

from longtask.policies import NON_RETRYABLE_KINDS, ErrorKind

# A provider asking for a longer pause than this is treated as this long (bounded wait).
MAX_RETRY_AFTER_SECONDS = 60.0


class StreamBrokenError(Exception):
    """A stream that ended without a finish reason, or sent a chunk that is not JSON."""

    def __init__(self, message: str, kind: ErrorKind) -> None:
        super().__init__(message)
        self.kind = kind


def kind_of_status(status: int) -> ErrorKind:
    if status in (401, 403):
        return ErrorKind.AUTH_FAILED
    if status == 429:
        return ErrorKind.RATE_LIMITED
    if status == 408:
        return ErrorKind.TIMEOUT
    if 400 <= status < 500:
        return ErrorKind.INVALID_REQUEST
    return ErrorKind.SERVER_ERROR


def kind_of(error: BaseException) -> ErrorKind:
    if isinstance(error, StreamBrokenError):
        return error.kind
    if isinstance(error, openai.APITimeoutError | TimeoutError):
        return ErrorKind.TIMEOUT
    if isinstance(error, openai.APIStatusError):
        return kind_of_status(error.status_code)
    if isinstance(error, json.JSONDecodeError):
        return ErrorKind.SERVER_ERROR
    return ErrorKind.CONNECTION


def retry_after_seconds(error: BaseException) -> float | None:
    """The wait a provider asked for in ``retry-after-ms`` or ``retry-after``, bounded."""
    if not isinstance(error, openai.APIStatusError):
        return None
    headers = error.response.headers
    for name, scale in (("retry-after-ms", 0.001), ("retry-after", 1.0)):
        raw = headers.get(name)
        if raw is None:
            continue
        try:
            return min(max(float(raw) * scale, 0.0), MAX_RETRY_AFTER_SECONDS)
        except ValueError:
            continue
    return None


def provider_message(error: BaseException, secret: str) -> str:
    """The provider's answer, with the API key blanked should the provider echo it."""
    text = str(error) or type(error).__name__
    if secret:
        text = text.replace(secret, "***")
    return text[:500]


def to_application_error(error: BaseException, where: str, secret: str) -> ApplicationError:
    """Wrap a provider failure so Temporal retries it, or not, by its kind."""
    kind = kind_of(error)
    delay = retry_after_seconds(error) if kind is ErrorKind.RATE_LIMITED else None
    return ApplicationError(
        f"{where}: {kind.value}: {provider_message(error, secret)}",
        type=kind.value,
        non_retryable=kind in NON_RETRYABLE_KINDS,
        next_retry_delay=timedelta(seconds=delay) if delay is not None else None,
    )
