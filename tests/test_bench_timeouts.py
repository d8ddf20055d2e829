"""The timeout benchmark runs end to end at a tiny size: stalls cut, slow streams left alone."""

from __future__ import annotations

from tests.bench_runs import run_bench

# A third of the streams hang, a third are slow; each call stalls once at most, slow chunks
# come every 0.25 s: a slow answer's 12 paced chunks take 3 s, past the 2 s stall limit, while
# no gap comes near it. About 30 s in all.
TINY = [
    "--documents", "4", "--stall-share", "0.3", "--slow-share", "0.3",
    "--pace-seconds", "0.25", "--max-stalls-per-call", "1",
]  # fmt: skip


def test_stalls_are_cut_and_slow_streams_are_not() -> None:
    figures, human = run_bench("bench.timeouts", *TINY, timeout=120)
    assert figures["documents"] == figures["completed_documents"] == 4
    assert figures["state"] == "completed"
    # Every stall is in the server's log, and the client cut the stream: none sat through it.
    assert figures["stalls"] > 0 and figures["stalls_caught"] > 0
    assert figures["stalls_missed"] == 0
    assert figures["product_timeouts"] >= figures["stalls_caught"]
    assert figures["cut_vs_limit"]["min"] > 0.5
    # Slow streams took longer than the stall limit, and none was cut.
    assert figures["slow_requests"] > 0
    assert figures["slow_seconds"]["min"] > figures["stall_limit_seconds"]
    assert figures["false_timeouts"] == 0 and figures["other_cuts"] == 0
    assert human[0].startswith("timeouts: 4 documents, 4 of them completed in ")
    assert human[1].startswith("  stalls caught: ")
    assert "false-timeout share 0.0%" in human[-1]


def test_the_realistic_profile_runs_and_cuts_no_healthy_answer() -> None:
    # No stalls at this size (each would be cut at 30-50 s before any limit is learned): the
    # script runs end to end and every answer, slow as real models are, is let finish.
    args = ["--profile", "realistic", "--documents", "3", "--stall-share", "0"]
    figures, human = run_bench("bench.timeouts", *args, timeout=150)
    assert figures["profile"] == "realistic"
    assert figures["completed_documents"] == 3 and figures["stalls"] == 0
    assert figures["requests"] == 12 and figures["false_cuts"] == 0
    assert human[0].startswith("timeouts (realistic): 3 documents, 3 of them completed in ")
    assert human[1].startswith("  false cuts: 0 (goal 0); stalls caught: 0 of 0")
