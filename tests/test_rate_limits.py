"""Shared per-minute quotas: worker processes on one Redis stay within a real server's quota, and
tasks share one model's quota fairly."""

from __future__ import annotations

import asyncio
import json
import logging
import random
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import openai
import pytest
from openai.types.chat import ChatCompletionMessageParam
from pydantic import ValidationError
from redis.asyncio import Redis

from activities.rate_limits import SharedRateLimiter, estimate_request_tokens
from longtask.policies import ModelQuota
from longtask.tooling.servers import LlmServer, RedisServer, free_port

ROOT = Path(__file__).resolve().parent.parent
API_KEY = "sk-test-0123456789abcdef"
MODEL = "gpt-4.1-mini"
RPM = 120
TPM = 12_000
MAX_TOKENS = 100
# Non-ASCII on purpose: the server counts UTF-8 bytes, not characters.
PROMPT = "Résumé de l'incident : " + "the cache fell over and every read hit the database. " * 6
MESSAGES: list[ChatCompletionMessageParam] = [{"role": "user", "content": PROMPT}]
LOGGER = "activities.rate_limits"


@pytest.fixture(scope="module")
def rpm_llm() -> Iterator[LlmServer]:
    with LlmServer("--rpm", str(RPM)) as server:
        yield server


@pytest.fixture(scope="module")
def tpm_llm() -> Iterator[LlmServer]:
    with LlmServer("--tpm", str(TPM)) as server:
        yield server


@pytest.fixture
async def redis(redis_server: RedisServer) -> AsyncIterator[Redis]:
    connection = Redis.from_url(redis_server.url, decode_responses=True)
    yield connection
    await connection.aclose()


def unused_redis() -> Redis:
    """A Redis client pointed at a port where nothing listens."""
    return Redis.from_url(f"redis://127.0.0.1:{free_port()}/0", socket_connect_timeout=1)


async def worker_main(spec: dict[str, Any]) -> dict[str, Any]:
    """One worker process: its own limiter and client, `lanes` calls in flight at a time."""
    redis = Redis.from_url(spec["redis_url"])
    quotas = {MODEL: ModelQuota.model_validate(spec["quota"])}
    limiter = SharedRateLimiter(redis, quotas, key_prefix=spec["prefix"])
    client = openai.AsyncOpenAI(base_url=spec["base_url"], api_key=API_KEY, max_retries=0)
    tokens = estimate_request_tokens(MESSAGES, MAX_TOKENS)
    statuses: list[int] = []
    waits: list[float] = []
    calls = iter(range(spec["calls"]))

    async def lane() -> None:
        for _ in calls:
            waits.append(await limiter.acquire(MODEL, spec["task"], tokens))
            try:
                await client.chat.completions.create(
                    model=MODEL, messages=MESSAGES, max_tokens=MAX_TOKENS
                )
                statuses.append(200)
            except openai.APIStatusError as error:
                statuses.append(error.status_code)

    await asyncio.gather(*(lane() for _ in range(spec["lanes"])))
    await client.close()
    await redis.aclose()
    return {"statuses": statuses, "waits": waits}


async def run_workers(
    llm: LlmServer, redis_server: RedisServer, quota: ModelQuota, calls_each: int
) -> list[dict[str, Any]]:
    """Two worker processes, each a different task, calling the same model at once."""
    llm.reset()
    prefix = f"test:{uuid.uuid4().hex[:8]}"
    specs = [
        {
            "redis_url": redis_server.url,
            "base_url": llm.base_url,
            "quota": quota.model_dump(),
            "prefix": prefix,
            "task": task,
            "calls": calls_each,
            "lanes": 6,
        }
        for task in ("task-a", "task-b")
    ]
    runs = [
        asyncio.to_thread(
            subprocess.run,
            [sys.executable, "-m", "tests.test_rate_limits", json.dumps(spec)],
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=120,
        )
        for spec in specs
    ]
    results = []
    for done in await asyncio.gather(*runs):
        assert done.returncode == 0, done.stderr
        results.append(json.loads(done.stdout.splitlines()[-1]))
    return results


def charged_tokens(record: dict[str, Any]) -> int:
    """What llmock charged a logged request: its compact JSON body // 4 plus max_tokens."""
    body = record["body"]
    raw = json.dumps(body, ensure_ascii=False, separators=(",", ":")).encode()
    return max(1, len(raw) // 4) + int(body.get("max_tokens") or 0)


def worst_overdraft(charges: list[tuple[float, float]], per_minute: int) -> float:
    """How far below empty a provider bucket would go if it took every one of these charges.

    The bucket is the provider's (full at start, refilled continuously): zero means the calls
    never exceeded the quota in any window, the first minute included.
    """
    level, worst, last = float(per_minute), 0.0, None
    for at, amount in sorted(charges):
        if last is not None:
            level = min(per_minute, level + (at - last) * per_minute / 60)
        last = at
        level -= amount
        worst = min(worst, level)
    return -worst


async def test_two_worker_processes_stay_within_a_requests_quota(
    rpm_llm: LlmServer, redis_server: RedisServer
) -> None:
    # The bucket's 120 go at once, the other 24 are paced at 2 a second: about 12 s.
    results = await run_workers(rpm_llm, redis_server, ModelQuota(rpm=RPM), calls_each=72)
    assert max(w for r in results for w in r["waits"]) > 0, "the quota was never reached"
    log = rpm_llm.requests()
    assert len(log) == 144
    assert sum(r["status"] == 429 for r in log) <= 1, [r["status"] for r in log]
    assert worst_overdraft([(r["started_at"], 1) for r in log], RPM) <= 1


async def test_two_worker_processes_stay_within_a_tokens_quota(
    tpm_llm: LlmServer, redis_server: RedisServer
) -> None:
    per_call = estimate_request_tokens(MESSAGES, MAX_TOKENS)
    burst = TPM // per_call
    # A full bucket's worth at once, then ~10 s of calls paced at TPM/60 tokens a second.
    calls_each = (burst + 10 * TPM // 60 // per_call + 1) // 2
    results = await run_workers(tpm_llm, redis_server, ModelQuota(tpm=TPM), calls_each)
    assert max(w for r in results for w in r["waits"]) > 0, "the quota was never reached"
    log = tpm_llm.requests()
    assert len(log) == 2 * calls_each
    assert sum(r["status"] == 429 for r in log) <= 1, [r["status"] for r in log]
    overdraft = worst_overdraft([(r["started_at"], charged_tokens(r)) for r in log], TPM)
    assert overdraft <= per_call


class Contenders:
    """Tasks asking for one model's quota as fast as they are let; each call acts as a worker
    of its own, with its own limiter."""

    def __init__(self, redis: Redis, quota: ModelQuota) -> None:
        self.redis = redis
        self.quotas = {MODEL: quota}
        self.prefix = f"test:{uuid.uuid4().hex[:8]}"
        self.grants: list[tuple[str, float, int]] = []
        self.lanes: list[asyncio.Task[None]] = []
        self.spent = 0
        self.target = 0
        self.reached = asyncio.Event()

    def start(self, task: str, lanes: int, tokens: int = 1) -> None:
        self.lanes += [asyncio.create_task(self._lane(task, tokens)) for _ in range(lanes)]

    async def _lane(self, task: str, tokens: int) -> None:
        limiter = SharedRateLimiter(self.redis, self.quotas, key_prefix=self.prefix)
        while True:
            await limiter.acquire(MODEL, task, tokens)
            self.grants.append((task, time.monotonic(), tokens))
            self.spent += tokens
            if self.spent >= self.target:
                self.reached.set()

    async def spend(self, amount: int) -> None:
        """Return once all tasks together were granted ``amount`` (tokens; 1 a call by default)."""
        self.target = amount
        self.reached.clear()
        if self.spent < amount:
            await self.reached.wait()

    def calls(self, task: str, since: float) -> int:
        return sum(1 for name, at, _ in self.grants if name == task and at >= since)

    def tokens(self, task: str, since: float) -> int:
        return sum(n for name, at, n in self.grants if name == task and at >= since)

    async def stop(self) -> None:
        for lane in self.lanes:
            lane.cancel()
        _, still_running = await asyncio.wait(self.lanes, timeout=10)
        assert not still_running, "a cancelled call kept going"


async def test_tasks_share_requests_fairly_and_a_lone_task_gets_the_full_rate(
    redis: Redis,
) -> None:
    rpm, rate = 600, 10.0
    contenders = Contenders(redis, ModelQuota(rpm=rpm))
    # Task a has 4 calls in flight, task b only 1: left alone, a would take 4/5 of the quota.
    contenders.start("a", lanes=4)
    try:
        await contenders.spend(rpm)  # the full bucket goes first
        await asyncio.sleep(1.0)  # and what refilled while it went
        alone_since = time.monotonic()
        await asyncio.sleep(2.0)
        alone = contenders.calls("a", alone_since)

        # b arrives long after a began: it neither waits for a's past use nor takes a's share.
        contenders.start("b", lanes=1)
        shared_since = time.monotonic()
        await asyncio.sleep(5.0)
        a, b = contenders.calls("a", shared_since), contenders.calls("b", shared_since)
    finally:
        await contenders.stop()
    assert 0.75 * 2 * rate <= alone <= 2 * rate + 2
    assert 0.75 * 5 * rate <= a + b <= 5 * rate + 2
    assert 0.35 <= b / (a + b) <= 0.65, (a, b)


async def test_tasks_share_tokens_fairly_whatever_their_call_sizes(redis: Redis) -> None:
    tpm, rate = 60_000, 1000.0
    contenders = Contenders(redis, ModelQuota(tpm=tpm))
    # Calls of 300 and 100 tokens: equal shares of tokens, so b makes about 3 calls to a's 1.
    contenders.start("a", lanes=2, tokens=300)
    contenders.start("b", lanes=2, tokens=100)
    try:
        await contenders.spend(tpm)
        await asyncio.sleep(1.0)
        since = time.monotonic()
        await asyncio.sleep(4.0)
        a, b = contenders.tokens("a", since), contenders.tokens("b", since)
    finally:
        await contenders.stop()
    assert 0.75 * 4 * rate <= a + b <= 4 * rate + 300
    assert 0.35 <= b / (a + b) <= 0.65, (a, b)


async def test_a_cancelled_acquire_always_stops(redis: Redis) -> None:
    # A quota never reached keeps every call inside a Redis command, where cancels are lost most
    # easily; each must still end the task.
    limiter = SharedRateLimiter(redis, {MODEL: ModelQuota(rpm=10**9)}, f"test:{uuid.uuid4().hex}")

    async def lane() -> None:
        while True:
            await limiter.acquire(MODEL, "task", 1)

    for _ in range(40):
        lanes = [asyncio.create_task(lane()) for _ in range(5)]
        await asyncio.sleep(random.uniform(0.02, 0.1))
        for running in lanes:
            running.cancel()
        _, still_running = await asyncio.wait(lanes, timeout=5)
        assert not still_running, "a cancelled call kept going"


async def test_a_model_without_quota_goes_at_once_without_redis(
    caplog: pytest.LogCaptureFixture,
) -> None:
    limiter = SharedRateLimiter(
        unused_redis(), {"limited": ModelQuota(rpm=1), "open": ModelQuota()}
    )
    with caplog.at_level(logging.WARNING, logger=LOGGER):
        assert await limiter.acquire("unknown", "task", 100) == 0.0
        assert await limiter.acquire("open", "task", 100) == 0.0
    assert not caplog.records


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"rpm": 0}, "rpm\n  Input should be greater than 0"),
        ({"tpm": -5}, "tpm\n  Input should be greater than 0"),
        ({"rpm": "many"}, "rpm\n  Input should be a valid integer"),
        ({"rmp": 60}, "rmp\n  Extra inputs are not permitted"),
    ],
)
def test_invalid_quotas_are_rejected(fields: dict[str, Any], message: str) -> None:
    with pytest.raises(ValidationError, match=message):
        ModelQuota.model_validate(fields)


async def test_without_redis_the_call_goes_with_one_warning(
    caplog: pytest.LogCaptureFixture,
) -> None:
    limiter = SharedRateLimiter(unused_redis(), {MODEL: ModelQuota(rpm=1)})
    started = time.monotonic()
    with caplog.at_level(logging.WARNING, logger=LOGGER):
        for _ in range(3):
            await limiter.acquire(MODEL, "task", 100)
    assert time.monotonic() - started < 10
    assert [r.getMessage() for r in caplog.records if "Redis unreachable" in r.getMessage()]
    assert len(caplog.records) == 1


async def test_a_silent_redis_is_waited_for_a_bounded_time(
    caplog: pytest.LogCaptureFixture,
) -> None:
    # It takes the connection and never answers; the client itself has no timeout.
    with socket.create_server(("127.0.0.1", 0)) as silent:
        port = silent.getsockname()[1]
        limiter = SharedRateLimiter(
            Redis.from_url(f"redis://127.0.0.1:{port}/0"),
            {MODEL: ModelQuota(rpm=1)},
            redis_timeout=0.5,
        )
        with caplog.at_level(logging.WARNING, logger=LOGGER):
            waited = await limiter.acquire(MODEL, "task", 100)
    assert 0.4 <= waited < 5
    assert len(caplog.records) == 1


async def test_the_estimate_covers_what_the_server_charges(tpm_llm: LlmServer) -> None:
    client = openai.AsyncOpenAI(base_url=tpm_llm.base_url, api_key=API_KEY, max_retries=0)
    inputs = [PROMPT, "a second, short text", "ünïcödé " * 20]
    try:
        tpm_llm.reset()
        chat = await client.chat.completions.with_raw_response.create(
            model=MODEL, messages=MESSAGES, max_tokens=MAX_TOKENS
        )
        tpm_llm.reset()
        streamed = await client.chat.completions.with_raw_response.create(
            model=MODEL,
            messages=MESSAGES,
            stream=True,
            stream_options={"include_usage": True},
        )
        await streamed.parse().close()
        tpm_llm.reset()
        embedded = await client.embeddings.with_raw_response.create(model=MODEL, input=inputs)
    finally:
        await client.close()
    for estimate, headers in [
        (estimate_request_tokens(MESSAGES, MAX_TOKENS), chat.headers),
        (estimate_request_tokens(MESSAGES), streamed.headers),
        (estimate_request_tokens(inputs), embedded.headers),
    ]:
        charged = TPM - int(headers["x-ratelimit-remaining-tokens"])
        # Never under; over by at most the allowance for the JSON around the messages.
        assert charged <= estimate <= charged + 48, (estimate, charged)


if __name__ == "__main__":
    print(json.dumps(asyncio.run(worker_main(json.loads(sys.argv[1])))))
