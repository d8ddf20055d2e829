"""Generated small plain-text documents, for runs over thousands of documents.

python -m longtask.tooling.corpus DIR --count N [--pages P] [--seed S]
"""

from __future__ import annotations

import argparse
import random
import sys
import time
from pathlib import Path

# Pages are separated by a form feed, the convention ``longtask.text.split_pages`` honours, so
# each generated page is exactly one page to the agent. A page stays well under a chunk
# (``CHUNK_CHARS``), so it is also exactly one chunk: the calls per document are predictable.
PAGE_BREAK = "\f"
PAGE_MIN_CHARS = 300
PAGE_MAX_CHARS = 450

_SUBJECTS = (
    "the pilot team", "operations", "the vendor", "finance", "the night shift", "the auditor",
    "the regional office", "support", "the board", "procurement", "the field crew", "legal",
)  # fmt: skip
_VERBS = (
    "reported", "approved", "delayed", "measured", "questioned", "reduced", "doubled",
    "reviewed", "flagged", "estimated", "replaced", "confirmed", "postponed", "audited",
)  # fmt: skip
_OBJECTS = (
    "the budget", "latency", "the backlog", "energy use", "the contract", "headcount",
    "failure rates", "the rollout", "customer churn", "inventory", "the migration plan",
    "response times", "the safety review", "spare capacity", "the forecast", "ticket volume",
)  # fmt: skip
_TAILS = (
    "after the outage", "ahead of schedule", "despite the freeze", "for the third quarter",
    "in two regions", "without a rollback", "pending a second opinion", "at the March review",
    "under the new policy", "before the audit closed", "with no customer impact",
)  # fmt: skip
_MONTHS = ("January", "March", "May", "July", "September", "November")


def _sentence(rng: random.Random) -> str:
    # Names, figures and dates, as the summarize prompt asks to keep them: text that looks
    # like a report, and a prompt that differs from every other document's.
    figure = f"{rng.randint(2, 98)} %" if rng.random() < 0.5 else f"{rng.randint(10, 9999):,}"
    date = f"{rng.randint(1, 28)} {rng.choice(_MONTHS)} {rng.randint(2019, 2025)}"
    words = [
        rng.choice(_SUBJECTS).capitalize(),
        rng.choice(_VERBS),
        rng.choice(_OBJECTS),
        f"by {figure}" if rng.random() < 0.6 else f"on {date}",
        rng.choice(_TAILS),
    ]
    return " ".join(words) + "."


def _page(rng: random.Random, number: int, page: int) -> str:
    target = rng.randint(PAGE_MIN_CHARS, PAGE_MAX_CHARS)
    paragraphs = [f"Document {number}, page {page}."]
    size = len(paragraphs[0])
    while size < target:
        paragraph = " ".join(_sentence(rng) for _ in range(rng.randint(2, 3)))
        paragraphs.append(paragraph)
        size += len(paragraph) + 2
    return "\n\n".join(paragraphs)


def document_text(number: int, pages: int, seed: int) -> str:
    """The text of document ``number`` (1-based): the same for the same arguments, anywhere."""
    # A string seed is hashed with SHA-512, not ``hash()``: stable across processes.
    rng = random.Random(f"{seed}:{number}")
    return PAGE_BREAK.join(_page(rng, number, page) for page in range(1, pages + 1)) + "\n"


def write_corpus(directory: Path, count: int, pages: int = 1, seed: int = 7) -> list[Path]:
    """Write ``count`` documents of ``pages`` pages each into ``directory``; returns their paths.

    Names are zero-padded to the width of ``count`` so they sort in order. Running it again
    rewrites the same bytes; files it did not name are left alone.
    """
    if count < 1 or pages < 1:
        raise ValueError(f"count and pages must be at least 1, got {count} and {pages}")
    directory.mkdir(parents=True, exist_ok=True)
    width = len(str(count))
    paths = []
    for number in range(1, count + 1):
        path = directory / f"doc-{number:0{width}d}.txt"
        path.write_bytes(document_text(number, pages, seed).encode("utf-8"))
        paths.append(path)
    return paths


def at_least_one(raw: str) -> int:
    """An argparse type: a whole number of 1 or more."""
    value = int(raw)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def parser() -> argparse.ArgumentParser:
    root = argparse.ArgumentParser(
        prog="python -m longtask.tooling.corpus",
        description="Write generated small text documents.",
    )
    root.add_argument("directory", type=Path, help="folder to write into (created if missing)")
    root.add_argument("--count", type=at_least_one, required=True, help="documents to write")
    root.add_argument("--pages", type=at_least_one, default=1, help="pages per document")
    root.add_argument("--seed", type=int, default=7, help="same seed, same bytes")
    return root


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    started = time.monotonic()
    paths = write_corpus(args.directory, args.count, args.pages, args.seed)
    seconds = time.monotonic() - started
    each = f"{args.pages} page{'s' if args.pages > 1 else ''} each"
    print(f"wrote {len(paths)} documents ({each}) to {args.directory} in {seconds:.1f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
