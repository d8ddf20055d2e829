"""One classifier from provider outcomes to typed errors the retry policy understands."""

from __future__ import annotations

import json
import math

import openai

from longtask.policies import ErrorKind, StepKind
from longtask.redaction import redact

# The model route each step kind uses: its command-line option and setting are named after it.
ROUTE_OF_STEP = {
    StepKind.EMBED: "embedding",
    StepKind.SUMMARIZE: "intermediate",
    StepKind.REASON: "reasoning",
    StepKind.REPORT: "final",
}


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
    """The wait a provider asked for in ``retry-after-ms`` or ``retry-after``; the policy
    bounds it (``rate_limit_max_wait_seconds``).

    A value that is no wait (``nan``, ``inf``, negative, words) counts as not given: the
    policy's own wait applies instead of a crash, an endless wait or none at all.
    """
    if not isinstance(error, openai.APIStatusError):
        return None
    headers = error.response.headers
    for name, scale in (("retry-after-ms", 0.001), ("retry-after", 1.0)):
        raw = headers.get(name)
        if raw is None:
            continue
        try:
            seconds = float(raw) * scale
        except ValueError:
            continue
        if math.isfinite(seconds) and seconds >= 0:
            return seconds
    return None


def provider_message(error: BaseException, secret: str) -> str:
    """The provider's answer, with the API key (and anything shaped like a credential)
    blanked should the provider echo the request; blanked before it is cut short, so no
    key survives half-cut."""
    return redact(str(error) or type(error).__name__, secret)[:500]


def advice_for(error: BaseException, model: str, step: StepKind) -> str:
    """What to do about a provider answer that no retry changes, naming the setting to fix."""
    if not isinstance(error, openai.APIStatusError):
        return ""
    if error.status_code in (401, 403):
        return (
            f"the provider refused the API key (for model {model}): check LTM_LLM_API_KEY "
            "on the workers, and LTM_LLM_BASE_URL"
        )
    if error.status_code == 404:
        route = ROUTE_OF_STEP[step]
        return (
            f"model {model} (or the endpoint) not found at the provider: check the model "
            f"name (--model-{route} or LTM_MODEL_{route.upper()}) and LTM_LLM_BASE_URL"
        )
    return ""
