"""Each worker keeps its registration in Redis and watches the others' (activities/liveness.py).

Ten times a second, over the worker's named connection, one pipeline reads Redis's run id,
every registered worker and the connected clients (in that order: a registration read before
the client list that lacks its connection means the connection closed after it was written).
A worker is dead when its connection is gone and, guarding against a mistake:

- Redis is in the same run as when the worker registered, and as at this watcher's previous
  look: a restart (or a blink of the watcher's own connection) drops every connection, so
  nothing is concluded across one; live workers register again at once, with the new run id;
- on the same host, its process no longer runs (a zombie or a reused pid counts as gone); a
  live process whose connection broke reconnects, and is never declared dead;
- on another host, where no pid can be looked at, its connection stayed away for
  ``REMOTE_GRACE_SECONDS``, more than a live worker needs to reconnect.

One watcher claims a dead worker (an atomic script: whoever reads and deletes its registration
first), then fails each of its attempts with its task token (``WORKER_LOST``, retried after
0.1 s): the next attempt gets the last heartbeat details, which the server keeps because the
failure carries none. An attempt that already ended (a stale token) is left alone. A lost
machine or a network partition keeps the connection half-open or the worker unreachable from
Redis: that case waits for the heartbeat timeout, as before.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import re
import secrets
import time
from collections.abc import AsyncIterator, Callable
from datetime import timedelta

from pydantic import ValidationError
from redis.asyncio import Redis
from redis.exceptions import RedisError
from temporalio.client import Client
from temporalio.exceptions import ApplicationError, ApplicationErrorCategory
from temporalio.service import RPCError, RPCStatusCode

from activities.liveness import (
    WORKERS_KEY,
    ActivityRegistry,
    RunningActivity,
    WorkerRecord,
    activities_key,
    host_key,
    process_gone,
    process_started,
)
from activities.metrics import record_worker_lost
from longtask.engine.names import WORKER_LOST
from longtask.policies import TimeoutPolicy

log = logging.getLogger("activities.liveness")

POLL_SECONDS = 0.1
# A live worker on another host whose connection broke reconnects within its next look
# (0.1 s) plus a connection's set-up; gone this long, it is taken for dead.
REMOTE_GRACE_SECONDS = 1.0
# A registration from an earlier run of Redis (restored from its append-only file) whose worker
# never registered again: its attempts ended long ago by the heartbeat timeout; cleared then.
STALE_REGISTRATION_SECONDS = 60.0
# The lost worker's retry: the policies' own (0.1 s, the shortest a tuned server fires on time).
RETRY_AFTER = timedelta(seconds=TimeoutPolicy().worker_loss_retry_seconds)
FAIL_SECONDS = 10.0
# Atomic claim: only the watcher that finds the registration unchanged takes its activities.
CLAIM = """
if redis.call('HGET', KEYS[1], ARGV[1]) ~= ARGV[2] then return false end
local found = redis.call('HVALS', KEYS[2])
redis.call('DEL', KEYS[2])
redis.call('HDEL', KEYS[1], ARGV[1])
return found
"""


async def fail_lost_attempt(client: Client, running: RunningActivity, worker: str) -> bool:
    """Fail the attempt on behalf of its dead worker, for a retry elsewhere; False when the
    attempt had ended already (its token is stale), which changes nothing.

    No heartbeat details go with the failure: the server then keeps the last ones the dead
    worker sent, and the next attempt starts from them (tests/test_worker_liveness.py)."""
    handle = client.get_async_activity_handle(task_token=running.task_token)
    error = ApplicationError(
        f"worker {worker} lost (its process died): attempt handed over",
        type=WORKER_LOST,
        next_retry_delay=RETRY_AFTER,
        category=ApplicationErrorCategory.BENIGN,
    )
    try:
        async with asyncio.timeout(FAIL_SECONDS):
            await handle.fail(error)
    except RPCError as problem:
        if problem.status in {RPCStatusCode.NOT_FOUND, RPCStatusCode.FAILED_PRECONDITION}:
            return False
        raise
    return True


def connection_name(identity: str) -> str:
    """A worker id of its Temporal identity plus a nonce: workers in one process (tests) share
    an identity. Redis client names take no spaces."""
    return re.sub(r"\s", "_", f"ltm-worker:{identity}:{secrets.token_hex(4)}")


class LivenessMonitor:
    """This worker's registration, kept in Redis, and its watch over the other workers."""

    def __init__(
        self,
        connect: Callable[[str], Redis],
        temporal: Client,
        identity: str,
        host: str | None = None,
    ) -> None:
        """``connect(name)`` opens the named connection; ``host`` defaults to this machine's
        (``host_key``), and a watcher given another treats every worker as remote."""
        self.registry = ActivityRegistry()
        self.connection = connection_name(identity)
        self.worker_id = self.connection.removeprefix("ltm-worker:")
        self._connect = connect
        self._temporal = temporal
        self._identity = identity
        self._host = host or host_key()
        self._record = ""  # our registration as written; "" until it is
        self._record_run = ""  # Redis's run id it names
        self._seen_run: str | None = None  # Redis's run at the previous look
        self._missing: dict[str, float] = {}  # worker id -> since when its connection is gone
        self._woken = asyncio.Event()
        self._troubled = False
        self._failing: set[asyncio.Task[None]] = set()
        self.polls = 0
        self.lost: list[str] = []  # identities of workers found dead (logs, tests)
        self.registry.on_change(self._woken.set)

    @contextlib.asynccontextmanager
    async def running(self) -> AsyncIterator[None]:
        """Register and watch while inside; on the way out the registration is removed."""
        redis = self._connect(self.connection)
        loop = asyncio.create_task(self._loop(redis))
        try:
            yield
        finally:
            loop.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await loop
            if self._failing:
                await asyncio.wait(self._failing, timeout=FAIL_SECONDS)
            with contextlib.suppress(RedisError, OSError, TimeoutError):
                async with asyncio.timeout(2):
                    await self._deregister(redis)
            await redis.aclose()

    async def _loop(self, redis: Redis) -> None:
        next_look = 0.0
        while True:
            self._woken.clear()
            try:
                if time.monotonic() >= next_look:
                    next_look = time.monotonic() + POLL_SECONDS
                    await self._look(redis)
                elif self._record:
                    await self._flush(redis)
                self._recovered()
            except (RedisError, OSError, TimeoutError) as problem:
                self._trouble(problem)
            with contextlib.suppress(TimeoutError):
                wait = max(0.0, next_look - time.monotonic())
                await asyncio.wait_for(self._woken.wait(), timeout=wait)

    async def _look(self, redis: Redis) -> None:
        self.polls += 1
        pipe = redis.pipeline(transaction=False)
        pipe.info("server")
        pipe.hgetall(WORKERS_KEY)
        pipe.client_list(_type="normal")
        info, records, clients = await pipe.execute()
        run_id = str(info["run_id"])
        if (
            not self._record
            or records.get(self.worker_id) != self._record
            or (self._record_run != run_id)
        ):
            await self._register(redis, run_id)
        else:
            await self._flush(redis)
        if run_id != self._seen_run:
            # Redis restarted or this is the first look: no connection's absence means a thing.
            self._seen_run = run_id
            self._missing.clear()
            return
        names = {str(client.get("name", "")) for client in clients}
        await self._watch(redis, run_id, records, names)

    async def _register(self, redis: Redis, run_id: str) -> None:
        """Write this worker's registration whole: at start, after Redis came back (empty, or
        restored with an older run id), or after any failed write."""
        record = WorkerRecord(
            identity=self._identity,
            host=self._host,
            pid=os.getpid(),
            started=process_started(os.getpid()),
            run_id=run_id,
            connection=self.connection,
        ).model_dump_json()
        entries = dict(self.registry.entries)
        self.registry.pending = {}
        self._record = ""
        pipe = redis.pipeline(transaction=True)
        pipe.delete(activities_key(self.worker_id))
        for field, value in entries.items():
            pipe.hset(activities_key(self.worker_id), field, value)
        pipe.hset(WORKERS_KEY, self.worker_id, record)
        await pipe.execute()
        self._record, self._record_run = record, run_id

    async def _flush(self, redis: Redis) -> None:
        """Tell Redis the activities started and ended since it was last told."""
        if not self.registry.pending:
            return
        changes, self.registry.pending = self.registry.pending, {}
        self._record, record = "", self._record  # a failed write means a whole one next look
        pipe = redis.pipeline(transaction=True)
        for field, value in changes.items():
            if value is None:
                pipe.hdel(activities_key(self.worker_id), field)
            else:
                pipe.hset(activities_key(self.worker_id), field, value)
        await pipe.execute()
        self._record = record

    async def _deregister(self, redis: Redis) -> None:
        pipe = redis.pipeline(transaction=True)
        pipe.delete(activities_key(self.worker_id))
        pipe.hdel(WORKERS_KEY, self.worker_id)
        await pipe.execute()

    async def _watch(
        self, redis: Redis, run_id: str, records: dict[str, str], names: set[str]
    ) -> None:
        now = time.monotonic()
        for worker_id in set(self._missing) - set(records):
            del self._missing[worker_id]
        for worker_id, raw in records.items():
            if worker_id == self.worker_id:
                continue
            try:
                record = WorkerRecord.model_validate_json(raw)
            except ValidationError:
                continue
            if record.connection in names:
                self._missing.pop(worker_id, None)
                continue
            since = self._missing.setdefault(worker_id, now)
            if self._dead(record, run_id, now - since):
                await self._claim(redis, worker_id, raw, record)

    def _dead(self, record: WorkerRecord, run_id: str, missing_for: float) -> bool:
        """Whether a worker whose connection is missing is dead (module docstring)."""
        if record.host == self._host:
            return process_gone(record.pid, record.started)
        if record.run_id != run_id:
            return missing_for >= STALE_REGISTRATION_SECONDS
        return missing_for >= REMOTE_GRACE_SECONDS

    async def _claim(self, redis: Redis, worker_id: str, raw: str, record: WorkerRecord) -> None:
        self._missing.pop(worker_id, None)
        keys = (WORKERS_KEY, activities_key(worker_id))
        claimed = await redis.eval(CLAIM, len(keys), *keys, worker_id, raw)
        if not claimed:
            return  # another watcher took it, or it registered again meanwhile
        running = []
        for value in claimed:
            with contextlib.suppress(ValidationError):
                running.append(RunningActivity.model_validate_json(value))
        self.lost.append(record.identity)
        task = asyncio.create_task(self._fail_all(record, running))
        self._failing.add(task)
        task.add_done_callback(self._failing.discard)

    async def _fail_all(self, record: WorkerRecord, running: list[RunningActivity]) -> None:
        """Fail every attempt the dead worker ran; one line says which."""
        who = f"{record.identity} (pid {record.pid})"
        outcomes = await asyncio.gather(
            *(fail_lost_attempt(self._temporal, one, who) for one in running),
            return_exceptions=True,
        )
        said = []
        for one, outcome in zip(running, outcomes, strict=True):
            if isinstance(outcome, BaseException):
                result = "error"
                said.append(f"{one}: not failed ({type(outcome).__name__}: {outcome})")
            else:
                result = "failed" if outcome else "stale"
                said.append(f"{one}: {'failed' if outcome else 'had ended'}")
            record_worker_lost(result)
        log.warning(
            "worker %s lost: its Redis connection closed and its process is gone; "
            "%d attempt(s) handed over: %s",
            who,
            len(running),
            "; ".join(said) or "none running",
        )

    def _trouble(self, problem: BaseException) -> None:
        """A failed look: logged once until Redis answers again; nothing concluded across it."""
        self._seen_run = None
        self._record = ""
        if not self._troubled:
            self._troubled = True
            log.warning(
                "dead-worker detector: Redis unreachable (%s); the heartbeat timeout alone "
                "finds dead workers until it answers",
                str(problem).splitlines()[0][:200] if str(problem) else type(problem).__name__,
            )

    def _recovered(self) -> None:
        if self._troubled:
            self._troubled = False
            log.info("dead-worker detector: Redis answers again; registered anew")
