"""Prometheus metrics of provider attempts, exported by the worker on ``/metrics``."""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

from longtask.cost import TokenUsage

PROVIDER_ATTEMPTS = Counter(
    "ltm_provider_attempts",
    "Provider call attempts, by task, step kind, attempt number and outcome.",
    ["task_id", "step", "attempt", "status"],
)
ATTEMPT_TIMEOUT = Gauge(
    "ltm_provider_attempt_timeout_seconds",
    "Timeout the attempt ran under.",
    ["task_id", "step", "attempt"],
)
ATTEMPT_DURATION = Histogram(
    "ltm_provider_attempt_duration_seconds",
    "How long provider attempts took, by step kind and outcome.",
    ["step", "status"],
)


STREAM_TOKENS_SAVED = Counter(
    "ltm_stream_tokens_saved",
    "Completion tokens a resumed stream did not pay again (estimated), by step kind.",
    ["step"],
)


TOKENS = Counter(
    "ltm_tokens",
    "Tokens used by provider calls, by step kind, model and direction (prompt, completion).",
    ["step", "model", "direction"],
)
COST = Counter(
    "ltm_cost_usd", "Dollars spent on provider calls, by step kind and model.", ["step", "model"]
)


def record_tokens(step: str, model: str, prompt: int, completion: int) -> None:
    TOKENS.labels(step, model, "prompt").inc(prompt)
    TOKENS.labels(step, model, "completion").inc(completion)
    usage = TokenUsage()
    usage.add(model, prompt, completion)
    COST.labels(step, model).inc(usage.cost())


def record_saved_tokens(step: str, tokens: int) -> None:
    STREAM_TOKENS_SAVED.labels(step).inc(tokens)


def record_attempt(
    task_id: str, step: str, attempt: int, timeout: float, status: str, seconds: float
) -> None:
    """One provider attempt: ``attempt`` is 1-based, ``status`` success, timeout or error."""
    PROVIDER_ATTEMPTS.labels(task_id, step, str(attempt), status).inc()
    ATTEMPT_TIMEOUT.labels(task_id, step, str(attempt)).set(timeout)
    ATTEMPT_DURATION.labels(step, status).observe(seconds)


CHECKPOINT_LAG = Histogram(
    "ltm_checkpoint_lag_seconds",
    "From a checkpoint taken by the task to its visibility in the Redis mirror.",
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0),
)
MIRROR_STAGE = Histogram(
    "ltm_checkpoint_mirror_stage_seconds",
    "Where the mirror lag goes: offered (the checkpoint's time to the sink's offer, i.e. the "
    "workflow task's trip to the worker and its activation), queued (offer to the Redis write "
    "sent) and written (sent to acknowledged).",
    ["stage"],
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 0.5, 1.0, 5.0),
)
STEPS = Counter(
    "ltm_steps_total",
    "Steps of documents that ended, by step kind and outcome.",
    ["step", "status"],
)
DOCUMENTS = Counter(
    "ltm_documents_total",
    "Documents that ended in a batch, by outcome.",
    ["status"],
)


def record_checkpoint_lag(seconds: float) -> None:
    CHECKPOINT_LAG.observe(max(seconds, 0.0))


def record_mirror_stage(stage: str, seconds: float) -> None:
    MIRROR_STAGE.labels(stage).observe(max(seconds, 0.0))


def record_step(step: str, status: str) -> None:
    STEPS.labels(step, status).inc()


def record_document(status: str) -> None:
    DOCUMENTS.labels(status).inc()


WORKER_LOST_ATTEMPTS = Counter(
    "ltm_worker_lost_attempts",
    "Attempts of dead workers this worker handed over, by result: failed for a retry "
    "elsewhere, stale (it had ended already) or error (left to the heartbeat timeout).",
    ["result"],
)


def record_worker_lost(result: str) -> None:
    WORKER_LOST_ATTEMPTS.labels(result).inc()
