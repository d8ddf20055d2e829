"""Running a benchmark script the way docs/benchmarks.md says, for the smoke tests."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent


def run_module(*args: str, timeout: float = 240) -> subprocess.CompletedProcess[str]:
    """`python -m ARGS` from the project root; fails the test on a non-zero exit."""
    done = subprocess.run(
        [sys.executable, "-m", *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return done


def run_bench(*args: str, timeout: float = 240) -> tuple[dict[str, Any], list[str]]:
    """The script's JSON figures (its first line) and its lines for people."""
    first, *human = run_module(*args, timeout=timeout).stdout.strip().splitlines()
    figures: dict[str, Any] = json.loads(first)
    return figures, human
