"""What a failed activity of the document task says: its message, the step kind and the
attempts it made, and what a batch's steps paid before it failed for good."""

from __future__ import annotations

import contextlib

from temporalio import workflow
from temporalio.exceptions import ActivityError, ApplicationError

with workflow.unsafe.imports_passed_through():
    from longtask.engine.names import KIND_OF_ACTIVITY
    from longtask.models import BatchResult, CallStats
    from longtask.policies import StepKind


def failure_of(error: ActivityError) -> tuple[str, StepKind | None, CallStats | None]:
    """The message of a step that failed for good, its kind, and the attempts it made."""
    cause = error.cause
    if not isinstance(cause, ApplicationError):
        return str(error), None, None
    stats = None
    if cause.details:
        with contextlib.suppress(ValueError):
            stats = CallStats.model_validate(cause.details[0])
    return cause.message, KIND_OF_ACTIVITY.get(error.activity_type or ""), stats


def cut_of(error: ActivityError) -> BatchResult | None:
    """What the steps of a batch that failed for good paid, from its failure's details; None
    when the failure does not say (a timeout, a release before batches said it)."""
    cause = error.cause
    if not isinstance(cause, ApplicationError) or len(cause.details) < 2:
        return None
    with contextlib.suppress(ValueError):
        return BatchResult.model_validate(cause.details[1])
    return None
