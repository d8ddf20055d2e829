"""`python -m bench.agent_map` runs end to end at a tiny size, its figures adding up (the rates
themselves are not judged: these machines are shared and noisy)."""

from __future__ import annotations

import pytest

from tests.bench_runs import run_bench


def test_agent_map_compares_batched_calls_with_an_activity_per_call_and_the_bare_loop() -> None:
    figures, human = run_bench("bench.agent_map", "--items", "48")
    assert figures["items"] == 48
    bare = figures["bare_calls_per_second"]
    batched = figures["batched_calls_per_second"]
    per_activity = figures["per_activity_calls_per_second"]
    assert bare > 0 and batched > 0 and per_activity > 0
    assert figures["batched_over_per_activity"] == pytest.approx(batched / per_activity, rel=0.02)
    assert human[0] == "48 calls, 64 in flight, zero latency:"
