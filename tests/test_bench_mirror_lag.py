"""The mirror-lag benchmark runs end to end at a tiny size and sees every checkpoint."""

from __future__ import annotations

from tests.bench_runs import run_bench


def test_an_outside_reader_times_every_checkpoint() -> None:
    # Workflows and activities in two worker processes (LTM_WORKER_RUNS): the split a
    # deployment may choose runs a task end to end.
    figures, human = run_bench(
        "bench.mirror_lag",
        "--documents",
        "4",
        "--tasks",
        "1",
        "--compact-documents",
        "101",
        "--latency-ms",
        "0",
        "--split-workers",
    )
    assert figures["tasks"] == 1
    assert figures["documents"] == figures["completed_documents"] == 4
    # One checkpoint per finished document at least, every one seen set by the reader.
    assert figures["checkpoints"] >= 4
    assert figures["observed"] == figures["checkpoints"] == figures["lag_ms"]["n"]
    # Created before it was seen, on one clock; a plain SET is seen too.
    assert figures["lag_ms"]["min"] >= 0
    assert figures["probe_lag_ms"]["n"] > 0 and figures["probe_lag_ms"]["min"] >= 0
    assert figures["interval_ms"]["n"] == figures["checkpoints"] - 1
    assert figures["lag_vs_plain_set"] > 0 and figures["lag_vs_interval"] > 0
    assert human[0].startswith("mirror lag: 4 documents in 1 task, 4 of them completed in ")
    assert human[1].startswith("  creation to visible: p50 ")
    # The compact cadence of a large task, in the same run: a checkpoint a second at most.
    compact = figures["compact"]
    assert compact["documents"] == compact["completed_documents"] == 101
    assert compact["observed"] == compact["checkpoints"] >= 2
    assert compact["interval_ms"]["median"] >= 900
    assert human[4].startswith("mirror lag: 101 documents in 1 task, 101 of them completed")
