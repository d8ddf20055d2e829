"""Carries checkpoints from workflow code to the Redis mirror, with no command and no history.

Why not a local activity: its result can reach workflow code one workflow task later than the
task whose completion recorded its marker. In temporalio 1.35 (sdk-core ``managed_run.rs``,
``prepare_complete_resp``), a workflow task that answers a query while a local-activity result
waits to be handed to the workflow is completed at once with the marker, and the result goes
out with the next task, after that task's own events; the marker still names the first
activation, and a replay hands the result over there. A status query during a checkpoint write
is all it takes (``starter.py run`` and ``watch`` query all the time), and it happens more on
a loaded machine. Any command issued on that result (a search-attribute upsert, a timer) then
falls in another place on replay, and the history no longer replays
(tests/histories/local-activity-race/). A mirror write therefore must not be something the
workflow waits for.

The sink works like the workflow logger: workflow code hands it the newest checkpoint (only
when not replaying), which costs no command and no event. A thread of its own, with its own
(synchronous) Redis connection, writes it: ``offer`` wakes that thread directly, so a
checkpoint reaches Redis even while the worker's event loop is busy parsing streams or blocked.
It keeps the newest checkpoint of each task, retries while Redis is down, rewrites a task's
last checkpoint when Redis comes back empty, and writes what is still pending when the worker
stops. Nothing is lost that history does not hold: a worker that dies before writing is
replaced by one that rebuilds the task from history and mirrors its next checkpoint; a task's
final checkpoint goes through a regular activity (``write_checkpoint``), which survives the
worker.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

from redis import Redis
from redis.exceptions import RedisError

from activities.metrics import record_checkpoint_lag, record_mirror_stage
from activities.mirror import SerializedWrite, serialize, store_all
from longtask.checkpoints import MirrorWrite, latest_key

log = logging.getLogger(__name__)

# Waits between tries while Redis refuses writes: short first, so a blink costs little.
RETRY_SECONDS = (0.2, 0.5, 1.0, 2.0)
# How often the sink checks that Redis still holds each live task's newest checkpoint.
REBUILD_CHECK_SECONDS = 2.0
# A task that offered nothing for this long ran elsewhere or ended: forget it.
FORGET_AFTER_SECONDS = 600.0
# How long a stopping worker waits for the sink's last writes (the connection's own socket
# timeouts bound each try).
WRITE_TIMEOUT_SECONDS = 5.0


@dataclass
class _TaskMirror:
    """What the sink knows of one task: the checkpoint still to write and the last written."""

    pending: SerializedWrite | None = None
    written: SerializedWrite | None = None
    final: bool = False
    # time.time() when the pending checkpoint was offered, for the stage metrics.
    offered_at: float = 0.0
    touched: float = field(default_factory=time.monotonic)


class CheckpointSink:
    """Writes the newest checkpoint of each task to Redis, off the workflow's path and off the
    event loop; it owns ``redis`` (a connection of its own) and closes it when it stops."""

    def __init__(self, redis: Redis, mirror_messages: bool = True) -> None:
        self._redis = redis
        self._mirror_messages = mirror_messages
        # Held only to read or change the fields below, never during a Redis call.
        self._lock = threading.Lock()
        self._woken = threading.Condition(self._lock)
        self._wake = False
        self._stopping = False
        self._tasks: dict[str, _TaskMirror] = {}
        self._thread: threading.Thread | None = None

    def offer(self, write: MirrorWrite) -> None:
        """Take a checkpoint to mirror; called from workflow code, on any thread, never blocks.

        A newer checkpoint of the same task replaces one not yet written. The write is turned
        into strings here, so the workflow's state may change while the sink holds it.
        """
        serialized = serialize(write, self._mirror_messages)
        offered = time.time()
        with self._woken:
            mirror = self._tasks.setdefault(serialized.task_id, _TaskMirror())
            mirror.pending = serialized
            mirror.offered_at = offered
            mirror.final = mirror.final or write.final
            mirror.touched = time.monotonic()
            self._wake = True
            self._woken.notify()
        record_mirror_stage("offered", offered - serialized.taken_at)

    async def __aenter__(self) -> CheckpointSink:
        self._stopping = False
        self._thread = threading.Thread(target=self._run, name="checkpoint-sink", daemon=True)
        self._thread.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        """Write what is still pending (one try, bounded), then stop."""
        thread = self._thread
        if thread is None:
            return
        with self._woken:
            self._stopping = True
            self._woken.notify()
        await asyncio.to_thread(thread.join, WRITE_TIMEOUT_SECONDS)
        self._thread = None
        if not thread.is_alive():
            self._redis.close()

    def _run(self) -> None:
        failures = 0
        last_check = time.monotonic()
        while True:
            wait = RETRY_SECONDS[min(failures, len(RETRY_SECONDS)) - 1] if failures else None
            with self._woken:
                if not (self._wake or self._stopping):
                    self._woken.wait(wait if wait is not None else REBUILD_CHECK_SECONDS)
                self._wake = False
                stopping = self._stopping
            ok = self._write_pending()
            if stopping:
                return
            if ok and time.monotonic() - last_check >= REBUILD_CHECK_SECONDS:
                last_check = time.monotonic()
                ok = self._rebuild_lost()
            if ok:
                if failures:
                    log.info("checkpoint mirror: Redis takes writes again")
                failures = 0
            else:
                failures += 1
                if failures == 1:
                    log.warning("checkpoint mirror: Redis unavailable, retrying in the background")
            self._forget_idle()

    def _write_pending(self) -> bool:
        """Write every task's pending checkpoint in one round trip; False if any failed."""
        with self._lock:
            batch = [(t, m.pending, m.offered_at) for t, m in self._tasks.items() if m.pending]
        if not batch:
            return True
        sent = time.time()
        try:
            answers = store_all(self._redis, [write for _, write, _ in batch])
        except (RedisError, OSError) as problem:
            log.debug("%d checkpoints not mirrored yet: %s", len(batch), problem)
            return False
        acknowledged = time.time()
        ok = True
        for (task_id, write, offered), answer in zip(batch, answers, strict=True):
            if isinstance(answer, Exception):
                log.debug("checkpoint %s not mirrored yet: %s", write.checkpoint_id, answer)
                ok = False
                continue
            record_checkpoint_lag(acknowledged - write.taken_at)
            record_mirror_stage("queued", sent - offered)
            record_mirror_stage("written", acknowledged - sent)
            self._written(task_id, write)
        return ok

    def _written(self, task_id: str, write: SerializedWrite) -> None:
        with self._lock:
            mirror = self._tasks.get(task_id)
            if mirror is not None:
                mirror.written = write
                # A newer checkpoint offered during the write stays pending.
                if mirror.pending is write:
                    mirror.pending = None
                    if mirror.final:
                        del self._tasks[task_id]

    def _rebuild_lost(self) -> bool:
        """Rewrite the last checkpoint of each live task whose ``latest`` key Redis lost."""
        with self._lock:
            written = [
                (tid, m.written)
                for tid, m in self._tasks.items()
                if m.written is not None and m.pending is None
            ]
        if not written:
            return True
        try:
            present = self._redis.exists(*(latest_key(tid) for tid, _ in written))
        except (RedisError, OSError):
            return False
        if present == len(written):
            return True
        with self._lock:
            for tid, write in written:
                mirror = self._tasks.get(tid)
                if mirror is not None and mirror.pending is None:
                    mirror.pending = write
        # The Lua write refuses whatever Redis still holds, so a full rewrite is safe.
        return self._write_pending()

    def _forget_idle(self) -> None:
        cutoff = time.monotonic() - FORGET_AFTER_SECONDS
        with self._lock:
            for tid in [t for t, m in self._tasks.items() if m.touched < cutoff]:
                del self._tasks[tid]


# One sink per task queue of this process: workflow code finds its worker's sink by the task
# queue it runs on (tests run several workers in one process).
_SINKS: dict[str, CheckpointSink] = {}


@contextlib.asynccontextmanager
async def serving(task_queue: str, sink: CheckpointSink) -> AsyncIterator[None]:
    """Run the sink for the workflows of ``task_queue`` while the worker runs."""
    async with sink:
        _SINKS[task_queue] = sink
        try:
            yield
        finally:
            if _SINKS.get(task_queue) is sink:
                del _SINKS[task_queue]


def offer_checkpoint(task_queue: str, write: MirrorWrite) -> bool:
    """Hand a checkpoint to the sink of this task queue; False when none runs here (replayer)."""
    sink = _SINKS.get(task_queue)
    if sink is None:
        return False
    sink.offer(write)
    return True
