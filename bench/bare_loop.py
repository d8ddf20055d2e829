"""The document job as a bare asyncio loop: no Temporal, no Redis, no checkpoints.

SPEC section 9 measured a bare loop at ~340 chat calls/s against the local LLM server (zero
latency, 100 calls in flight). The product streams every chat answer and sends whole pages,
which costs the client more per call than a plain chat call does; so this loop makes the
product's own calls (its provider functions, prompts and first-attempt limits) for the same
documents, and the product is compared with it on the same machine.

  python -m bench.bare_loop --documents N [--concurrency 100] [--base-url URL]
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import tempfile
import time
from contextlib import ExitStack
from pathlib import Path

import openai
from pydantic import BaseModel

from activities import prompts
from activities.documents import read_pages
from activities.latency import LatencyBook
from activities.provider import CallLimits, chat, embed, make_client
from activities.steps import KEY_PASSAGE_QUERY, KEY_PASSAGES, _cosine
from longtask.models import ModelRoute
from longtask.policies import StepKind, TimeoutPolicy
from longtask.settings import Settings, SettingsError, load_settings
from longtask.text import EMBED_BATCH, chunks_of, embed_batches
from longtask.tooling.corpus import at_least_one, write_corpus

# The same llmock launcher the tests use: one place knows how to start it on a free port.
from longtask.tooling.servers import LlmServer

# The local LLM server as SPEC section 9 measured it: answers at once, streams without pauses.
LLM_SERVER_ARGS = ("--latency-ms", "0", "--stream-chunk-delay-ms", "0")


class BareLoopError(Exception):
    """A provider call failed: the loop has no retries, so its figures would mean nothing."""


class _Halted(Exception):
    """The loop reached the number of calls it was asked to stop at (a simulated crash)."""


class BareLoopFigures(BaseModel):
    documents: int
    calls: int
    concurrency: int
    seconds: float
    calls_per_second: float
    documents_per_second: float
    prompt_tokens: int
    completion_tokens: int


def default_route(settings: Settings) -> ModelRoute:
    """The route a task gets when the starter is given no model options."""
    return ModelRoute(
        embedding=settings.model_embedding,
        intermediate=settings.model_intermediate,
        reasoning=settings.model_reasoning,
        final=settings.model_final,
    )


class _Loop:
    """Every document's calls, at most ``concurrency`` of them in flight at once."""

    def __init__(
        self,
        client: openai.AsyncOpenAI,
        models: ModelRoute,
        concurrency: int,
        policy: TimeoutPolicy,
        halt_after: int | None = None,
    ) -> None:
        self._client = client
        self._halt_after = halt_after
        self._models = models
        self._gate = asyncio.Semaphore(concurrency)
        # A first attempt's limits, as the product's steps set them: the same timer work per call.
        self._policy = policy
        self._latency = LatencyBook(None)
        self.calls = 0
        self.prompt_tokens = 0
        self.completion_tokens = 0

    async def _limits(self, kind: StepKind) -> CallLimits:
        model = self._models.for_step(kind)
        return await self._latency.limits(self._policy, kind.task_type, model, 0)

    async def _chat(self, kind: StepKind, messages: prompts.Messages) -> str:
        async with self._gate:
            answer = await chat(
                self._client, self._models.for_step(kind), messages, await self._limits(kind)
            )
        self._count(answer.prompt_tokens, answer.completion_tokens)
        return answer.text

    def _count(self, prompt_tokens: int, completion_tokens: int) -> None:
        self.calls += 1
        self.prompt_tokens += prompt_tokens
        self.completion_tokens += completion_tokens
        if self._halt_after is not None and self.calls >= self._halt_after:
            raise _Halted

    async def _scores(self, chunks: list[str]) -> list[float]:
        """Each chunk's nearness to the key-passage query; the query rides in every batch,
        as in the product's embed step."""
        async with self._gate:
            vectors, tokens = await embed(
                self._client,
                self._models.embedding,
                [KEY_PASSAGE_QUERY, *chunks],
                await self._limits(StepKind.EMBED),
            )
        self._count(tokens, 0)
        return [_cosine(vectors[0], vector) for vector in vectors[1:]]

    async def _key_passages(self, chunks: list[str]) -> list[str]:
        batches = [
            chunks[b * EMBED_BATCH : (b + 1) * EMBED_BATCH]
            for b in range(embed_batches(len(chunks)))
        ]
        scored = await asyncio.gather(*(self._scores(batch) for batch in batches))
        scores = [score for batch in scored for score in batch]
        nearest = sorted(range(len(chunks)), key=lambda i: scores[i], reverse=True)
        return [chunks[i] for i in sorted(nearest[:KEY_PASSAGES])]

    async def _summaries(self, name: str, pages: list[str]) -> list[str]:
        return list(
            await asyncio.gather(
                *(
                    self._chat(StepKind.SUMMARIZE, prompts.summarize_page(name, page, text))
                    for page, text in enumerate(pages)
                )
            )
        )

    async def document(self, path: Path) -> None:
        """embed ‖ summarize → reason → report, as the product's workflow orders them."""
        pages = read_pages(path)
        passages, summaries = await asyncio.gather(
            self._key_passages(chunks_of(pages)), self._summaries(path.name, pages)
        )
        analysis = await self._chat(StepKind.REASON, prompts.reason(path.name, summaries, passages))
        await self._chat(StepKind.REPORT, prompts.report(path.name, summaries, analysis))


async def run_bare_loop(
    paths: list[Path],
    base_url: str,
    models: ModelRoute,
    concurrency: int,
    policy: TimeoutPolicy | None = None,
    halt_after: int | None = None,
    documents_in_flight: int | None = None,
) -> BareLoopFigures:
    """Run the document job over ``paths`` and measure it.

    The API key and the call limits (default ``policy``) come from the ``LTM_`` environment,
    as for a worker; the local server takes any key. The first failed call stops the loop
    with a ``BareLoopError``. With ``halt_after``, the loop dies as a crashed script would once
    that many calls have finished: every call in flight is dropped, and the figures are those
    of the work done until then. ``documents_in_flight`` (default ``concurrency``) bounds the
    documents begun and not finished, as the product's task window does.
    """
    settings = load_settings()
    client = make_client(base_url, settings.llm_api_key.get_secret_value())
    policy = policy or settings.timeout_policy()
    loop = _Loop(client, models, concurrency, policy, halt_after)
    # Documents are started ``concurrency`` at a time as well: enough to keep every call slot
    # busy (each document always has a call waiting), without reading all files up front.
    documents = asyncio.Semaphore(documents_in_flight or concurrency)

    async def one(path: Path) -> None:
        async with documents:
            await loop.document(path)

    try:
        started = time.monotonic()
        async with asyncio.TaskGroup() as group:
            for path in paths:
                group.create_task(one(path))
        seconds = time.monotonic() - started
    except ExceptionGroup as failed:
        halted, failed_otherwise = failed.split(_Halted)
        if halted is not None and failed_otherwise is None:
            seconds = time.monotonic() - started
            return _figures(paths, loop, concurrency, seconds)
        first = (failed_otherwise or failed).exceptions[0]
        raise BareLoopError(f"a call failed ({type(first).__name__}): {first}") from failed
    finally:
        await client.close()
    return _figures(paths, loop, concurrency, seconds)


def _figures(paths: list[Path], loop: _Loop, concurrency: int, seconds: float) -> BareLoopFigures:
    return BareLoopFigures(
        documents=len(paths),
        calls=loop.calls,
        concurrency=concurrency,
        seconds=round(seconds, 3),
        calls_per_second=round(loop.calls / seconds, 1),
        documents_per_second=round(len(paths) / seconds, 1),
        prompt_tokens=loop.prompt_tokens,
        completion_tokens=loop.completion_tokens,
    )


def parser() -> argparse.ArgumentParser:
    root = argparse.ArgumentParser(
        prog="python -m bench.bare_loop",
        description="The document job as a bare asyncio loop against an LLM server.",
    )
    root.add_argument("--documents", type=at_least_one, required=True, help="one-page documents")
    root.add_argument("--concurrency", type=at_least_one, default=100, help="calls in flight")
    root.add_argument(
        "--base-url", help="an OpenAI-compatible server (default: start a local one, zero latency)"
    )
    return root


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    try:
        models = default_route(load_settings())
    except SettingsError as error:
        print(error, file=sys.stderr)
        return 2
    with tempfile.TemporaryDirectory(prefix="bare-loop-") as folder, ExitStack() as started:
        paths = write_corpus(Path(folder), args.documents)
        base_url = args.base_url or started.enter_context(LlmServer(*LLM_SERVER_ARGS)).base_url
        try:
            figures = asyncio.run(run_bare_loop(paths, base_url, models, args.concurrency))
        except BareLoopError as error:
            # Usually calls queued past the first-chunk limit (LTM_STALL_TIMEOUT_SECONDS).
            hint = "fewer calls in flight or a longer stall limit may help"
            print(f"bare loop: {error}; {hint}", file=sys.stderr)
            return 1
    print(figures.model_dump_json())
    print(
        f"bare loop: {figures.documents} documents, {figures.calls} calls in "
        f"{figures.seconds:.1f} s: {figures.calls_per_second:.0f} calls/s, "
        f"{figures.documents_per_second:.0f} documents/s ({figures.concurrency} in flight)"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
