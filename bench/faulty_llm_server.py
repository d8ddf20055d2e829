"""The timeout benchmark's LLM server: llmock with random long stalls and slowly paced streams,
or (the realistic profile) with the pace of real models and true stalls.

llmock's own knobs do not give both: its chunk delay is one setting for the whole server, and its
random stalls last a fixed time and never hit the first chunk. This is llmock's app
(`create_app`) with random stalls drawn per stream, wrapped in a small ASGI layer that paces the
slow streams. A stream is slow when its request fingerprint (llmock's own hash of the body)
falls in the slow share, so the request log alone tells which ones were, and a retry of a slow
call is slow again. It runs in its own process (uvicorn), configured by ``BENCH_TIMEOUTS_PLAN``.

The realistic profile (``RealisticPace``) gives every answer a time to its first chunk drawn
from a log-normal per task type (``PACE``: median and p99, the tail capped at 1.5 x the p99),
and some streams a pause of a few seconds mid-answer; ``stall_share`` of streams go silent for
60 s, half of them before their first chunk. The task type is told by the path (embeddings) and
the model (the reasoning model; every other chat model is ``default``).
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import json
import math
import os
import random
import sys
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from llmock.chaos import ChaosSettings, StreamChaos
from llmock.journal import fingerprint
from llmock.main import create_app
from llmock.scenarios import Match, StreamFault
from pydantic import BaseModel, Field
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from bench.processes import serving
from longtask.settings import Settings

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
EMBEDDINGS_PATH = "/embeddings"


class Pace(BaseModel):
    """A task type's pace: time to the first chunk (median, p99), and pauses mid-stream."""

    first_chunk_median: float
    first_chunk_p99: float
    pause_share: float  # streams with one pause mid-answer
    pause_max: float  # seconds, drawn uniformly from 1 s up to this


# The realistic profile's pace per task type, as real providers show it.
PACE = {
    "default": Pace(first_chunk_median=1.0, first_chunk_p99=10.0, pause_share=0.3, pause_max=5.0),
    "reasoning": Pace(first_chunk_median=4.0, first_chunk_p99=30.0, pause_share=0.3, pause_max=8.0),
    "embedding": Pace(first_chunk_median=0.5, first_chunk_p99=5.0, pause_share=0.0, pause_max=0),
}
# True stalls of the realistic profile: far past any limit, half before the first chunk.
REALISTIC_STALL_SECONDS = (60.0, 60.0)
REALISTIC_FIRST_CHUNK_STALL_SHARE = 0.5


class FaultPlan(BaseModel):
    """What the benchmark's LLM server does, handed to its process as JSON."""

    stall_share: float = Field(ge=0, le=1)
    slow_share: float = Field(ge=0, le=1)
    pace_seconds: float = Field(gt=0)
    max_stalls_per_call: int = Field(ge=0)
    latency_ms: int = Field(ge=0)
    chunk_delay_ms: int = Field(ge=0)
    seed: int
    profile: Literal["paced", "realistic"] = "paced"
    reasoning_model: str = ""


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
    seconds: tuple[float, float] = STALL_SECONDS
    first_chunk_share: float = FIRST_CHUNK_STALL_SHARE
    rng: random.Random = field(default_factory=random.Random)
    stalled: Counter[str] = field(default_factory=Counter)

    def sample(self, rng: random.Random | None = None) -> StreamFault | None:
        draw = rng or self.rng
        if draw.random() >= self.stall_share:
            return None
        first = draw.random() < self.first_chunk_share
        fault = StreamFault(
            "stall",
            after_chunks=0 if first else draw.randint(1, LAST_STALL_CHUNK),
            stall_seconds=draw.uniform(*self.seconds),
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


async def json_request(receive: Receive) -> tuple[dict[str, Any] | None, Receive]:
    """The request body as a JSON object (None when it is not one), and a ``receive`` that
    hands the app the same messages again."""
    body, replay = await buffered(receive)
    try:
        request = json.loads(body)
    except ValueError:
        request = None
    return (request if isinstance(request, dict) else None), replay


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
        request, replay = await json_request(receive)
        if request is None or request.get("stream") is not True:
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


def draw_first_chunk(pace: Pace, draw: random.Random) -> float:
    """A time to the first chunk: log-normal with the pace's median and p99, capped."""
    sigma = math.log(pace.first_chunk_p99 / pace.first_chunk_median) / 2.326
    seconds = pace.first_chunk_median * math.exp(draw.gauss(0.0, sigma))
    return min(seconds, 1.5 * pace.first_chunk_p99)


class RealisticPace:
    """Holds each answer's first chunk (an embedding: its whole answer) for a time drawn from
    its task type's pace, and pauses some streams mid-answer. Draws are seeded per request
    fingerprint, so a retried call is paced the same way."""

    def __init__(self, app: ASGIApp, reasoning_model: str, seed: int) -> None:
        self._app = app
        self._reasoning_model = reasoning_model
        self._seed = seed

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        path = scope.get("path", "") if scope["type"] == "http" else ""
        if not path.endswith((CHAT_PATH, EMBEDDINGS_PATH)):
            await self._app(scope, receive, send)
            return
        asked, replay = await json_request(receive)
        request = asked or {}
        call = fingerprint(scope["method"], path, request)
        if path.endswith(EMBEDDINGS_PATH):
            task_type = "embedding"
        elif request.get("model") == self._reasoning_model:
            task_type = "reasoning"
        else:
            task_type = "default"
        pace = PACE[task_type]
        draw = random.Random(f"{self._seed}:{call}")
        first = draw_first_chunk(pace, draw)
        pause_at = draw.randint(2, 8) if draw.random() < pace.pause_share else -1
        pause = draw.uniform(1.0, max(pace.pause_max, 1.0))
        chunks = 0

        async def paced_send(message: Message) -> None:
            nonlocal chunks
            if message["type"] == "http.response.body" and message.get("body"):
                if chunks == 0:
                    await asyncio.sleep(first)
                elif chunks == pause_at:
                    await asyncio.sleep(pause)
                chunks += 1
            await send(message)

        token = CURRENT_CALL.set(call)
        try:
            await self._app(scope, replay, paced_send)
        finally:
            CURRENT_CALL.reset(token)


def paced_llm_app() -> ASGIApp:
    """The benchmark's LLM server (a uvicorn factory), configured by ``BENCH_TIMEOUTS_PLAN``."""
    plan = FaultPlan.model_validate_json(os.environ[PLAN_VARIABLE])
    if plan.profile == "realistic":
        realistic = RandomStalls(
            chunk_delay_ms=plan.chunk_delay_ms,
            stall_share=plan.stall_share,
            max_per_call=plan.max_stalls_per_call,
            rng=random.Random(plan.seed),
            seconds=REALISTIC_STALL_SECONDS,
            first_chunk_share=REALISTIC_FIRST_CHUNK_STALL_SHARE,
        )
        app = create_app(chaos=ChaosSettings(latency_ms=0), stream_chaos=realistic)
        return RealisticPace(app, plan.reasoning_model, plan.seed)
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
    command = [
        sys.executable, "-m", "uvicorn", "--factory", "bench.faulty_llm_server:paced_llm_app",
        "--host", host, "--port", str(port), "--log-level", "warning",
        "--timeout-graceful-shutdown", "2",
    ]  # fmt: skip
    env = {**os.environ, PLAN_VARIABLE: plan.model_dump_json()}
    with serving(command, port, settings.state_dir / "logs" / "llm.log", cwd=ROOT, env=env):
        yield
