"""Progress math: percent, ETA unknown then known, nested roll-up, checkpoint cadence."""

from __future__ import annotations

from longtask.progress import CheckpointCadence, ProgressNode, build_record, eta_seconds, percent


def test_record_has_exactly_the_spec_fields() -> None:
    record = build_record("t1", 3, 8, 12.345, {"document": "a.pdf"})
    assert set(record.model_dump()) == {
        "task_id",
        "progress",
        "step",
        "total",
        "elapsed_seconds",
        "eta_seconds",
        "metadata",
    }
    assert record.progress == 37.5
    assert record.elapsed_seconds == 12.35
    assert record.metadata == {"document": "a.pdf"}


def test_percent_rounds_to_two_decimals_and_stays_in_range() -> None:
    assert percent(1, 3) == 33.33
    assert percent(2, 3) == 66.67
    assert percent(5, 3) == 100.0
    assert percent(0, 0) == 0.0


def test_eta_is_unknown_until_a_step_finishes_then_follows_the_rate() -> None:
    assert build_record("t", 0, 10, 5.0).eta_seconds is None
    assert eta_seconds(1, 10, 0.0) is None
    # 2 steps in 4 s: 0.5 steps/s, 8 steps left -> 16 s.
    assert build_record("t", 2, 10, 4.0).eta_seconds == 16.0
    assert build_record("t", 10, 10, 4.0).eta_seconds == 0.0


def test_parent_rolls_up_children_by_steps() -> None:
    pages = [ProgressNode(name=f"page {i}", total=1, done=1 if i < 3 else 0) for i in range(4)]
    document = ProgressNode(
        name="a.pdf",
        children=[
            ProgressNode(name="embed", total=2, done=2),
            ProgressNode(name="summarize", children=pages),
            ProgressNode(name="reason", total=1),
        ],
    )
    other = ProgressNode(name="b.txt", children=[ProgressNode(name="embed", total=3, done=0)])
    task = ProgressNode(name="task", children=[document, other])
    assert document.child("summarize").percent() == 75.0
    assert (document.steps_done(), document.steps_total()) == (5, 7)
    assert document.percent() == 71.43
    assert (task.steps_done(), task.steps_total()) == (5, 10)
    assert task.percent() == 50.0


def test_summary_cuts_depth_but_keeps_counts() -> None:
    leaf = ProgressNode(name="p", total=1, done=1)
    tree = ProgressNode(name="t", children=[ProgressNode(name="d", children=[leaf, leaf])])
    cut = tree.summary(depth=1)
    assert cut.children[0].children == []
    assert (cut.children[0].done, cut.children[0].total) == (2, 2)


def test_cadence_every_step_decile_ten_steps_or_thirty_seconds() -> None:
    cadence = CheckpointCadence(on_every_step=False)
    assert not cadence.due(step=0, progress=0.0, now=1.0)
    assert cadence.due(step=1, progress=10.0, now=1.0)  # crossed 10 %
    cadence.mark(1, 10.0, 1.0)
    assert not cadence.due(step=5, progress=19.9, now=2.0)
    assert cadence.due(step=11, progress=19.9, now=2.0)  # 10 steps since
    assert cadence.due(step=2, progress=11.0, now=31.0)  # 30 s since
    every = CheckpointCadence()
    assert every.due(step=1, progress=1.0, now=0.0)  # each completed step


def test_cost_and_percent_are_floats_even_when_zero() -> None:
    # Search attributes of type Double refuse an int: a 0 must still be 0.0.
    from longtask.cost import TokenUsage

    assert isinstance(TokenUsage().cost(), float)
    assert isinstance(build_record("t", 0, 0, 0).progress, float)
