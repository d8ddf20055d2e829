"""The timeout benchmark's LLM server: llmock with random long stalls and slowly paced streams.

llmock's own knobs do not give both: its chunk delay is one setting for the whole server, and its
random stalls last a fixed time and never hit the first chunk. This is llmock's app
(`create_app`) with random stalls drawn per stream, wrapped in a small ASGI layer that paces the
slow streams. A stream is slow when its request fingerprint (llmock's own hash of the body)
falls in the slow share, so the request log alone tells which ones were, and a retry of a slow
call is slow again. It runs in its own process (uvicorn), configured by ``BENCH_TIMEOUTS_PLAN``.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import json
import os
import random
import subprocess
import sys
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from llmock.chaos import ChaosSettings, StreamChaos
from llmock.journal import fingerprint
from llmock.main import create_app
from llmock.scenarios import Match, StreamFault
from pydantic import BaseModel, Field
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from longtask.settings import Settings
from tests.servers import wait_for_port

ROOT = Path(__file__).resolve().parent.parent
CHAT_PATH = "/chat/completions"
PLAN_VARIABLE = "BENCH_TIMEOUTS_PLAN"
# Hung streams stay silent this long: far past any limit, so only the client can end them.
STALL_SECONDS = (30.0, 60.0)
# A third of the stalls come before the first chunk, the others after 1-6 chunks.
FIRST_CHUNK_STALL_SHARE = 1 / 3
LAST_STALL_CHUNK = 6
# Slow streams are paced for this many chunks: well past the stall limit in all, and inside
# the shortest attempt's total limit (30 s), which a slow stream may rightly run into.
PACED_CHUNKS = 12


class FaultPlan(BaseModel):
    """What the benchmark's LLM server does, handed to its process as JSON."""

    stall_share: float = Field(ge=0, le=1)
    slow_share: float = Field(ge=0, le=1)
    pace_seconds: float = Field(gt=0)
    max_stalls_per_call: int = Field(ge=0)
    latency_ms: int = Field(ge=0)
    chunk_delay_ms: int = Field(ge=0)
    seed: int


# The fingerprint of the streamed chat request being served, for the stall sampler.
CURRENT_CALL: contextvars.ContextVar[str | None] = contextvars.ContextVar("call", default=None)


@dataclass(frozen=True)
class RandomStalls(StreamChaos):
    """llmock's stream chaos, with a stall of 30-60 s at chunk 0-6 in ``stall_share`` of streams.

    A call (one request body) stalls at most ``max_per_call`` times, so its last attempts go
    through and the job can complete: what is measured is the cut, not bad luck.
    """

    stall_share: float = 0.0
    max_per_call: int = 2
    rng: random.Random = field(default_factory=random.Random)
    stalled: Counter[str] = field(default_factory=Counter)

    def sample(self, rng: random.Random | None = None) -> StreamFault | None:
        draw = rng or self.rng
        if draw.random() >= self.stall_share:
            return None
        first = draw.random() < FIRST_CHUNK_STALL_SHARE
        fault = StreamFault(
            "stall",
            after_chunks=0 if first else draw.randint(1, LAST_STALL_CHUNK),
            stall_seconds=draw.uniform(*STALL_SECONDS),
            match=Match(stream=True),
        )
        call = CURRENT_CALL.get()
        if call is not None:
            if self.stalled[call] >= self.max_per_call:
                return None
            self.stalled[call] += 1
        return fault


def is_slow(request_fingerprint: str, share: float) -> bool:
    """Whether a streamed chat request with this fingerprint (16 hex digits) is paced."""
    return int(request_fingerprint, 16) / (1 << 4 * len(request_fingerprint)) < share


async def buffered(receive: Receive) -> tuple[bytes, Receive]:
    """The request body, and a ``receive`` that hands the app the same messages again."""
    messages: list[Message] = []
    while True:
        message = await receive()
        messages.append(message)
        if message["type"] != "http.request" or not message.get("more_body"):
            break
    body = b"".join(m.get("body", b"") for m in messages if m["type"] == "http.request")

    async def replay() -> Message:
        return messages.pop(0) if messages else await receive()

    return body, replay


class PacedStreams:
    """Names each streamed chat request for the stall sampler, and paces the slow ones.

    A slow stream's first chunks are each held ``pace`` seconds: slow, never silent. This layer
    wraps llmock's app from outside, so the pause comes after any stall llmock applies and
    llmock's request log times the whole exchange.
    """

    def __init__(self, app: ASGIApp, share: float, pace: float) -> None:
        self._app = app
        self._share = share
        self._pace = pace

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not scope["path"].endswith(CHAT_PATH):
            await self._app(scope, receive, send)
            return
        body, replay = await buffered(receive)
        try:
            request = json.loads(body)
        except ValueError:
            request = None
        if not isinstance(request, dict) or request.get("stream") is not True:
            await self._app(scope, replay, send)
            return
        # The same hash llmock's request log shows for this request.
        call = fingerprint(scope["method"], scope["path"], request)
        paced = 0

        async def paced_send(message: Message) -> None:
            nonlocal paced
            body_chunk = message["type"] == "http.response.body" and message.get("body")
            if body_chunk and paced < PACED_CHUNKS:
                paced += 1
                await asyncio.sleep(self._pace)
            await send(message)

        token = CURRENT_CALL.set(call)
        try:
            await self._app(scope, replay, paced_send if is_slow(call, self._share) else send)
        finally:
            CURRENT_CALL.reset(token)


def paced_llm_app() -> ASGIApp:
    """The benchmark's LLM server (a uvicorn factory), configured by ``BENCH_TIMEOUTS_PLAN``."""
    plan = FaultPlan.model_validate_json(os.environ[PLAN_VARIABLE])
    stalls = RandomStalls(
        chunk_delay_ms=plan.chunk_delay_ms,
        stall_share=plan.stall_share,
        max_per_call=plan.max_stalls_per_call,
        rng=random.Random(plan.seed),
    )
    app = create_app(chaos=ChaosSettings(latency_ms=plan.latency_ms), stream_chaos=stalls)
    return PacedStreams(app, plan.slow_share, plan.pace_seconds)


@contextlib.contextmanager
def faulty_llm_server(settings: Settings, plan: FaultPlan) -> Iterator[None]:
    """The benchmark's LLM server on the stack's LLM port, in its own process."""
    host, port = settings.llm_host_port
    log = settings.state_dir / "logs" / "llm.log"
    log.parent.mkdir(parents=True, exist_ok=True)
    command = [
        sys.executable, "-m", "uvicorn", "--factory", "bench.faulty_llm_server:paced_llm_app",
        "--host", host, "--port", str(port), "--log-level", "warning",
        "--timeout-graceful-shutdown", "2",
    ]  # fmt: skip
    env = {**os.environ, PLAN_VARIABLE: plan.model_dump_json()}
    with log.open("ab") as sink:
        process = subprocess.Popen(command, cwd=ROOT, env=env, stdout=sink, stderr=sink)
    try:
        wait_for_port(port, process)
        yield
    finally:
        process.terminate()
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
