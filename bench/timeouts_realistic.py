"""The realistic profile of ``bench.timeouts``: real models' pace, true stalls, learned limits.

Every answer's time to its first chunk has a long tail per task type (bench/faulty_llm_server.py:
``PACE``), some streams pause a few seconds mid-answer, and ``--stall-share`` of streams go
silent for 60 s (half before their first chunk). The product runs with its default limits,
learning on. From the LLM server's log alone: false cuts (an answer neither stalled nor let
finish; goal 0), stalls caught (cut before the 60 s were over; goal 100 %) and the silence
before each cut. How long after its limit each was cut needs the limit in force at that moment,
which moves as the workers learn: it comes from the workers' log, where each cut is one line
naming the silence the worker measured and its limit. The limits learned by the end are read
from Redis with the product's own rule. The server's log times chat answers with their pace;
an embedding's pace is added outside it.
"""

from __future__ import annotations

import re
from collections import Counter
from pathlib import Path
from typing import Any

from pydantic import BaseModel

from activities.latency import LatencyBook
from bench.faulty_llm_server import CHAT_PATH, EMBEDDINGS_PATH, REALISTIC_STALL_SECONDS
from bench.harness import summary
from longtask.connections import connect_redis
from longtask.policies import TaskType, TimeoutPolicy
from longtask.settings import Settings


class RealisticFigures(BaseModel):
    profile: str = "realistic"
    documents: int
    completed_documents: int
    state: str
    seconds: float
    requests: int
    answers_by_type: dict[str, dict[str, float]]
    false_cuts: int
    stalls: int
    stalls_before_first_chunk: int
    stalls_caught: int
    stalls_missed: int
    # Each stall not cut: model, task type, attempt, the chunk it held back, seconds held.
    missed: list[str]
    caught_share: float
    # Silence before each cut, from the server's log, before the first chunk and mid-stream.
    first_chunk_silence_seconds: dict[str, float] | None
    mid_stream_silence_seconds: dict[str, float] | None
    # Seconds between a stall's limit and its cut (negative: cut before the limit).
    cut_after_limit_seconds: dict[str, float] | None
    learned_limits: dict[str, dict[str, float]]
    product_timeouts: int


def task_type_of(record: dict[str, Any], reasoning_model: str) -> TaskType:
    if record["path"].endswith(EMBEDDINGS_PATH):
        return TaskType.EMBEDDING
    return TaskType.REASONING if record["model"] == reasoning_model else TaskType.DEFAULT


async def learned_limits(
    settings: Settings, policy: TimeoutPolicy, models: set[tuple[str, TaskType]]
) -> dict[tuple[str, TaskType], tuple[float, float]]:
    """(first chunk, silence) limits of a first attempt, as the workers had learned them."""
    redis = connect_redis(settings)
    book = LatencyBook(redis)
    limits = {}
    for model, task_type in sorted(models):
        await book.refresh(model, task_type)
        call = await book.limits(policy, task_type, model, 0)
        limits[(model, task_type)] = (call.first_chunk, call.stall)
    await book.close()
    await redis.aclose()
    return limits


# The worker's line for a cut call: "... hung: nothing for 12.3 s before the first chunk (limit
# 12 s) ..." (activities/provider.py, activities/attempts.py).
CUT_LINE = re.compile(r"hung: nothing for ([\d.]+) s .*?\(limit ([\d.]+) s\)")


def cuts_after_limit(logs: Path) -> list[float]:
    """Seconds past its limit that each cut call of the workers' logs was cut."""
    late = []
    for log in sorted(logs.glob("worker-*.log")):
        for match in CUT_LINE.finditer(log.read_text(errors="replace")):
            late.append(float(match[1]) - float(match[2]))
    return late


def stall_chunk(record: dict[str, Any]) -> int | None:
    fault = str(record.get("fault") or "")
    if not fault.startswith("stream:stall@"):
        return None
    return int(fault.rsplit("@", 1)[1])


async def realistic_figures(
    settings: Settings, records: list[dict[str, Any]], policy: TimeoutPolicy
) -> dict[str, Any]:
    calls = [r for r in records if r["path"].endswith((CHAT_PATH, EMBEDDINGS_PATH))]
    reasoning = settings.model_reasoning
    limits = await learned_limits(
        settings, policy, {(r["model"], task_type_of(r, reasoning)) for r in calls}
    )
    attempts: Counter[str] = Counter()
    took: dict[str, list[float]] = {}
    after_limit = cuts_after_limit(settings.state_dir / "logs")
    false_cuts = stalls = before_first = 0
    missed: list[str] = []
    first_silences: list[float] = []
    mid_silences: list[float] = []
    for record in calls:
        attempt = attempts[record["fingerprint"]]
        attempts[record["fingerprint"]] += 1
        task_type = task_type_of(record, reasoning)
        chunk = stall_chunk(record)
        seconds = record["ended_at"] - record["started_at"]
        if chunk is None:
            if record["completed"]:
                took.setdefault(task_type.value, []).append(seconds)
            else:
                false_cuts += 1
            continue
        stalls += 1
        if record["completed"] or seconds >= REALISTIC_STALL_SECONDS[0]:
            missed.append(
                f"{record['model']} ({task_type.value}) attempt {attempt + 1}: stall at chunk "
                f"{chunk}, {seconds:.1f} s"
            )
            continue
        if chunk == 0:
            before_first += 1
            first_silences.append(seconds)
        else:
            mid_silences.append(record["stall_waited"] or 0.0)
    return {
        "requests": len(calls),
        "answers_by_type": {kind: summary(values) for kind, values in sorted(took.items())},
        "false_cuts": false_cuts,
        "stalls": stalls,
        "stalls_before_first_chunk": before_first,
        "stalls_caught": stalls - len(missed),
        "stalls_missed": len(missed),
        "missed": missed,
        "caught_share": round((stalls - len(missed)) / stalls, 4) if stalls else 1.0,
        "first_chunk_silence_seconds": summary(first_silences) if first_silences else None,
        "mid_stream_silence_seconds": summary(mid_silences) if mid_silences else None,
        "cut_after_limit_seconds": summary(after_limit) if after_limit else None,
        "learned_limits": {
            f"{model} ({task_type.value})": {"first_chunk": first, "silence": silence}
            for (model, task_type), (first, silence) in sorted(limits.items())
        },
    }


def realistic_report(figures: RealisticFigures) -> str:
    lines = [
        f"timeouts (realistic): {figures.documents} documents, {figures.completed_documents} "
        f"of them completed in {figures.seconds} s; {figures.requests} calls",
        f"  false cuts: {figures.false_cuts} (goal 0); stalls caught: {figures.stalls_caught} "
        f"of {figures.stalls} ({figures.caught_share:.1%}; {figures.stalls_before_first_chunk} "
        f"before the first chunk), missed {figures.stalls_missed}; the product booked "
        f"{figures.product_timeouts} timeouts",
    ]
    late = figures.cut_after_limit_seconds
    if late is not None:
        lines.append(
            f"  cut after its limit (worker's clock, {late['n']:g} cuts): median "
            f"{late['median']:.2f} s, p95 {late['p95']:.2f} s, max {late['max']:.2f} s"
        )
    for where, silence in (
        ("before the first chunk", figures.first_chunk_silence_seconds),
        ("mid-stream", figures.mid_stream_silence_seconds),
    ):
        if silence is not None:
            lines.append(
                f"  silence before the cut {where} (server's clock): median "
                f"{silence['median']:.1f} s, max {silence['max']:.1f} s"
            )
    for kind, took in figures.answers_by_type.items():
        if kind == TaskType.EMBEDDING.value:
            continue  # paced outside the server's log: its learned limit shows its pace
        lines.append(
            f"  {kind} answers let finish: {took['n']:g}, median {took['median']:.2f} s, "
            f"longest {took['max']:.2f} s"
        )
    learned = "; ".join(
        f"{name}: first chunk {limit['first_chunk']:g} s, silence {limit['silence']:g} s"
        for name, limit in figures.learned_limits.items()
    )
    lines.append(f"  limits learned: {learned}")
    return "\n".join(lines)
