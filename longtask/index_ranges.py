"""Sets of document indexes written as ranges ("0-4095,4100"): how a checkpoint of a large
task names its finished documents in a few bytes instead of one entry each."""

from __future__ import annotations

from collections.abc import Iterable


def to_ranges(indexes: Iterable[int]) -> str:
    ordered = sorted(set(indexes))
    parts: list[str] = []
    start = previous = None
    for index in ordered:
        if start is None or previous is None:
            start = previous = index
        elif index == previous + 1:
            previous = index
        else:
            parts.append(str(start) if start == previous else f"{start}-{previous}")
            start = previous = index
    if start is not None and previous is not None:
        parts.append(str(start) if start == previous else f"{start}-{previous}")
    return ",".join(parts)


def from_ranges(text: str) -> set[int]:
    """The indexes ``text`` names; a malformed part raises ValueError naming it."""
    indexes: set[int] = set()
    for part in filter(None, (piece.strip() for piece in text.split(","))):
        first, _, last = part.partition("-")
        try:
            low, high = int(first), int(last or first)
        except ValueError:
            raise ValueError(f"not an index range: {part!r}") from None
        if low < 0 or high < low:
            raise ValueError(f"not an index range: {part!r}")
        indexes.update(range(low, high + 1))
    return indexes
