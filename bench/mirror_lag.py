"""Redis mirror lag: from a checkpoint's creation to the moment an outside reader sees it.

  python -m bench.mirror_lag                       # 2 tasks of 100, then a task of 2,000
  python -m bench.mirror_lag --tasks 4             # twice the checkpoints
  python -m bench.mirror_lag --latency-ms 1000     # slower LLM calls, checkpoints further apart

One embedded stack (`make up`'s LLM server: 200 ms latency, 20 ms between streamed chunks), one
worker, ``--tasks`` tasks of ``--documents`` one-page documents running side by side. Each task
keeps 4 documents in flight in batches of one, so every finished document makes a checkpoint:
the densest cadence the product has (up to 100 documents a task writes its checkpoints whole,
with every result inline; a larger task writes at most one a second). Two tasks of 100 make
about 200 checkpoints. Then, on the same stack and worker, one task of ``--compact-documents``
(2,000) with the default window (64 documents in flight, batches of 16): the compact cadence of
large tasks, small checkpoints at most one a second. A task of 300 made only about 15 of them, so
its p99 was its worst; 2,000 documents make about 100.

An outside reader, a thread of this process with its own Redis connection, subscribes to Redis
keyspace notifications (``notify-keyspace-events K$``) for the ``checkpoint:{id}`` keys and
notes the wall-clock moment each one is set. A checkpoint's creation time is its own
``timestamp``: the workflow's clock when it took it, i.e. the Temporal server's wall clock on
this machine, so both ends are read on one clock (a monotonic clock would not be comparable).

In the same run, on the same Redis and through the same notifications, a probe writes a plain
key every 50 ms: its SET → visible time is the floor any mirror write could reach. The figures
say how far above that floor the mirror is, and how the lag compares with the time between two
checkpoints of a task (how stale the mirror can look to a reader).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import tempfile
import threading
import time
from datetime import datetime
from itertools import count, pairwise
from pathlib import Path
from typing import Any

import redis
from pydantic import BaseModel

from bench.harness import (
    Workers,
    bench_parser,
    finish,
    measure_on_stack,
    percentile,
    publish,
    stack_settings,
    start_job,
    summary,
)
from longtask.checkpoints import checkpoint_key
from longtask.connections import connect_temporal
from longtask.redis_auth import redis_url_with_password
from longtask.settings import Settings
from longtask.states import TaskState
from longtask.tooling.corpus import at_least_one, write_corpus

TASK_PREFIX = "mirror-lag"
# Each task: 4 documents in flight, in batches of one, so each finished one is checkpointed.
DOCUMENTS_IN_FLIGHT = 4
PROBE_PREFIX = "bench:probe:"
# A large task's window (the defaults): over 100 documents, a checkpoint a second at most.
COMPACT_WINDOW = {"document_concurrency": 64, "batch_documents": 16, "call_concurrency": 16}
PROBE_SECONDS = 0.05
SUBSCRIBED_SECONDS = 10.0


class KeyWatcher:
    """An outside reader: when each key matching a pattern was set, from keyspace events."""

    def __init__(self, url: str, patterns: list[str]) -> None:
        self._redis = redis.Redis.from_url(url, decode_responses=True)
        self._patterns = patterns
        # redis-py leaves PubSub's constructor untyped.
        self._pubsub = self._redis.pubsub(ignore_subscribe_messages=True)  # type: ignore[no-untyped-call]
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._listen, daemon=True)
        self.seen: dict[str, float] = {}
        # The probe keys written while the tasks ran, and when.
        self.probes: dict[str, float] = {}

    def _listen(self) -> None:
        while not self._stop.is_set():
            message = self._pubsub.get_message(timeout=0.2)
            if message is None or message["type"] != "pmessage" or message["data"] != "set":
                continue
            now = time.time()
            _, _, key = str(message["channel"]).partition(":")
            self.seen.setdefault(key, now)

    def __enter__(self) -> KeyWatcher:
        # K$: keyspace events of string commands, SET among them (also inside a Lua script).
        self._redis.config_set("notify-keyspace-events", "K$")
        database = self._redis.connection_pool.connection_kwargs.get("db", 0)
        self._pubsub.psubscribe(*(f"__keyspace@{database}__:{p}" for p in self._patterns))
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=5)
        self._pubsub.close()
        self._redis.close()


class Probe:
    """Writes a plain key every ``PROBE_SECONDS``, noting the wall clock just before each SET."""

    def __init__(self, url: str) -> None:
        self._redis = redis.Redis.from_url(url, decode_responses=True)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._write, daemon=True)
        # Keys are numbered across threads: this thread's writes and the start-up checks.
        self._numbers = count()
        self.written: dict[str, float] = {}

    def write_one(self) -> str:
        key = f"{PROBE_PREFIX}{next(self._numbers)}"
        self.written[key] = time.time()
        self._redis.set(key, "1", ex=600)
        return key

    def _write(self) -> None:
        while not self._stop.wait(PROBE_SECONDS):
            self.write_one()

    def __enter__(self) -> Probe:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=5)
        self._redis.close()


class MirrorLagFigures(BaseModel):
    tasks: int
    documents: int
    completed_documents: int
    seconds: float
    # Checkpoints of the task in Redis after the job, and how many of them the reader saw set.
    checkpoints: int
    observed: int
    # Milliseconds: creation → visible (with p99), a plain SET → visible, and the time between
    # two consecutive checkpoints' creation.
    lag_ms: dict[str, float]
    probe_lag_ms: dict[str, float]
    interval_ms: dict[str, float]
    checkpoint_bytes: dict[str, float]
    # Medians: mirror lag over a plain SET's, and mirror lag over the checkpoint interval.
    lag_vs_plain_set: float
    lag_vs_interval: float
    # The same figures for the compact cadence of a large task, measured in the same run.
    compact: MirrorLagFigures | None = None


def summary_ms(seconds: list[float]) -> dict[str, float]:
    values = [s * 1000 for s in seconds]
    return {**summary(values), "p99": round(percentile(values, 0.99), 3)}


def created_at(checkpoint: dict[str, Any]) -> float:
    """The checkpoint's creation time, unix seconds, from its ISO-8601 ``timestamp``."""
    return datetime.fromisoformat(checkpoint["timestamp"]).timestamp()


async def wait_for_subscription(watcher: KeyWatcher, probe: Probe) -> None:
    """Until the reader sees a probe key set: the subscription is live before the job starts."""
    deadline = time.monotonic() + SUBSCRIBED_SECONDS
    while True:
        key = probe.write_one()
        await asyncio.sleep(0.05)
        if key in watcher.seen:
            return
        if time.monotonic() > deadline:
            raise RuntimeError("the keyspace notifications never arrived")


async def run_tasks(
    settings: Settings, corpus: Path, tasks: int, watcher: KeyWatcher, prefix: str
) -> tuple[float, int]:
    """Run the tasks side by side with a probe writing beside them; seconds, documents done."""
    client = await connect_temporal(settings)
    with Probe(redis_url_with_password(settings)) as probe:
        await wait_for_subscription(watcher, probe)
        started = time.monotonic()
        handles = [
            (await start_job(client, settings, corpus, f"{prefix}-{number}"))[1]
            for number in range(1, tasks + 1)
        ]
        results = await asyncio.gather(*(finish(handle) for handle in handles))
        seconds = time.monotonic() - started
    watcher.probes |= {key: at for key, at in probe.written.items() if key in watcher.seen}
    done = sum(d.state is TaskState.COMPLETED for result in results for d in result.documents)
    return seconds, done


def checkpoints_in(settings: Settings, prefix: str) -> dict[str, tuple[str, str]]:
    """Every checkpoint the tasks left in Redis: key -> (task id, JSON text)."""
    reader = redis.Redis.from_url(redis_url_with_password(settings), decode_responses=True)
    try:
        keys = sorted(reader.scan_iter(match=checkpoint_key(f"{prefix}-*"), count=1000))
        texts = [str(text) for text in reader.mget(keys)] if keys else []
    finally:
        reader.close()
    found = {}
    for key, text in zip(keys, texts, strict=True):
        found[key] = (str(json.loads(text)["task_id"]), text)
    return found


async def measure(
    settings: Settings,
    folder: Path,
    documents: int,
    tasks: int,
    compact_documents: int,
    split: bool = False,
) -> MirrorLagFigures:
    """The dense cadence (``tasks`` tasks of ``documents``, a checkpoint per finished
    document), then on the same stack the compact one (a task of ``compact_documents`` with the
    default window: at most a checkpoint a second). ``split``: a worker process runs the
    workflows, another the activities (LTM_WORKER_RUNS), instead of one running both."""
    patterns = [checkpoint_key(f"{TASK_PREFIX}-*"), f"{PROBE_PREFIX}*"]
    url = redis_url_with_password(settings)
    with Workers(settings) as workers, KeyWatcher(url, patterns) as watcher:
        if split:
            workers.start({"LTM_WORKER_RUNS": "workflows"})
            workers.start({"LTM_WORKER_RUNS": "activities"})
        else:
            workers.start()
        await workers.ready()
        figures = await cadence(settings, folder / "dense", documents, tasks, watcher, "dense")
        if compact_documents:
            large = settings.model_copy(update=COMPACT_WINDOW)
            compact = await cadence(
                large, folder / "compact", compact_documents, 1, watcher, "compact"
            )
            figures.compact = compact
    return figures


async def cadence(
    settings: Settings, corpus: Path, documents: int, tasks: int, watcher: KeyWatcher, name: str
) -> MirrorLagFigures:
    await asyncio.to_thread(write_corpus, corpus, documents)
    prefix = f"{TASK_PREFIX}-{name}"
    # Each cadence's probe numbers its keys from 0 again: forget the last one's.
    watcher.probes = {}
    watcher.seen = {k: at for k, at in watcher.seen.items() if not k.startswith(PROBE_PREFIX)}
    seconds, done = await run_tasks(settings, corpus, tasks, watcher, prefix)
    await asyncio.sleep(0.5)  # the last notifications on their way
    found = checkpoints_in(settings, prefix)
    created = {key: created_at(json.loads(text)) for key, (_, text) in found.items()}
    lags = [watcher.seen[key] - created[key] for key in found if key in watcher.seen]
    probes = [watcher.seen[key] - at for key, at in watcher.probes.items()]
    intervals: list[float] = []
    for task_id in {task_id for task_id, _ in found.values()}:
        moments = sorted(created[key] for key, (owner, _) in found.items() if owner == task_id)
        intervals += [later - earlier for earlier, later in pairwise(moments)]
    if not lags or not intervals:
        raise RuntimeError(f"too few checkpoints seen: {len(lags)} of {len(found)}")
    lag, probe_lag, interval = summary_ms(lags), summary_ms(probes), summary_ms(intervals)
    return MirrorLagFigures(
        tasks=tasks,
        documents=documents * tasks,
        completed_documents=done,
        seconds=round(seconds, 1),
        checkpoints=len(found),
        observed=len(lags),
        lag_ms=lag,
        probe_lag_ms=probe_lag,
        interval_ms=interval,
        checkpoint_bytes=summary([float(len(text)) for _, text in found.values()]),
        lag_vs_plain_set=round(lag["median"] / probe_lag["median"], 1),
        lag_vs_interval=round(lag["median"] / interval["median"], 3),
    )


def report(figures: MirrorLagFigures) -> str:
    lines = cadence_lines(figures, "dense cadence, a checkpoint per finished document")
    if figures.compact is not None:
        lines += cadence_lines(figures.compact, "compact cadence, a checkpoint a second at most")
    return "\n".join(lines)


def cadence_lines(figures: MirrorLagFigures, cadence: str) -> list[str]:
    lag, probe, interval = figures.lag_ms, figures.probe_lag_ms, figures.interval_ms
    return [
        f"mirror lag: {figures.documents} documents in {figures.tasks} "
        f"task{'s' if figures.tasks > 1 else ''}, {figures.completed_documents} of them "
        f"completed in {figures.seconds} s; {figures.observed} of {figures.checkpoints} "
        f"checkpoints seen by an outside reader "
        f"(median {figures.checkpoint_bytes['median']:.0f} bytes; {cadence})",
        f"  creation to visible: p50 {lag['median']:.1f} ms, p95 {lag['p95']:.1f} ms, "
        f"p99 {lag['p99']:.1f} ms, max {lag['max']:.1f} ms",
        f"  a plain SET to visible, same Redis, same run: p50 {probe['median']:.2f} ms, "
        f"p99 {probe['p99']:.2f} ms: the mirror's p50 is {figures.lag_vs_plain_set:g}x that",
        f"  between two checkpoints: p50 {interval['median']:.0f} ms: the mirror's p50 lag "
        f"is {figures.lag_vs_interval:.1%} of it",
    ]


def parser() -> argparse.ArgumentParser:
    root = bench_parser("mirror_lag", __doc__)
    root.add_argument(
        "--documents", type=at_least_one, default=100, help="one-page documents per task"
    )
    root.add_argument("--tasks", type=at_least_one, default=2, help="tasks side by side")
    root.add_argument("--latency-ms", type=int, default=200, help="LLM latency of each call")
    root.add_argument(
        "--compact-documents",
        type=int,
        default=2000,
        help="documents of the large task of the compact cadence (0: dense cadence only)",
    )
    root.add_argument(
        "--split-workers",
        action="store_true",
        help="one worker process for the workflows, another for the activities",
    )
    return root


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="bench-mirror-lag-") as folder:
        settings = stack_settings(
            Path(folder) / "stack",
            latency_ms=args.latency_ms,
            chunk_delay_ms=20,
            document_concurrency=DOCUMENTS_IN_FLIGHT,
            batch_documents=1,
        )
        figures = measure_on_stack(
            "mirror lag",
            settings,
            lambda: measure(
                settings,
                Path(folder),
                args.documents,
                args.tasks,
                args.compact_documents,
                args.split_workers,
            ),
        )
    if figures is None:
        return 1
    return publish(figures, report(figures), args.json)


if __name__ == "__main__":
    sys.exit(main())
