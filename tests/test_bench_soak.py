"""The soak at a small size: 20 documents through a worker kill, a Redis restart (empty) and
random provider faults, checked against the LLM server's log, the histories and the mirror."""

from __future__ import annotations

import json
import subprocess
import sys
from typing import Any

import pytest

from tests.bench_runs import ROOT

SMALL_SOAK = (
    "--documents", "20", "--workers", "2", "--kill-every", "2", "4", "--max-kills", "1",
    "--redis-restarts", "1", "--temporal-restarts", "0", "--fault-scale", "2",
    # The soak gives up and stops its stack well before the test's own limit.
    "--limit-seconds", "100",
)  # fmt: skip


@pytest.fixture(scope="module")
def soak(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """The figures of one small soak; its exit code says whether every check passed, which
    the tests below read check by check instead."""
    folder = tmp_path_factory.mktemp("soak")
    saved = folder / "soak.json"
    # The stack's logs and the server's request log stay in the folder, for a failure.
    command = [sys.executable, "-m", "bench.soak", *SMALL_SOAK, "--json", str(saved)]
    done = subprocess.run(
        [*command, "--folder", str(folder / "run")],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=170,
    )
    assert saved.exists(), done.stderr[-3000:]
    figures: dict[str, Any] = json.loads(saved.read_text())
    assert json.loads(done.stdout.splitlines()[0]) == figures
    assert done.returncode == (0 if figures["passed"] else 1)
    return figures


def test_the_small_soak_injects_its_schedule_and_loses_no_document(soak: dict[str, Any]) -> None:
    injected = soak["injected"]
    assert injected["worker_kills"] == 1 and injected["redis_restarts"] == 1
    assert soak["state"] == "completed" and soak["documents_lost"] == 0
    checks = soak["checks"]
    for name in (
        "every document reported exactly once",
        "the LLM server's log holds every request",
        "LLM server verdict clean",
        "Redis mirror equals the task's end",
        "no nondeterminism in any worker log",
        "every query of the task answered",
        "no worker ended by itself",
    ):
        assert checks[name] == [], name
    assert checks[f"all {soak['runs']} runs replay"] == []


def test_the_ledger_equals_the_servers_bill_through_cut_streams(soak: dict[str, Any]) -> None:
    injected = soak["injected"]
    cut = injected["streams_cut_by_kills"] + sum(
        n for kind, n in injected["provider_faults"].items() if kind.startswith("stream:")
    )
    assert cut > 0, "no stream was cut: nothing to compare"
    # What the ledger lacks is only what killed workers held when they died.
    assert soak["checks"]["ledger matches the LLM server's bill"] == []
    lacking = {k: soak["bill"][k] - soak["ledger"][k] for k in ("requests", "prompt_tokens")}
    held = soak["in_flight_at_kills"]
    assert all(0 <= lacking[k] <= held[k] for k in lacking), (lacking, held)


def test_no_report_is_written_twice(soak: dict[str, Any]) -> None:
    assert soak["checks"]["no report text doubled or lost"] == []
