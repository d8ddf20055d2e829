"""The bare-loop baseline makes the product's calls, each once, against a real LLM server."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import pytest

from activities.documents import read_pages
from bench.bare_loop import LLM_SERVER_ARGS, BareLoopError, default_route, run_bare_loop
from longtask.policies import StepKind
from longtask.settings import Settings
from longtask.text import chunks_of, embed_batches
from longtask.tooling.corpus import write_corpus
from longtask.tooling.servers import LlmServer
from tests.bench_runs import run_bench

ROUTE = default_route(Settings())


def calls_of(path: Path) -> int:
    """The product's calls for one document: embed batches, one summary per page, reason, report."""
    pages = read_pages(path)
    return embed_batches(len(chunks_of(pages))) + len(pages) + 2


async def test_one_page_documents_make_four_calls_each(tmp_path: Path) -> None:
    paths = write_corpus(tmp_path, 5)
    assert [calls_of(path) for path in paths] == [4] * 5
    with LlmServer(*LLM_SERVER_ARGS) as llm:
        figures = await run_bare_loop(paths, llm.base_url, ROUTE, concurrency=3)
        requests = llm.requests()
    assert figures.documents == 5
    assert figures.calls == 20
    assert figures.concurrency == 3
    assert figures.seconds > 0
    assert figures.calls_per_second > 0
    assert figures.documents_per_second > 0
    assert figures.prompt_tokens > 0
    assert figures.completion_tokens > 0
    # Each call reached the server once, all answered, each step on its route's model.
    assert len(requests) == figures.calls
    assert all(r["status"] == 200 and r["completed"] for r in requests)
    by_step = Counter((r["path"].rsplit("/", 1)[-1], r["model"]) for r in requests)
    assert by_step == {
        ("embeddings", ROUTE.for_step(StepKind.EMBED)): 5,
        ("completions", ROUTE.for_step(StepKind.SUMMARIZE)): 5,
        ("completions", ROUTE.for_step(StepKind.REASON)): 5,
        ("completions", ROUTE.for_step(StepKind.REPORT)): 5,
    }
    # Every document's prompts are its own: no two calls share a fingerprint.
    assert len({r["fingerprint"] for r in requests}) == len(requests)


async def test_pages_add_one_summary_call_each(tmp_path: Path) -> None:
    paths = write_corpus(tmp_path, 2, pages=3)
    with LlmServer(*LLM_SERVER_ARGS) as llm:
        figures = await run_bare_loop(paths, llm.base_url, ROUTE, concurrency=100)
        requests = llm.requests()
    assert figures.calls == sum(calls_of(path) for path in paths) == 2 * (1 + 3 + 2)
    assert len(requests) == figures.calls


async def test_a_failed_call_stops_the_loop_with_the_error(tmp_path: Path) -> None:
    paths = write_corpus(tmp_path, 3)
    with LlmServer(*LLM_SERVER_ARGS) as llm:
        llm.add({"type": "fail", "status": 401})
        with pytest.raises(BareLoopError, match="AuthenticationError"):
            await run_bare_loop(paths, llm.base_url, ROUTE, concurrency=1)


def test_cli_starts_its_own_server_and_prints_the_figures() -> None:
    figures, (human_line,) = run_bench(
        "bench.bare_loop", "--documents", "3", "--concurrency", "10", timeout=120
    )
    assert figures["documents"] == 3
    assert figures["calls"] == 12
    assert human_line.startswith("bare loop: 3 documents, 12 calls in ")
