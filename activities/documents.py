"""Finding documents on disk and reading their pages (.txt, .md, .pdf).

A document that cannot be used (missing, unreadable, empty, binary, a corrupt PDF, too long)
does not stop its task: it is found with no pages, its batch reports it failed with a message
``"<path>: <what is wrong>; <what to do>"``, and the other documents go on. Only a task with no
usable document at all fails at once.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import io
import stat
from collections import Counter
from collections.abc import AsyncIterator
from pathlib import Path

from pypdf import PdfReader
from temporalio import activity
from temporalio.exceptions import ApplicationError

from activities.report_files import ReportStore
from longtask.engine.names import BAD_INPUT, LOAD_DOCUMENTS
from longtask.models import DocumentRef, LoadRequest
from longtask.text import chunks_of, split_pages

SUPPORTED_SUFFIXES = (".txt", ".md", ".pdf")
MIB = 1024 * 1024
# Refused before it is read: a worker holds a document in memory while it parses it, and
# each of its steps reads it again. Plain text this big is far past MAX_DOCUMENT_PAGES anyway.
MAX_DOCUMENT_BYTES = 64 * MIB
# One summary call per page, then the reasoning and report prompts carry every page's summary:
# past this many pages (some 500k tokens of summaries) no model's context window takes them,
# and every summary would be paid for nothing. A 3 MiB text is about 1,050 pages.
MAX_DOCUMENT_PAGES = 5_000
LEAVE_OUT = "or leave it out of the task"
# A task of thousands of unusable files fails with a summary that fits in Temporal (whose
# failures and payloads must stay well under 2 MiB): the count of each kind of problem, the
# first reasons in full, and the whole list in a file beside the task's reports.
SHOWN_REASONS = 20
# How often finding the documents tells Temporal this worker is alive.
HEARTBEAT_SECONDS = 0.5
SHOWN_KINDS = 10
UNUSABLE_LIST = "unusable-documents.txt"


def _bad_input(message: str) -> ApplicationError:
    # Reading the same bad file again cannot succeed: fail at once with what to do.
    return ApplicationError(message, type=BAD_INPUT, non_retryable=True)


def _named_problem(path: Path) -> str | None:
    """What is wrong with a path named directly, as far as its name and entry tell."""
    if not path.exists() and not path.is_symlink():
        return (
            f"{path}: no such file or folder; check the path (the worker reads it, so it must "
            "exist on the worker's machine)"
        )
    if path.suffix.lower() not in SUPPORTED_SUFFIXES:
        return f"{path}: unsupported file type; convert it to .txt, .md or .pdf, {LEAVE_OUT}"
    return None


def find_documents(paths: list[str]) -> list[Path]:
    """Files named directly, plus supported files found under named folders.

    A file named directly stays in the list even when it is missing or of another type: the
    task reports it failed and goes on with the others. Raises BAD_INPUT only when no document
    is left to try.
    """
    found: list[Path] = []
    problems: list[str] = []
    for raw in paths:
        path = Path(raw)
        if path.is_dir():
            inside = sorted(
                p
                for p in path.rglob("*")
                if p.suffix.lower() in SUPPORTED_SUFFIXES and not p.is_dir()
            )
            if not inside:
                problems.append(f"{path}: no .txt, .md or .pdf documents in this folder")
            found.extend(inside)
            continue
        problem = _named_problem(path)
        if problem is not None:
            problems.append(problem)
        found.append(path)
    if all(_named_problem(p) is not None for p in found):
        if not problems:
            raise _bad_input("no documents named; name files or folders")
        raise _bad_input(reasons_summary("no usable document", problems))
    return found


def _read(path: Path) -> bytes:
    """The document's bytes, or BAD_INPUT saying what is wrong with the file and what to do."""
    problem = _named_problem(path)
    if problem is not None:
        raise _bad_input(problem)
    try:
        entry = path.stat()
        if not stat.S_ISREG(entry.st_mode):
            # Never opened: reading a pipe or a device could block the worker for good.
            raise _bad_input(f"{path}: not a regular file; name a .txt, .md or .pdf file")
        if entry.st_size > MAX_DOCUMENT_BYTES:
            raise _bad_input(
                f"{path}: {entry.st_size / MIB:.1f} MiB, more than the "
                f"{MAX_DOCUMENT_BYTES // MIB} MiB a document may have; split it into smaller files"
            )
        return path.read_bytes()
    except FileNotFoundError:
        raise _bad_input(f"{path}: no such file (a link to nothing?); check the path") from None
    except PermissionError:
        raise _bad_input(
            f"{path}: permission denied; let the worker's user read it (e.g. chmod a+r), "
            + LEAVE_OUT
        ) from None
    except OSError as error:
        raise _bad_input(
            f"{path}: cannot be read ({error.strerror or error}); fix the file, {LEAVE_OUT}"
        ) from None


def _pdf_pages(path: Path, data: bytes) -> list[str]:
    try:
        reader = PdfReader(io.BytesIO(data))
        if reader.is_encrypted and not reader.decrypt(""):
            raise _bad_input(f"{path}: the PDF is password-protected; save a copy without one")
        return [(page.extract_text() or "").strip() for page in reader.pages]
    except ApplicationError:
        raise
    except Exception as error:
        # pypdf raises many kinds of error on a damaged file; none of them heals on a retry.
        raise _bad_input(
            f"{path}: not a readable PDF ({type(error).__name__}: {error}); export it again "
            f"or convert it to .txt, {LEAVE_OUT}"
        ) from None


def _text_pages(path: Path, data: bytes) -> list[str]:
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        raise _bad_input(
            f"{path}: not UTF-8 text (binary, or another encoding); convert it to UTF-8 text, "
            + LEAVE_OUT
        ) from None
    if "\x00" in text:
        raise _bad_input(f"{path}: binary data, not text; convert it to UTF-8 text, {LEAVE_OUT}")
    return split_pages(text)


def pages_in(path: Path, data: bytes) -> list[str]:
    """The text of each page; a text file is cut into pages of about a printed page."""
    if path.suffix.lower() == ".pdf":
        pages = [page for page in _pdf_pages(path, data) if page]
        empty = "no text found in the document (a scanned PDF needs OCR first)"
    else:
        pages = _text_pages(path, data)
        empty = "no text found in the document"
    if not pages:
        raise _bad_input(f"{path}: {empty}; add text, {LEAVE_OUT}")
    if len(pages) > MAX_DOCUMENT_PAGES:
        raise _bad_input(
            f"{path}: {len(pages):,} pages, more than the {MAX_DOCUMENT_PAGES:,} a document may "
            "have (the reasoning step reads every page's summary at once); split it into "
            "smaller files"
        )
    return pages


def read_pages(path: Path) -> list[str]:
    """The text of each page of the file at ``path``; BAD_INPUT says what is wrong if none."""
    return pages_in(path, _read(path))


def is_unusable(document: DocumentRef) -> bool:
    """Found unusable when the task began (every usable document has at least one page)."""
    return document.pages == 0


def unusable_reason(document: DocumentRef) -> str:
    """What is wrong with a document found unusable, and what to do; read again to say it."""
    path = Path(document.path)
    try:
        read_pages(path)
    except ApplicationError as error:
        return error.message
    return f"{path}: could not be read when the task began; start a new task to read it now"


def pages_of(document: DocumentRef) -> list[str]:
    """Pages of a document already found, refusing a file changed since the task began."""
    path = Path(document.path)
    if is_unusable(document):
        raise _bad_input(unusable_reason(document))
    if not path.is_file():
        raise _bad_input(
            f"{document.path}: the document disappeared while the task ran; put it back and "
            "resume the task"
        )
    data = _read(path)
    if hashlib.sha256(data).hexdigest() != document.sha256:
        raise _bad_input(
            f"{document.path}: the document changed while the task ran; start a new task to "
            "read the new version"
        )
    return pages_in(path, data)


def describe(index: int, path: Path) -> DocumentRef:
    """A usable document's reference; BAD_INPUT says what is wrong with an unusable one."""
    data = _read(path)
    pages = pages_in(path, data)
    return DocumentRef(
        index=index,
        path=str(path.resolve()),
        name=path.name,
        sha256=hashlib.sha256(data).hexdigest(),
        pages=len(pages),
        chunks=len(chunks_of(pages)),
    )


def unusable(index: int, path: Path) -> DocumentRef:
    """A document that cannot be used: no pages, so no step makes a call for it."""
    return DocumentRef(
        index=index, path=str(path.absolute()), name=path.name, sha256="", pages=0, chunks=0
    )


def _kind_of_problem(problem: str) -> str:
    """What is wrong, without the path: ``"<path>: <what is wrong>; <what to do>"`` gives
    ``"<what is wrong>"`` (a PDF's parser message, which differs per file, left out)."""
    _, _, what = problem.partition(": ")
    what = what.partition(";")[0]
    return what.partition(" (")[0] or problem


def reasons_summary(headline: str, problems: list[str], listed_in: str = "") -> str:
    """Every reason when they are few; else counts by kind, the first reasons, and where the
    whole list is. Nothing is lost: each kind is counted, each reason is in the file."""
    if len(problems) <= SHOWN_REASONS:
        return f"{headline}:\n" + "\n".join(problems)
    kinds = Counter(_kind_of_problem(problem) for problem in problems).most_common()
    lines = [f"{headline}: {len(problems):,} documents, none usable:"]
    lines += [f"  {count:,} x {kind}" for kind, count in kinds[:SHOWN_KINDS]]
    if len(kinds) > SHOWN_KINDS:
        rest = sum(count for _, count in kinds[SHOWN_KINDS:])
        lines.append(f"  {rest:,} x {len(kinds) - SHOWN_KINDS:,} other kinds of problem")
    lines.append(f"the first {SHOWN_REASONS}:")
    lines += problems[:SHOWN_REASONS]
    more = f"... and {len(problems) - SHOWN_REASONS:,} more"
    lines.append(f"{more}; every reason is in {listed_in}" if listed_in else more)
    return "\n".join(lines)


@contextlib.asynccontextmanager
async def _heartbeating(every_seconds: float = HEARTBEAT_SECONDS) -> AsyncIterator[None]:
    """Heartbeat while the body runs, however long one file takes: a worker that dies while it
    finds a large folder's documents is noticed after a heartbeat timeout, not minutes."""

    async def beat() -> None:
        while True:
            activity.heartbeat()
            await asyncio.sleep(every_seconds)

    ticker = asyncio.create_task(beat())
    try:
        yield
    finally:
        ticker.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await ticker


class DocumentLoader:
    """Finds a task's documents; writes the reasons of a task with none usable beside its
    reports, where the user reads them."""

    def __init__(self, reports: ReportStore) -> None:
        self._reports = reports

    async def _list_reasons(self, problems: list[str]) -> str:
        """Where the whole list of reasons now is ("" if it could not be written)."""
        relative = f"{activity.info().workflow_id}/{UNUSABLE_LIST}"
        try:
            await asyncio.to_thread(self._reports.write, relative, "\n".join(problems) + "\n")
        except OSError as error:
            activity.logger.warning("list of unusable documents not written: %s", error)
            return ""
        return str(self._reports.path_of(relative))

    @activity.defn(name=LOAD_DOCUMENTS)
    async def load_documents(self, request: LoadRequest) -> list[DocumentRef]:
        """Find the task's documents and count their pages and chunks.

        An unusable document is listed with no pages (its batch reports what is wrong); only
        a task with no usable document fails here. Parsing runs in a thread so this worker's
        other steps keep heartbeating meanwhile.
        """
        async with _heartbeating():
            paths = await asyncio.to_thread(find_documents, request.paths)
            documents = []
            problems = []
            for index, path in enumerate(paths):
                try:
                    documents.append(await asyncio.to_thread(describe, index, path))
                except ApplicationError as error:
                    problems.append(error.message)
                    documents.append(unusable(index, path))
        if len(problems) == len(documents):
            listed_in = await self._list_reasons(problems) if len(problems) > SHOWN_REASONS else ""
            raise _bad_input(reasons_summary("no usable document", problems, listed_in))
        return documents
