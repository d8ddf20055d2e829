"""Draws docs/benchmarks.png from the figures the benchmark scripts saved with --json.

  python -m bench.plot docs/bench           # reads crashes.json, overhead.json; writes the PNG
  python -m bench.plot docs/bench --out /tmp/benchmarks.png

Three panels where a picture says more than the table: the recovery time of every kill beside
the article's average; the tokens one job paid crash-free, with crashes, and restarting from
scratch after each crash; and, for each goal of the speed work, the figure before it and now,
each over its goal (under 1: met), from whichever of the other saved figures are there.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only: no display on a server
import matplotlib.pyplot as plt
from matplotlib.axes import Axes
from matplotlib.ticker import MaxNLocator

from bench.crashes import CrashFigures
from bench.many_tasks import ManyTasksFigures
from bench.mirror_lag import MirrorLagFigures
from bench.overhead import OverheadFigures
from bench.throughput import ThroughputFigures

ARTICLE_RECOVERY_SECONDS = 4.2
# Each goal: its label, its target, and the figure measured before the speed work (ratios,
# seconds or milliseconds as the label says; docs/benchmarks.md, "Speed").
GOALS = {
    "overhead at 200 ms\n(x bare loop)": (1.10, 1.48),
    "recovery p50 (s)": (1.0, 3.77),
    "SIGTERM hand-over (s)": (0.3, 1.25),
    "mirror lag p99 (ms)": (20.0, 56.0),
    "100 tasks vs 1\n(x one task)": (1.2, 3.4),
    "call rate, 10k docs\n(bare loop / product)": (1 / 0.8, 185 / 118),
}


def goals_now(
    folder: Path, crashes_file: str = "crashes.json", overhead_file: str = "overhead-1000.json"
) -> dict[str, float]:
    """The figure of each goal measured now, from the scripts' saved JSON where present."""
    now: dict[str, float] = {}
    crashes = folder / crashes_file
    if crashes.is_file():
        figures = CrashFigures.model_validate_json(crashes.read_text())
        now["recovery p50 (s)"] = figures.recovery_seconds["median"]
        now["SIGTERM hand-over (s)"] = figures.handover_seconds["median"]
    overhead = folder / overhead_file
    if overhead.is_file():
        runs = OverheadFigures.model_validate_json(overhead.read_text()).runs
        for run in runs:
            if run.latency_ms == 200:
                now["overhead at 200 ms\n(x bare loop)"] = run.ratio
    mirror = folder / "mirror_lag.json"
    if mirror.is_file():
        lag = MirrorLagFigures.model_validate_json(mirror.read_text())
        worst = max([lag.lag_ms["p99"]] + ([lag.compact.lag_ms["p99"]] if lag.compact else []))
        now["mirror lag p99 (ms)"] = worst
    many = folder / "many_tasks.json"
    if many.is_file():
        runs_many = ManyTasksFigures.model_validate_json(many.read_text()).runs
        now["100 tasks vs 1\n(x one task)"] = max(r.ratio for r in runs_many)
    throughput = folder / "throughput.json"
    if throughput.is_file():
        jobs = ThroughputFigures.model_validate_json(throughput.read_text()).jobs
        largest = max(jobs, key=lambda job: job.documents)
        if largest.ratio_to_bare:
            now["call rate, 10k docs\n(bare loop / product)"] = 1 / largest.ratio_to_bare
    return now


def draw_goals(axes: Axes, now: dict[str, float]) -> None:
    labels = list(GOALS)
    places = range(len(labels))
    before = [GOALS[label][1] / GOALS[label][0] for label in labels]
    after = [now.get(label, 0.0) / GOALS[label][0] for label in labels]
    axes.barh([p + 0.2 for p in places], before, height=0.4, color="tab:red", label="before")
    axes.barh([p - 0.2 for p in places], after, height=0.4, color="tab:blue", label="now")
    for place, label in zip(places, labels, strict=True):
        if label in now:
            axes.text(after[place], place - 0.2, f" {now[label]:.3g}", va="center", fontsize=7)
        axes.text(before[place], place + 0.2, f" {GOALS[label][1]:.3g}", va="center", fontsize=7)
    axes.axvline(1.0, color="black", linestyle="--", linewidth=1, label="goal")
    axes.set_yticks(list(places), labels, fontsize=7)
    axes.invert_yaxis()
    axes.set_xlabel("figure / goal (under 1: met)")
    axes.set_title("Speed goals: before and now")
    axes.legend(fontsize=8, loc="lower right")


def draw(crashes: CrashFigures, now: dict[str, float], out: Path) -> None:
    figure, (left, right, goals) = plt.subplots(
        1, 3, figsize=(17, 4.6), gridspec_kw={"width_ratios": [1, 1, 1.1]}
    )

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

    draw_goals(goals, now)

    figure.tight_layout()
    figure.savefig(out, dpi=110)
    plt.close(figure)


def main(argv: list[str] | None = None) -> int:
    root = argparse.ArgumentParser(prog="python -m bench.plot", description=__doc__.split("\n")[0])
    root.add_argument("folder", type=Path, help="where the scripts saved their --json figures")
    root.add_argument("--out", type=Path, help="the PNG to write (default: docs/benchmarks.png)")
    root.add_argument(
        "--crashes", default="crashes.json", help="bench.crashes figures in FOLDER to draw"
    )
    root.add_argument(
        "--overhead", default="overhead-1000.json", help="bench.overhead figures in FOLDER"
    )
    args = root.parse_args(argv)
    source = args.folder / args.crashes
    if not source.is_file():
        print(
            f"plot: {source} not found; run `python -m bench.crashes --json {source}`",
            file=sys.stderr,
        )
        return 2
    crashes = CrashFigures.model_validate_json(source.read_text())
    out = args.out or Path("docs") / "benchmarks.png"
    draw(crashes, goals_now(args.folder, args.crashes, args.overhead), out)
    print(f"plot: wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
