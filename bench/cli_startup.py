"""How fast `ltm` answers what needs no stack: --help, --version, completion.

  python -m bench.cli_startup              # 20 runs of each
  python -m bench.cli_startup --runs 50

Each run is a new process of the installed `ltm` script, timed from spawn to exit, so the
figure includes the interpreter's own start. As a reference, the same runs of a bare
`python -c pass` give the floor no command can go below on this machine.
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import time
from pathlib import Path

LTM = Path(sys.executable).parent / "ltm"
CASES = {
    "python -c pass (floor)": [sys.executable, "-c", "pass"],
    "ltm --help": [str(LTM), "--help"],
    "ltm --version": [str(LTM), "--version"],
    "ltm completion bash": [str(LTM), "completion", "bash"],
}


def seconds_of(command: list[str]) -> float:
    began = time.perf_counter()
    subprocess.run(command, stdout=subprocess.DEVNULL, check=True)
    return time.perf_counter() - began


def main() -> None:
    options = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    options.add_argument("--runs", type=int, default=20)
    runs = options.parse_args().runs
    for name, command in CASES.items():
        times = sorted(seconds_of(command) for _ in range(runs))
        p95 = times[min(len(times) - 1, round(0.95 * (len(times) - 1)))]
        print(f"{name:24} median {statistics.median(times):.3f} s  p95 {p95:.3f} s")


if __name__ == "__main__":
    main()
