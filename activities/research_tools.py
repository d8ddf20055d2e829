"""The research agent's tools over a local corpus: index it, search its embedded chunks by
cosine similarity, read a page, list its documents."""

from __future__ import annotations

import asyncio
import math
from pathlib import Path

from pydantic import BaseModel, Field

from activities.documents import find_documents, read_pages
from longtask.agent import ToolEnv, tool
from longtask.text import EMBED_BATCH, split_chunks

# Characters of a page `read_page` returns at most: a model's context is not a file system.
PAGE_CHARS = 4000
INDEX_FILE = "corpus-index.json"


class Chunk(BaseModel):
    document: str
    page: int
    text: str
    vector: list[float] = Field(default_factory=list)


class CorpusIndex(BaseModel):
    documents: dict[str, int]
    chunks: list[Chunk]


def _cosine(a: list[float], b: list[float]) -> float:
    dot = sum(x * y for x, y in zip(a, b, strict=True))
    norm = math.sqrt(sum(x * x for x in a)) * math.sqrt(sum(y * y for y in b))
    return dot / norm if norm else 0.0


def _corpus(paths: list[str]) -> dict[str, list[str]]:
    """Pages of every document, by name (read off the event loop by the callers)."""
    return {path.name: read_pages(path) for path in find_documents(paths)}


async def _build_index(env: ToolEnv) -> CorpusIndex:
    """Chunk and embed the corpus, and keep the index in the task's folder."""
    pages = await asyncio.to_thread(_corpus, list(env.context["paths"]))
    chunks = [
        Chunk(document=name, page=number + 1, text=text)
        for name, doc_pages in pages.items()
        for number, page in enumerate(doc_pages)
        for text in split_chunks(page)
    ]
    for start in range(0, len(chunks), EMBED_BATCH):
        batch = chunks[start : start + EMBED_BATCH]
        vectors = await env.embed([chunk.text for chunk in batch])
        for chunk, vector in zip(batch, vectors, strict=True):
            chunk.vector = vector
    index = CorpusIndex(documents={name: len(p) for name, p in pages.items()}, chunks=chunks)
    env.workdir.mkdir(parents=True, exist_ok=True)
    await asyncio.to_thread((env.workdir / INDEX_FILE).write_text, index.model_dump_json())
    return index


async def _index(env: ToolEnv) -> CorpusIndex:
    """The task's index; built again if this worker's folder does not hold it."""
    path: Path = env.workdir / INDEX_FILE
    try:
        return CorpusIndex.model_validate_json(await asyncio.to_thread(path.read_text))
    except FileNotFoundError:
        return await _build_index(env)


class NoArguments(BaseModel):
    pass


class SearchArgs(BaseModel):
    query: str = Field(description="what to look for, in a few words")


class ReadPageArgs(BaseModel):
    document: str = Field(description="a document name, as list_documents gives it")
    page: int = Field(1, description="page number, from 1")


@tool("index_corpus", timeout=300, max_attempts=3)
async def index_corpus(args: NoArguments, env: ToolEnv) -> dict[str, object]:
    """Chunk and embed every document of the corpus, so it can be searched."""
    index = await _build_index(env)
    return {"documents": index.documents, "chunks": len(index.chunks)}


@tool("list_documents", timeout=30, max_attempts=3)
async def list_documents(args: NoArguments, env: ToolEnv) -> dict[str, int]:
    """List the documents of the corpus with their number of pages."""
    return (await _index(env)).documents


@tool("search_corpus", timeout=60, max_attempts=3)
async def search_corpus(args: SearchArgs, env: ToolEnv) -> list[dict[str, object]]:
    """Search the corpus: the passages nearest to the query, with document and page."""
    index = await _index(env)
    query = (await env.embed([args.query]))[0]
    ranked = sorted(index.chunks, key=lambda chunk: _cosine(query, chunk.vector), reverse=True)
    top = ranked[: int(env.context.get("search_results", 3))]
    return [{"document": c.document, "page": c.page, "text": c.text} for c in top]


@tool("read_page", timeout=30, max_attempts=3)
async def read_page(args: ReadPageArgs, env: ToolEnv) -> dict[str, object]:
    """Read one page of a document of the corpus."""
    pages = await asyncio.to_thread(_corpus, list(env.context["paths"]))
    doc_pages = pages.get(args.document)
    if doc_pages is None:
        return {"error": f"no document {args.document!r}", "documents": sorted(pages)}
    if not 1 <= args.page <= len(doc_pages):
        return {"error": f"{args.document} has pages 1 to {len(doc_pages)}"}
    text = doc_pages[args.page - 1][:PAGE_CHARS]
    return {"document": args.document, "page": args.page, "text": text}


# The search first: a model that calls one tool calls the one that finds passages.
RESEARCH_TOOLS = [search_corpus, read_page, list_documents]
