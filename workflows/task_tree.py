"""The nested progress tree of a task: task -> document -> step -> page."""

from __future__ import annotations

from longtask.models import DocumentRef, ProgressEvent
from longtask.policies import StepKind
from longtask.progress import ProgressNode


def document_node(document: DocumentRef) -> ProgressNode:
    pages = [ProgressNode(name=f"page {p + 1}", total=1) for p in range(document.pages)]
    return ProgressNode(
        name=document.name,
        children=[
            ProgressNode(name=StepKind.EMBED.value, total=document.calls(StepKind.EMBED)),
            ProgressNode(name=StepKind.SUMMARIZE.value, children=pages),
            ProgressNode(name=StepKind.REASON.value, total=1),
            ProgressNode(name=StepKind.REPORT.value, total=1),
        ],
    )


def step_node(tree: ProgressNode, document: DocumentRef, kind: StepKind) -> ProgressNode:
    return tree.children[document.index].child(kind.value)


def apply_event(tree: ProgressNode, document: DocumentRef, event: ProgressEvent) -> None:
    """Record a running step's progress; counts only grow, so a late signal changes nothing."""
    node = step_node(tree, document, event.kind)
    if node.children:
        for item in event.done_items:
            if 0 <= item < len(node.children):
                node.children[item].done = 1
    else:
        node.done = max(node.done, min(event.done, node.total))


def complete_step(tree: ProgressNode, document: DocumentRef, kind: StepKind) -> None:
    node = step_node(tree, document, kind)
    for leaf in node.children or [node]:
        leaf.done = leaf.total
