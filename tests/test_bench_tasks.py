"""The benchmark of many tasks at once runs end to end at a tiny size.

Their figures are not judged here (the machine is shared and noisy), only that they add up.
"""

from __future__ import annotations

from tests.bench_runs import run_bench


def test_many_tasks_compares_them_with_one_task_of_all_their_documents() -> None:
    figures, human = run_bench(
        "bench.many_tasks", "--tasks", "3", "--documents-per-task", "2", "--workers", "1"
    )
    (run,) = figures["runs"]
    assert run["workers"] == 1 and run["ratio"] > 0
    assert run["first_finish"] <= run["median_finish"] <= run["last_finish"]
    assert run["last_finish"] == run["many_tasks_seconds"]
    assert human[0] == "many tasks: 3 tasks of 2 documents against one task of 6, latency 200 ms"
