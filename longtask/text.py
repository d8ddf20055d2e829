"""Splitting text into pages and chunks: pure functions, the same on every worker."""

from __future__ import annotations

# Plain text has no pages: a form feed marks one where the author put it, otherwise a page is
# about what a printed page holds, cut at a paragraph boundary.
PAGE_CHARS = 3000
CHUNK_CHARS = 800


def _pack(pieces: list[str], limit: int, joiner: str) -> list[str]:
    """Greedily join pieces up to ``limit`` characters; a piece longer than that is cut.

    Linear in the text's length: a long piece is cut by index, never by slicing off its
    head again and again (a 32 MiB paragraph would be copied some 11,000 times), and the
    page being filled is a list of pieces joined once.
    """
    packed: list[str] = []
    current: list[str] = []
    size = 0  # characters of joiner.join(current)
    for piece in pieces:
        if len(piece) > limit:
            if current:
                packed.append(joiner.join(current))
                current, size = [], 0
            # Whole parts of ``limit`` characters; the rest (1 to ``limit``) fills on.
            rest = (len(piece) - 1) // limit * limit
            packed.extend(piece[start : start + limit] for start in range(0, rest, limit))
            piece = piece[rest:]
        grown = size + len(joiner) + len(piece) if current else len(piece)
        if grown > limit and current:
            packed.append(joiner.join(current))
            current, size = [piece], len(piece)
        else:
            current.append(piece)
            size = grown
    if current:
        packed.append(joiner.join(current))
    return packed


def split_pages(text: str, page_chars: int = PAGE_CHARS) -> list[str]:
    """Pages of a text document; never empty strings."""
    pages: list[str] = []
    for sheet in text.split("\f"):
        paragraphs = [p.strip() for p in sheet.split("\n\n") if p.strip()]
        pages.extend(_pack(paragraphs, page_chars, "\n\n"))
    return pages


def split_chunks(page: str, chunk_chars: int = CHUNK_CHARS) -> list[str]:
    """Chunks of one page for embedding, cut between words where possible."""
    return _pack(page.split(), chunk_chars, " ")


def chunks_of(pages: list[str], chunk_chars: int = CHUNK_CHARS) -> list[str]:
    return [chunk for page in pages for chunk in split_chunks(page, chunk_chars)]


# Chunks sent in one embedding request.
EMBED_BATCH = 32


def embed_batches(chunk_count: int) -> int:
    return -(-chunk_count // EMBED_BATCH)
