"""Each benchmark script runs end to end at a tiny size and prints figures that add up.

The figures themselves are not judged here (these machines are shared and noisy); the scripts
are, so that the commands in docs/benchmarks.md keep working.
"""

from __future__ import annotations

import json
from pathlib import Path

from tests.bench_runs import run_bench, run_module


def test_crashes_measures_recovery_and_redone_work_and_plots_it(tmp_path: Path) -> None:
    saved = tmp_path / "crashes.json"
    figures, human = run_bench(
        "bench.crashes",
        "--documents",
        "6",
        "--kills",
        "2",
        "--handovers",
        "1",
        "--json",
        str(saved),
    )
    assert json.loads(saved.read_text()) == figures
    assert figures["kills"] == 2 and figures["handovers"] == 1
    # Each killed attempt was handed over, by the dead-worker detector or its fallback, the
    # heartbeat timeout.
    handed = figures["detector_handovers"] + figures["heartbeat_timeout_handovers"]
    assert figures["dead_worker_detector"] and handed == figures["kills"]
    assert figures["handover_seconds"]["n"] == 1
    crash_free, crashes, scratch = (
        figures["crash_free"],
        figures["with_crashes"],
        figures["from_scratch"],
    )
    # 6 one-page documents: embed, summarize, reason and report each.
    assert crash_free["requests"] == 24 and crash_free["repeated_requests"] == 0
    assert crashes["requests"] >= crash_free["requests"]
    assert scratch["requests"] >= crash_free["requests"]
    assert figures["token_reduction_vs_scratch"] < 1
    assert human[0].startswith("crashes: 6 documents")
    assert "recovery after SIGKILL (2 kills)" in human[1]

    picture = tmp_path / "benchmarks.png"
    run_module("bench.plot", str(tmp_path), "--out", str(picture), timeout=120)
    assert picture.read_bytes().startswith(b"\x89PNG")


def test_throughput_measures_the_job_against_the_ceiling_the_loop_and_more_workers() -> None:
    figures, human = run_bench(
        "bench.throughput", "--sizes", "8", "--ceiling-activities", "50", "--workers", "1", "2"
    )
    assert figures["ceiling_activities"] == 50
    assert figures["ceiling_activities_per_second"] > 0
    one, two = figures["jobs"]
    assert (one["workers"], two["workers"]) == (1, 2)
    for job in (one, two):
        assert job["documents"] == 8 and job["steps"] == 32
        assert job["ratio_to_ceiling"] > 0 and job["ratio_to_bare"] > 0
        assert job["server_cpu"] > 0 and job["workers_cpu"] > 0
    assert one["bare_steps_per_second"] == two["bare_steps_per_second"]
    assert human[1].startswith("  8 documents, 1 worker(s), in ")


def test_overhead_compares_the_same_job_with_the_bare_loop() -> None:
    figures, human = run_bench(
        "bench.overhead", "--documents", "8", "--latency-ms", "50", "--latency-ms", "0"
    )
    assert [run["latency_ms"] for run in figures["runs"]] == [50, 0]
    for run in figures["runs"]:
        assert run["steps"] == 32
        assert run["bare_seconds"] > 0 and run["durable_seconds"] > 0
        assert run["ratio"] > 0
    assert human[0] == "overhead: 8 documents, same job, same LLM server, same calls"


def test_timer_shift_times_timers_and_server_cpu_on_both_settings() -> None:
    figures, human = run_bench(
        "bench.timer_shift", "--idle-seconds", "1", "--timers", "2", "--activities", "20"
    )
    assert [server["shift"] for server in figures["servers"]] == ["1s", "100ms"]
    for server in figures["servers"]:
        # A timer never fires before its time.
        assert server["timer_seconds"] >= 0.2 and server["retry_seconds"] >= 0.2
        assert server["job_cpu_seconds"] > 0
    assert human[0].startswith("timer shift: two dev servers side by side")
