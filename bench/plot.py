"""Draws docs/benchmarks.png from the figures the benchmark scripts saved with --json.

  python -m bench.plot docs/bench           # reads crashes.json, overhead.json; writes the PNG
  python -m bench.plot docs/bench --out /tmp/benchmarks.png

Two panels where a picture says more than the table: the recovery time of every kill (SIGKILL
and SIGTERM) beside the article's average, and the tokens one job paid crash-free, with
crashes, and restarting from scratch after each crash.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only: no display on a server
import matplotlib.pyplot as plt
from matplotlib.ticker import MaxNLocator

from bench.crashes import CrashFigures

ARTICLE_RECOVERY_SECONDS = 4.2


def draw(crashes: CrashFigures, out: Path) -> None:
    figure, (left, right) = plt.subplots(1, 2, figsize=(11, 4.2))

    kills = range(1, len(crashes.recoveries) + 1)
    left.plot(kills, crashes.recoveries, "o", label="SIGKILL: kill → first request resumed")
    left.axhline(
        crashes.recovery_seconds["median"],
        linestyle="-",
        linewidth=1,
        label=f"median {crashes.recovery_seconds['median']:.2f} s",
    )
    left.axhline(
        crashes.heartbeat_timeout_seconds,
        color="grey",
        linestyle=":",
        label=f"heartbeat timeout {crashes.heartbeat_timeout_seconds:g} s",
    )
    left.axhline(
        ARTICLE_RECOVERY_SECONDS, color="red", linestyle="--", label="article: 4.2 s average"
    )
    left.xaxis.set_major_locator(MaxNLocator(integer=True))
    left.set_xlabel("kill")
    left.set_ylabel("seconds")
    left.set_ylim(bottom=0)
    left.set_title(f"Recovery after SIGKILL, standby worker ({crashes.kills} kills)")
    left.legend(fontsize=8, loc="lower right")

    runs = [
        "crash-free",
        f"{crashes.kills} crashes,\ncheckpoints",
        f"{crashes.kills} crashes,\nfrom scratch",
    ]
    bills = [crashes.crash_free, crashes.with_crashes, crashes.from_scratch]
    bars = right.bar(runs, [b.total_tokens for b in bills], color=["grey", "tab:blue", "tab:red"])
    right.bar_label(bars, labels=[f"{b.total_tokens:,}" for b in bills], fontsize=8)
    right.set_ylabel("tokens billed by the LLM server")
    right.set_title(
        f"One {crashes.documents}-document job: "
        f"{crashes.token_reduction_vs_scratch:.0%} fewer tokens than from scratch"
    )

    figure.tight_layout()
    figure.savefig(out, dpi=110)
    plt.close(figure)


def main(argv: list[str] | None = None) -> int:
    root = argparse.ArgumentParser(prog="python -m bench.plot", description=__doc__.split("\n")[0])
    root.add_argument("folder", type=Path, help="where the scripts saved their --json figures")
    root.add_argument("--out", type=Path, help="the PNG to write (default: docs/benchmarks.png)")
    args = root.parse_args(argv)
    source = args.folder / "crashes.json"
    if not source.is_file():
        print(
            f"plot: {source} not found; run `python -m bench.crashes --json {source}`",
            file=sys.stderr,
        )
        return 2
    crashes = CrashFigures.model_validate_json(source.read_text())
    out = args.out or Path("docs") / "benchmarks.png"
    draw(crashes, out)
    print(f"plot: wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
