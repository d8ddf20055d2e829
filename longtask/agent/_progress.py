"""A node of a long task's progress tree, as the task's code declares and advances it."""

from __future__ import annotations

from typing import Protocol

from longtask.agent._book import AgentBook


class ProgressOwner(Protocol):
    """What a progress node needs of its task: the book, and a way to say it changed."""

    book: AgentBook

    def changed(self) -> None: ...


class Progress:
    """A node of the task's progress tree; a node with sub-tasks is their roll-up."""

    def __init__(self, context: ProgressOwner, path: tuple[str, ...]) -> None:
        self._context = context
        self._path = path

    def total(self, steps: int) -> Progress:
        """Declare how many steps this node has."""
        self._context.book.node(self._path).total = steps
        self._context.changed()
        return self

    def advance(self, steps: int = 1) -> None:
        # A leaf counts at most its total when rolled up (ProgressNode.steps_done).
        self._context.book.node(self._path).done += steps
        self._context.changed()

    def sub(self, name: str, total: int | None = None) -> Progress:
        """The sub-task ``name`` of this node (made on first use), optionally sized."""
        child = Progress(self._context, (*self._path, name))
        if total is not None:
            child.total(total)
        return child

    def finish(self) -> None:
        """Mark every step of this node done (work that ended early, or was already done)."""
        node = self._context.book.node(self._path)
        node.done = max(node.total, node.done)
        for child in node.children:
            Progress(self._context, (*self._path, child.name)).finish()
        self._context.changed()

    @property
    def done(self) -> int:
        return self._context.book.node(self._path).steps_done()
