"""Which activities each worker runs, kept in Redis, and whether a worker's process still lives.

A dead-worker detector beside the heartbeat timeout (activities/liveness_watch.py watches).
The heartbeat timeout cannot tell a dead worker from a slow one: shortened until it recovers in
a second, it handed live steps over on a loaded machine. A closed socket can tell them apart.
Each worker holds one Redis connection named after it for its whole life; the kernel closes
the sockets of a process killed outright at once, so Redis drops that client at once, while a
slow, loaded or stopped (SIGSTOP) process keeps it open.

Every activity with a heartbeat timeout (document batches, long tasks' calls, users' tools)
registers its task token under its worker through a worker interceptor, and removes it when it
ends. Registering costs the activity nothing: the interceptor only notes it in memory, and the
worker's monitor writes it to Redis over the named connection a moment later; should Redis be
away, the heartbeat timeout stays the fallback.

Redis keys, beside the mirror's (README, "The Redis mirror"):
  ``ltm:workers``           hash: worker id -> ``WorkerRecord`` JSON
  ``ltm:workers:{worker}``  hash: token digest -> ``RunningActivity`` JSON
A task token lets its holder end that one attempt; no key or password goes to Redis.
"""

from __future__ import annotations

import base64
import hashlib
import os
import socket
from pathlib import Path
from typing import Any

from pydantic import BaseModel
from temporalio import activity
from temporalio.worker import (
    ActivityInboundInterceptor,
    ExecuteActivityInput,
    Interceptor,
)

WORKERS_KEY = "ltm:workers"


def activities_key(worker_id: str) -> str:
    return f"{WORKERS_KEY}:{worker_id}"


class WorkerRecord(BaseModel):
    """A live worker as it registered: who, where, and in which run of Redis.

    ``connection`` is the name of its liveness connection; ``run_id`` is Redis's run at
    registration: a connection missing after a Redis restart says nothing of its worker.
    ``host`` is this machine's kernel and process namespace (``host_key``): only a watcher
    with the same one may look its ``pid`` up.
    """

    identity: str
    host: str
    pid: int
    # The process's start time (clock ticks since boot), so a reused pid is not taken for it.
    started: int | None
    run_id: str
    connection: str


class RunningActivity(BaseModel):
    """One attempt a worker runs: its task token (base64) and, for logs, what it is."""

    token: str
    workflow_id: str
    activity_id: str
    activity_type: str
    attempt: int

    @property
    def task_token(self) -> bytes:
        return base64.b64decode(self.token)

    def __str__(self) -> str:
        where = f"{self.workflow_id}/{self.activity_id}"
        return f"{where} ({self.activity_type}, attempt {self.attempt})"


def host_key() -> str:
    """Names the processes this one can look up by pid: the same host name, kernel boot and
    pid namespace. Two containers (or machines) never share all three."""
    try:
        boot = Path("/proc/sys/kernel/random/boot_id").read_text().strip()
        namespace = os.readlink("/proc/self/ns/pid")
    except OSError:
        boot, namespace = "", ""
    return f"{socket.gethostname()}|{boot}|{namespace}"


def _proc_stat(pid: int) -> list[str] | None:
    """The fields of /proc/PID/stat after the command name; None when it is not there."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None


def process_started(pid: int) -> int | None:
    """When the process began (clock ticks since boot); None without /proc."""
    fields = _proc_stat(pid)
    return int(fields[19]) if fields is not None else None


def process_gone(pid: int, started: int | None) -> bool:
    """Whether the process ``pid`` that began at ``started`` has ended, on this host.

    A killed process stays a zombie until its parent reaps it, and os.kill still finds a
    zombie: /proc tells (state Z or X). A pid reused by a newer process is told by its start
    time."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except PermissionError:
        pass  # it exists, as another user's process
    fields = _proc_stat(pid)
    if fields is None:
        # Gone between the two looks, or a system without /proc: only os.kill can tell.
        return Path("/proc/self/stat").exists()
    return fields[0] in {"Z", "X"} or (started is not None and int(fields[19]) != started)


def token_field(token: bytes) -> str:
    """A short, stable field name for a task token (the token itself is long)."""
    return hashlib.sha256(token).hexdigest()[:20]


class ActivityRegistry:
    """The activities this worker runs now, and the changes Redis has not been told yet."""

    def __init__(self) -> None:
        self.entries: dict[str, str] = {}
        # Field -> JSON to write, or None to delete, in the order they happened.
        self.pending: dict[str, str | None] = {}
        self._changed: list[Any] = []

    def on_change(self, wake: Any) -> None:
        """Call ``wake()`` on every change (the monitor writes it out at once)."""
        self._changed.append(wake)

    def add(self, info: activity.Info) -> str:
        field = token_field(info.task_token)
        running = RunningActivity(
            token=base64.b64encode(info.task_token).decode(),
            workflow_id=info.workflow_id or "",
            activity_id=info.activity_id,
            activity_type=info.activity_type,
            attempt=info.attempt,
        )
        self.entries[field] = self.pending[field] = running.model_dump_json()
        self._wake()
        return field

    def remove(self, field: str) -> None:
        self.entries.pop(field, None)
        if self.pending.get(field) is not None:
            del self.pending[field]  # never written: nothing to delete
        else:
            self.pending[field] = None
        self._wake()

    def _wake(self) -> None:
        for wake in self._changed:
            wake()


class _RegisteringInbound(ActivityInboundInterceptor):
    def __init__(self, next: ActivityInboundInterceptor, registry: ActivityRegistry) -> None:
        super().__init__(next)
        self._registry = registry

    async def execute_activity(self, input: ExecuteActivityInput) -> Any:
        info = activity.info()
        # Without a heartbeat timeout a lost attempt waits its whole start-to-close timeout:
        # such activities are short (a checkpoint write) and local ones have no token to fail.
        if info.heartbeat_timeout is None or info.is_local:
            return await self.next.execute_activity(input)
        field = self._registry.add(info)
        try:
            return await self.next.execute_activity(input)
        finally:
            self._registry.remove(field)


class RegisteringInterceptor(Interceptor):
    """Registers every running activity that has a heartbeat timeout in ``registry``."""

    def __init__(self, registry: ActivityRegistry) -> None:
        self._registry = registry

    def intercept_activity(self, next: ActivityInboundInterceptor) -> ActivityInboundInterceptor:
        return _RegisteringInbound(next, self._registry)
