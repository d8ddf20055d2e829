"""Finding documents on disk and reading their pages (.txt, .md, .pdf)."""

from __future__ import annotations

import asyncio
import hashlib
from pathlib import Path

from pypdf import PdfReader
from pypdf.errors import PdfReadError
from temporalio import activity
from temporalio.exceptions import ApplicationError

from longtask.models import DocumentRef, LoadRequest
from longtask.text import chunks_of, split_pages

SUPPORTED_SUFFIXES = (".txt", ".md", ".pdf")
BAD_INPUT = "BAD_INPUT"


def _bad_input(message: str) -> ApplicationError:
    # Reading the same bad file again cannot succeed: fail at once with what to do.
    return ApplicationError(message, type=BAD_INPUT, non_retryable=True)


def find_documents(paths: list[str]) -> list[Path]:
    """Files named directly, plus supported files found under named folders, sorted."""
    found: list[Path] = []
    for raw in paths:
        path = Path(raw)
        if path.is_dir():
            found.extend(
                sorted(p for p in path.rglob("*") if p.suffix.lower() in SUPPORTED_SUFFIXES)
            )
        elif path.is_file():
            if path.suffix.lower() not in SUPPORTED_SUFFIXES:
                raise _bad_input(f"{raw}: unsupported file type; use .txt, .md or .pdf")
            found.append(path)
        else:
            raise _bad_input(f"{raw}: no such file or folder (paths are read by the worker)")
    if not found:
        raise _bad_input(f"no .txt, .md or .pdf documents under {', '.join(paths)}")
    return found


def read_pages(path: Path) -> list[str]:
    """The text of each page; a text file is cut into pages of about a printed page."""
    if path.suffix.lower() == ".pdf":
        try:
            reader = PdfReader(path)
            pages = [(page.extract_text() or "").strip() for page in reader.pages]
        except (PdfReadError, ValueError, OSError) as error:
            raise _bad_input(f"{path}: not a readable PDF ({error})") from None
        pages = [page for page in pages if page]
    else:
        try:
            pages = split_pages(path.read_text(encoding="utf-8"))
        except UnicodeDecodeError:
            raise _bad_input(f"{path}: not UTF-8 text; convert it or remove it") from None
    if not pages:
        raise _bad_input(f"{path}: no text found in the document")
    return pages


def digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def pages_of(document: DocumentRef) -> list[str]:
    """Pages of a document already found, refusing a file changed since the task began."""
    path = Path(document.path)
    if not path.is_file():
        raise _bad_input(f"{document.path}: the document disappeared while the task ran")
    if digest(path) != document.sha256:
        raise _bad_input(f"{document.path}: the document changed while the task ran")
    return read_pages(path)


def describe(index: int, path: Path) -> DocumentRef:
    pages = read_pages(path)
    return DocumentRef(
        index=index,
        path=str(path.resolve()),
        name=path.name,
        sha256=digest(path),
        pages=len(pages),
        chunks=len(chunks_of(pages)),
    )


@activity.defn(name="load_documents")
async def load_documents(request: LoadRequest) -> list[DocumentRef]:
    """Find the task's documents and count their pages and chunks.

    Parsing runs in a thread so this worker's other steps keep heartbeating meanwhile.
    """
    paths = await asyncio.to_thread(find_documents, request.paths)
    documents = []
    for index, path in enumerate(paths):
        documents.append(await asyncio.to_thread(describe, index, path))
        activity.heartbeat(index)
    return documents
