"""Generated documents: names, bytes the same for the same seed, pages as the agent reads them."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import pytest

from activities.documents import describe, find_documents, pages_of
from longtask.text import embed_batches
from longtask.tooling.corpus import write_corpus

ROOT = Path(__file__).resolve().parent.parent


def test_writes_count_documents_named_in_order(tmp_path: Path) -> None:
    paths = write_corpus(tmp_path / "new" / "folder", 12)
    assert [p.name for p in paths] == [f"doc-{n:02d}.txt" for n in range(1, 13)]
    assert sorted(p.name for p in (tmp_path / "new" / "folder").iterdir()) == [
        p.name for p in paths
    ]
    # The agent finds exactly these, in this order.
    assert find_documents([str(tmp_path / "new")]) == paths


def test_same_seed_same_bytes_other_seed_other_bytes(tmp_path: Path) -> None:
    first = [p.read_bytes() for p in write_corpus(tmp_path / "a", 20, pages=2, seed=3)]
    again = [p.read_bytes() for p in write_corpus(tmp_path / "a", 20, pages=2, seed=3)]
    elsewhere = [p.read_bytes() for p in write_corpus(tmp_path / "b", 20, pages=2, seed=3)]
    other = [p.read_bytes() for p in write_corpus(tmp_path / "c", 20, pages=2, seed=4)]
    assert first == again == elsewhere
    assert all(a != b for a, b in zip(first, other, strict=True))


def test_documents_differ_from_each_other(tmp_path: Path) -> None:
    contents = [p.read_bytes() for p in write_corpus(tmp_path, 500)]
    assert len(set(contents)) == 500
    # Not only the heading differs: the prompts the LLM server sees differ in their text.
    bodies = {c.split(b"\n\n", 1)[1] for c in contents}
    assert len(bodies) == 500


@pytest.mark.parametrize("pages", [1, 3])
def test_pages_and_chunks_as_the_agent_counts_them(tmp_path: Path, pages: int) -> None:
    for index, path in enumerate(write_corpus(tmp_path, 200, pages=pages)):
        document = describe(index, path)
        assert document.pages == pages
        # A page is one chunk, so a document's calls are predictable: batches + pages + 2.
        assert document.chunks == pages
        assert embed_batches(document.chunks) == 1
        assert all(300 <= len(page) <= 800 for page in pages_of(document))


def test_ten_thousand_documents_in_a_few_seconds(tmp_path: Path) -> None:
    started = time.monotonic()
    paths = write_corpus(tmp_path, 10_000)
    assert time.monotonic() - started < 5
    assert paths[0].name == "doc-00001.txt"
    assert paths[-1].name == "doc-10000.txt"


def test_cli_reports_what_it_wrote_and_refuses_a_zero_count(tmp_path: Path) -> None:
    command = [sys.executable, "-m", "longtask.tooling.corpus", str(tmp_path), "--pages", "2"]
    done = subprocess.run([*command, "--count", "7"], cwd=ROOT, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith(f"wrote 7 documents (2 pages each) to {tmp_path} in ")
    assert len(list(tmp_path.iterdir())) == 7
    refused = subprocess.run([*command, "--count", "0"], cwd=ROOT, capture_output=True, text=True)
    assert refused.returncode == 2
    assert "--count: must be at least 1" in refused.stderr
