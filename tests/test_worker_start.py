"""A worker started before Temporal answers waits for it instead of exiting."""

from __future__ import annotations

import asyncio
import contextlib
from pathlib import Path

from temporalio.client import Client

from longtask.settings import Settings
from longtask.states import TaskState
from longtask.tooling.servers import LlmServer, free_port
from longtask.tooling.worker_process import WorkerProcess
from tests.conftest import EXAMPLES
from tests.tasks import start


async def pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    with contextlib.suppress(ConnectionError):
        while data := await reader.read(65536):
            writer.write(data)
            await writer.drain()
    writer.close()


async def forward_to(target: str, port: int) -> asyncio.Server:
    """A loopback port that passes every connection on to ``target`` (HOST:PORT)."""
    host, _, target_port = target.rpartition(":")

    async def connection(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        upstream_reader, upstream_writer = await asyncio.open_connection(host, int(target_port))
        await asyncio.gather(pipe(reader, upstream_writer), pipe(upstream_reader, writer))

    return await asyncio.start_server(connection, "127.0.0.1", port)


async def test_a_worker_started_before_temporal_waits_for_it(
    client: Client,
    settings: Settings,
    llm: LlmServer,
    workers: list[WorkerProcess],
    tmp_path: Path,
) -> None:
    late_port = free_port()  # nothing answers here yet: Temporal is "still starting"
    waiting = WorkerProcess(
        settings.model_copy(update={"temporal_address": f"127.0.0.1:{late_port}"}),
        tmp_path / "worker.log",
    )
    workers.append(waiting)
    await asyncio.sleep(3)
    assert waiting.process.poll() is None, (tmp_path / "worker.log").read_text()
    assert "not reachable yet" in (tmp_path / "worker.log").read_text()

    server = await forward_to(settings.temporal_address, late_port)  # Temporal is up now
    try:
        _task, handle = await start(client, settings, [EXAMPLES / "incident-postmortem.txt"])
        assert (await handle.result()).state is TaskState.COMPLETED
        # Stopped while its way to Temporal is still open, so it can leave cleanly.
        await asyncio.to_thread(waiting.stop)
    finally:
        server.close()
