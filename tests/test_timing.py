"""Slow is not hung: calls slower than a heartbeat timeout complete, true stalls are cut at
their limit and retried, and limits learned from a model's pace move as the README says."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from redis.asyncio import Redis
from temporalio.client import Client
from temporalio.worker import Worker

from activities.latency import LEARN_AFTER, LatencyBook, Measure, latency_key
from longtask.models import TaskResult
from longtask.policies import StepKind, TaskType, TimeoutPolicy
from longtask.settings import Settings
from longtask.states import TaskState
from longtask.tooling.servers import LlmServer
from longtask.tooling.worker_process import WorkerProcess
from tests.conftest import EXAMPLES
from tests.tasks import start

DOCUMENT = EXAMPLES / "incident-postmortem.txt"  # 3 pages: 1 embedding, 5 chat calls
REASONING_MODEL = "gemini-2.5-flash"
# Longer than the 2 s heartbeat timeout that used to bound every first chunk and every gap.
SLOW_SECONDS = 3.5


def chat_requests(llm: LlmServer, model: str | None = None) -> list[dict[str, Any]]:
    return [
        r
        for r in llm.requests()
        if r["path"].endswith("/chat/completions") and model in (None, r["model"])
    ]


def silent_for(request: dict[str, Any]) -> float:
    """How long the server held a request before the client hung up."""
    return float(request["ended_at"] - request["started_at"])


async def test_calls_slower_than_a_heartbeat_timeout_complete_on_their_first_attempt(
    client: Client, settings: Settings, worker: Worker, llm: LlmServer
) -> None:
    llm.add(
        # Every stream: a slow first token, then a pause of the same length after chunk 3.
        {"type": "slow_first_token", "seconds": SLOW_SECONDS, "times": None},
        {"type": "stream_fault", "kind": "stall", "after_chunks": 3,
         "stall_seconds": SLOW_SECONDS, "times": None},
        # Every embedding batch takes as long to come back.
        {"type": "delay", "seconds": SLOW_SECONDS, "times": None,
         "match": {"path": "*/embeddings"}},
    )  # fmt: skip
    _, handle = await start(client, settings, [DOCUMENT])
    result: TaskResult = await handle.result()
    assert result.state is TaskState.COMPLETED
    for kind in StepKind:
        stats = result.calls[kind]
        assert stats.timeouts == 0 and stats.errors == 0, (kind, stats)
        assert stats.attempts == stats.successes, (kind, stats)
    chats = chat_requests(llm)
    assert len(chats) == 5 and all(r["completed"] for r in chats), chats
    # The pauses really happened: each answer took both of them.
    assert all(silent_for(r) >= 2 * SLOW_SECONDS - 0.5 for r in chats)


async def test_a_true_stall_is_cut_at_its_limit_and_retried(
    client: Client, settings: Settings, worker: Worker, llm: LlmServer
) -> None:
    quick = {"first_chunk_seconds": 3, "silence_seconds": 3}
    policy = {"hang_limits": {"reasoning": quick, "default": quick}, "learn_hang_limits": False}
    llm.add(
        # The reasoning model says nothing for a minute; the final model stops mid-answer.
        {"type": "slow_first_token", "seconds": 60, "match": {"model": REASONING_MODEL}},
        {"type": "stream_fault", "kind": "stall", "after_chunks": 2, "stall_seconds": 60,
         "match": {"model": "gpt-4.1"}},
    )  # fmt: skip
    _, handle = await start(client, settings, [DOCUMENT], policy=policy)
    result: TaskResult = await handle.result()
    assert result.state is TaskState.COMPLETED
    for kind in (StepKind.REASON, StepKind.REPORT):
        assert result.calls[kind].timeouts == 1 and result.calls[kind].attempts == 2, kind
    (hung_first, retried) = chat_requests(llm, REASONING_MODEL)
    assert not hung_first["completed"] and retried["completed"]
    # Cut at its 3 s limit: not before it, and long before the minute was over.
    assert 3 - 0.5 <= silent_for(hung_first) < 20
    stalled = [r for r in chat_requests(llm, "gpt-4.1") if not r["completed"]]
    assert len(stalled) == 1 and silent_for(stalled[0]) < 20


async def test_a_stall_is_cut_at_the_limit_learned_from_other_workers(
    client: Client, settings: Settings, worker: Worker, llm: LlmServer, redis: Redis
) -> None:
    # Another worker saw this model answer within 0.2 s, many times: its stalls are caught
    # at the 10 s floor instead of the 50 s a reasoning model is allowed by default.
    other_worker = LatencyBook(redis)
    for _ in range(LEARN_AFTER * 2):
        other_worker.observe(REASONING_MODEL, TaskType.REASONING, 0.2, 0.05)
    await other_worker.refresh(REASONING_MODEL, TaskType.REASONING)
    llm.add({"type": "slow_first_token", "seconds": 60, "match": {"model": REASONING_MODEL}})
    _, handle = await start(client, settings, [DOCUMENT])
    result: TaskResult = await handle.result()
    assert result.state is TaskState.COMPLETED
    assert result.calls[StepKind.REASON].timeouts == 1
    hung = chat_requests(llm, REASONING_MODEL)[0]
    assert not hung["completed"]
    assert 10 - 0.5 <= silent_for(hung) < 40


async def test_learned_limits_move_with_the_observed_pace_within_bounds(redis: Redis) -> None:
    model = "pace-test-model"
    policy = TimeoutPolicy()
    first, second = LatencyBook(redis), LatencyBook(redis)  # two workers sharing Redis

    async def first_chunk_limit(book: LatencyBook, task_type: TaskType) -> float:
        await book.refresh(model, task_type)
        return (await book.limits(policy, task_type, model, 0)).first_chunk

    # Fewer than LEARN_AFTER answers seen: the configured limits.
    for _ in range(LEARN_AFTER - 1):
        first.observe(model, TaskType.REASONING, 0.3, 0.1)
    assert await first_chunk_limit(first, TaskType.REASONING) == 50
    # Enough fast answers: 1.5 x p99 + 5 s is under the 10 s floor, so the floor; seen by both
    # workers.
    first.observe(model, TaskType.REASONING, 0.3, 0.1)
    assert await first_chunk_limit(first, TaskType.REASONING) == 10
    assert await first_chunk_limit(second, TaskType.REASONING) == 10
    silence = (await second.limits(policy, TaskType.REASONING, model, 0)).stall
    assert silence == 10
    # The model slows down (p99 12 s): 23 s, on a later attempt too.
    for _ in range(10):
        second.observe(model, TaskType.REASONING, 12.0, 2.0)
    assert await first_chunk_limit(second, TaskType.REASONING) == 23
    assert (await second.limits(policy, TaskType.REASONING, model, 1)).first_chunk == 23
    # Each task type learns on its own: the same model's default calls know nothing yet.
    assert await first_chunk_limit(second, TaskType.DEFAULT) == 30
    key = latency_key(model, TaskType.REASONING, Measure.FIRST_CHUNK)
    assert await redis.llen(key) == LEARN_AFTER + 10
    assert 0 < await redis.ttl(key) <= 7 * 24 * 3600


async def test_without_redis_the_configured_limits_apply_and_calls_go_on() -> None:
    unreachable = Redis.from_url(
        "redis://127.0.0.1:9/0", socket_timeout=0.5, socket_connect_timeout=0.5
    )
    book = LatencyBook(unreachable)
    for _ in range(LEARN_AFTER * 2):
        book.observe("fast", TaskType.DEFAULT, 0.1, 0.1)
    limits = await book.limits(TimeoutPolicy(), TaskType.DEFAULT, "fast", 0)
    assert (limits.first_chunk, limits.stall, limits.total) == (30, 20, 30)
    await unreachable.aclose()


async def test_an_expected_failure_is_one_line_in_the_worker_log_without_a_traceback(
    client: Client,
    settings: Settings,
    llm: LlmServer,
    workers: list[WorkerProcess],
    tmp_path: Path,
) -> None:
    llm.add(
        {"type": "fail", "status": 503, "match": {"model": "gpt-4.1"}},
        {"type": "stream_fault", "kind": "disconnect", "after_chunks": 2,
         "match": {"model": REASONING_MODEL}},
    )  # fmt: skip
    log = tmp_path / "worker.log"
    worker = WorkerProcess(settings, log)
    workers.append(worker)
    _, handle = await start(client, settings, [DOCUMENT])
    result: TaskResult = await handle.result()
    assert result.state is TaskState.COMPLETED
    worker.stop()
    lines = log.read_text().splitlines()
    failures = [line for line in lines if "activities.calls" in line]
    assert len(failures) == 2, failures
    (server_error,) = [line for line in failures if "SERVER_ERROR" in line]
    assert "report step of incident-postmortem.txt" in server_error
    assert "(call attempt 1 of 4; retry in 1 s)" in server_error
    (cut,) = [line for line in failures if "CONNECTION" in line]
    assert "reason step of incident-postmortem.txt" in cut
    assert not [line for line in lines if "Traceback" in line], lines
