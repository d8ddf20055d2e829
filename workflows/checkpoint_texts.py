"""What a task's checkpoint holds of texts: each one once, in the form a resumed run reads."""

from __future__ import annotations

from pathlib import PurePath
from typing import Any

from longtask.checkpoints import StepRecord
from longtask.models import ResumeState

# What a checkpoint's message carries instead of text its ``step_results`` already hold.
CONTENT_IN_STEP_RESULTS = "step_results"


def messages_beside(
    messages: list[dict[str, Any]], step_results: list[StepRecord]
) -> list[dict[str, Any]]:
    """The messages of a checkpoint, each text stored once.

    An answer that is a finished step's output (a reasoning, a report) is in ``step_results``,
    which a resumed run reads; its message names the step (``document``, ``step``) and says
    ``"content_in": "step_results"`` instead of holding a second copy. Messages of documents
    whose step results a large task no longer keeps hold their text.
    """
    held = {(r.document, r.step, *(r.outputs or [])[:1]) for r in step_results}
    kept = []
    for message in messages:
        step = message.get("step")
        named = (message.get("document"), step, message.get("content"))
        if step is None or "content" not in message or named not in held:
            kept.append(message)
            continue
        without = {k: v for k, v in message.items() if k != "content"}
        kept.append({**without, "content_in": CONTENT_IN_STEP_RESULTS})
    return kept


def step_results_of(resume: ResumeState) -> list[StepRecord]:
    """Steps earlier runs finished (``resume.results``), in the checkpoint's form."""
    results = []
    for key, outputs in sorted(resume.results.items()):
        path, step = key.rsplit("|", 1)
        results.append(
            StepRecord(document=PurePath(path).name, path=path, step=step, outputs=outputs)
        )
    return results
