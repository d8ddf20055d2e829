"""The checkpoint sink on its own: a real Redis, the sink's own thread and connection."""

from __future__ import annotations

import threading
import time
import uuid

from redis import Redis

from activities.checkpoint_sink import CheckpointSink, offer_checkpoint, serving
from longtask.connections import connect_redis_sync
from longtask.settings import Settings
from tests.test_mirror import T0_MS, write_for

# Only a bound for a test that would otherwise hang; nothing is timed.
PATIENCE_SECONDS = 60.0


def latest_within(reader: Redis, task_id: str, wanted: str, seconds: float) -> bool:
    """Whether ``task:{id}:latest`` names ``wanted`` within ``seconds``: a synchronous wait,
    which keeps the calling thread's event loop from running meanwhile."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if reader.get(f"task:{task_id}:latest") == wanted:
            return True
        time.sleep(0.01)
    return False


async def test_a_checkpoint_reaches_redis_while_the_event_loop_is_blocked(
    settings: Settings,
) -> None:
    """A worker's loop busy with streams (or stuck in a synchronous call) does not hold up the
    mirror: the offer wakes the sink's thread, which writes on its own connection."""
    task_queue = f"sink-{uuid.uuid4().hex[:8]}"
    task_id = f"blocked-{uuid.uuid4().hex[:8]}"
    reader = connect_redis_sync(settings)
    try:
        async with serving(task_queue, CheckpointSink(connect_redis_sync(settings))):
            # Workflow code offers from a thread of the workflow task executor; this event
            # loop does not run again until the checkpoint is in Redis.
            offering = threading.Thread(
                target=offer_checkpoint, args=(task_queue, write_for(task_id, T0_MS))
            )
            offering.start()
            seen = latest_within(reader, task_id, f"{task_id}_{T0_MS}", PATIENCE_SECONDS)
            offering.join()
        assert seen, "the checkpoint waited for the event loop"
    finally:
        reader.close()


async def test_the_newest_offer_wins_and_a_stopping_sink_writes_it(settings: Settings) -> None:
    """Offers not yet written are replaced by newer ones; the sink writes what it holds when
    it stops, even if its thread never had a chance before."""
    task_id = f"newest-{uuid.uuid4().hex[:8]}"
    sink = CheckpointSink(connect_redis_sync(settings))
    for offset in (0, 1, 2):
        sink.offer(write_for(task_id, T0_MS + offset, step=offset + 1))
    async with sink:
        pass
    reader = connect_redis_sync(settings)
    try:
        assert reader.get(f"task:{task_id}:latest") == f"{task_id}_{T0_MS + 2}"
        # The two older offers were replaced before any write: Redis never saw them.
        assert reader.lrange(f"task:{task_id}:checkpoints", 0, -1) == [f"{task_id}_{T0_MS + 2}"]
    finally:
        reader.close()


def offer_twenty(sink: CheckpointSink, task_id: str) -> None:
    for offset in range(20):
        sink.offer(write_for(task_id, T0_MS + offset))


async def test_offers_of_many_tasks_from_many_threads_all_reach_redis(settings: Settings) -> None:
    """Workflows of several tasks offer at once from their threads; each task's newest
    checkpoint is written, in the sink's batched round trips."""
    task_ids = [f"many-{uuid.uuid4().hex[:8]}" for _ in range(8)]
    reader = connect_redis_sync(settings)
    try:
        async with CheckpointSink(connect_redis_sync(settings)) as sink:
            threads = [
                threading.Thread(target=offer_twenty, args=(sink, task_id)) for task_id in task_ids
            ]
            for thread in threads:
                thread.start()
            for thread in threads:
                thread.join()
            for task_id in task_ids:
                assert latest_within(reader, task_id, f"{task_id}_{T0_MS + 19}", PATIENCE_SECONDS)
        for task_id in task_ids:
            listed = reader.lrange(f"task:{task_id}:checkpoints", 0, -1)
            stamps = [int(str(c).rsplit("_", 1)[1]) for c in listed]
            assert stamps == sorted(stamps, reverse=True) and stamps[0] == T0_MS + 19
    finally:
        reader.close()
