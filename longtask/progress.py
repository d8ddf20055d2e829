"""Progress math: the progress record, nested roll-up, ETA, and the checkpoint cadence."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, Field


class ProgressRecord(BaseModel):
    """The progress record; its field names are part of the public contract."""

    task_id: str
    progress: float
    step: int
    total: int
    elapsed_seconds: float
    # None while no step has finished: the rate, and so the ETA, is still unknown.
    eta_seconds: float | None
    metadata: dict[str, Any] = Field(default_factory=dict)


def percent(done: int, total: int) -> float:
    """Percent done, 0-100, 2 decimals; an empty task is 0 % until it is marked done."""
    if total <= 0:
        return 0.0
    return round(min(done, total) * 100.0 / total, 2)


def eta_seconds(done: int, total: int, elapsed_seconds: float) -> float | None:
    """Remaining steps divided by the observed rate; None while the rate is unknown."""
    if done <= 0 or elapsed_seconds <= 0:
        return None
    rate = done / elapsed_seconds
    return round(max(total - done, 0) / rate, 2)


def build_record(
    task_id: str,
    done: int,
    total: int,
    elapsed_seconds: float,
    metadata: dict[str, Any] | None = None,
) -> ProgressRecord:
    return ProgressRecord(
        task_id=task_id,
        progress=percent(done, total),
        step=done,
        total=total,
        elapsed_seconds=round(max(elapsed_seconds, 0.0), 2),
        eta_seconds=eta_seconds(done, total, elapsed_seconds),
        metadata=metadata or {},
    )


def progress_text(record: ProgressRecord) -> str:
    """How far a task is, for people: ``12.50 % (5/40 steps)``; while a run has not found its
    documents (``metadata.phase``), that phase first, and the figures only once there are any
    (those a continued run carries over), never a bare ``0.00 % (0/0 steps)``."""
    figures = f"{record.progress:.2f} % ({record.step}/{record.total} steps)"
    phase = record.metadata.get("phase")
    if phase is None:
        return figures
    if record.total == 0:
        return f"{phase}..."
    return f"{phase}..., {figures} so far"


class ProgressNode(BaseModel):
    """A sub-task. A leaf counts its own steps; a parent is the roll-up of its children.

    Rolling up steps (not averaging children's percents) keeps every step worth the same,
    so a 40-page document weighs more than a 2-page one, as it takes longer.
    """

    name: str
    done: int = 0
    total: int = 0
    children: list[ProgressNode] = Field(default_factory=list)

    def steps_done(self) -> int:
        if not self.children:
            return min(self.done, self.total)
        return sum(child.steps_done() for child in self.children)

    def steps_total(self) -> int:
        if not self.children:
            return self.total
        return sum(child.steps_total() for child in self.children)

    def percent(self) -> float:
        return percent(self.steps_done(), self.steps_total())

    def child(self, name: str) -> ProgressNode:
        """The direct child called ``name``; KeyError names the missing one."""
        for node in self.children:
            if node.name == name:
                return node
        raise KeyError(f"{self.name!r} has no sub-task {name!r}")

    def summary(self, depth: int) -> ProgressNode:
        """A copy cut ``depth`` levels down, each cut node keeping its rolled-up counts."""
        if depth <= 0 or not self.children:
            return ProgressNode(name=self.name, done=self.steps_done(), total=self.steps_total())
        return ProgressNode(
            name=self.name,
            done=self.steps_done(),
            total=self.steps_total(),
            children=[child.summary(depth - 1) for child in self.children],
        )


# The status tree's rolled-up nodes: every ended document, every document not started.
ENDED_NODE = "ended documents"
WAITING_NODE = "waiting documents"


class CheckpointCadence(BaseModel):
    """Decides when a checkpoint is due: a completed step, a 10 % boundary, 10 steps or 30 s.

    The article wrote at each 10 % crossing; its production cadence was every 10 steps or 30 s,
    whichever came first. Both hold here, on top of a checkpoint after each completed step.
    """

    on_every_step: bool = True
    every_steps: int = 10
    every_seconds: float = 30.0
    last_step: int = 0
    last_decile: int = 0
    last_at: float = 0.0

    def due(self, step: int, progress: float, now: float) -> bool:
        decile = int(progress // 10)
        return (
            (self.on_every_step and step > self.last_step)
            or decile > self.last_decile
            or step - self.last_step >= self.every_steps
            or now - self.last_at >= self.every_seconds
        )

    def mark(self, step: int, progress: float, now: float) -> None:
        self.last_step = step
        self.last_decile = int(progress // 10)
        self.last_at = now
