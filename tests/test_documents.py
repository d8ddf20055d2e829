"""Reading documents: pages and chunks of .txt, .md and .pdf, and clear errors on bad input."""

from __future__ import annotations

from pathlib import Path

import pytest
from temporalio.exceptions import ApplicationError

from activities.documents import find_documents, pages_of, read_pages
from longtask.models import DocumentRef
from longtask.text import CHUNK_CHARS, PAGE_CHARS, chunks_of, split_chunks, split_pages
from tests.conftest import EXAMPLES


def test_examples_hold_each_supported_kind_with_several_pages() -> None:
    documents = find_documents([str(EXAMPLES)])
    assert {d.suffix for d in documents} == {".md", ".txt", ".pdf"}
    for document in documents:
        assert len(read_pages(document)) >= 2, document


def test_pdf_pages_are_the_pdf_pages() -> None:
    pages = read_pages(EXAMPLES / "heat-pump-field-study.pdf")
    assert len(pages) == 3
    assert "Running costs and comfort" in pages[1]


def test_form_feed_marks_a_page_in_plain_text() -> None:
    assert split_pages("one\n\npara\fsecond page\ftwo") == ["one\n\npara", "second page", "two"]


def test_long_text_is_cut_at_paragraphs_within_the_page_size() -> None:
    paragraphs = [f"paragraph {i} " + "word " * 100 for i in range(20)]
    pages = split_pages("\n\n".join(paragraphs))
    assert len(pages) > 1
    assert all(len(page) <= PAGE_CHARS for page in pages)
    assert "".join(pages).replace("\n", "").replace(" ", "") == "".join(paragraphs).replace(" ", "")


def test_chunks_cover_every_word_and_respect_the_size() -> None:
    page = " ".join(f"w{i}" for i in range(1000))
    chunks = split_chunks(page)
    assert all(len(chunk) <= CHUNK_CHARS for chunk in chunks)
    assert " ".join(chunks).split() == page.split()
    assert len(chunks_of([page, page])) == 2 * len(chunks)


def test_bad_inputs_fail_at_once_with_the_file_named(tmp_path: Path) -> None:
    binary = tmp_path / "binary.txt"
    binary.write_bytes(b"\xff\xfe\x00\x81" * 50)
    corrupt = tmp_path / "corrupt.pdf"
    corrupt.write_bytes(b"%PDF-1.4 not really")
    empty = tmp_path / "empty.md"
    empty.write_text("   \n\n")
    cases = {
        binary: "not UTF-8 text",
        corrupt: "not a readable PDF",
        empty: "no text found",
    }
    for path, message in cases.items():
        with pytest.raises(ApplicationError, match=message) as raised:
            read_pages(path)
        assert str(path) in str(raised.value)
        assert raised.value.non_retryable
    with pytest.raises(ApplicationError, match="no such file"):
        find_documents([str(tmp_path / "missing.txt")])
    with pytest.raises(ApplicationError, match="unsupported file type"):
        (tmp_path / "notes.docx").write_text("x")
        find_documents([str(tmp_path / "notes.docx")])


def test_a_document_changed_mid_task_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "a.txt"
    path.write_text("first version")
    ref = DocumentRef(index=0, path=str(path), name="a.txt", sha256="0" * 64, pages=1, chunks=1)
    with pytest.raises(ApplicationError, match="changed while the task ran"):
        pages_of(ref)


def test_a_32_mib_paragraph_is_split_whole_then_refused_by_its_page_count(
    tmp_path: Path,
) -> None:
    """Cut by index. Were the split quadratic (the rest of the paragraph copied once per
    page cut off), the small pages below would copy some 5 TB and the suite's timeout would
    end the test; cut by index, it is a fraction of a second."""
    paragraph = ("figure " * (32 * 1024 * 1024 // 7)).strip()
    for page_chars in (PAGE_CHARS, 100):
        pages = split_pages(paragraph, page_chars)
        assert len(pages) == -(-len(paragraph) // page_chars)
        assert all(len(page) == page_chars for page in pages[:-1])
        assert "".join(pages) == paragraph
    big = tmp_path / "one-paragraph.txt"
    big.write_text(paragraph)
    with pytest.raises(ApplicationError, match="pages, more than the 5,000"):
        read_pages(big)


def test_many_short_paragraphs_fill_pages_in_order() -> None:
    paragraphs = [f"p{n}" for n in range(200_000)]
    pages = split_pages("\n\n".join(paragraphs))
    assert all(len(page) <= PAGE_CHARS for page in pages)
    assert "\n\n".join(pages).split("\n\n") == paragraphs
