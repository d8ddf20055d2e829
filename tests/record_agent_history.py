"""Record real runs of the long tasks as committed histories: tests/histories/agents/NAME.json.

    .venv/bin/python -m tests.record_agent_history [--under-load] [research] [translate] [map]

Each task runs on a throwaway stack of its own (a Temporal dev server, Redis and the local LLM
server in tool mode) with a worker in this process that keeps no workflow cached, so every
workflow task of the recording replays the run's history so far. ``--under-load`` runs two
CPU-bound processes beside it, as a busy machine would. The map task's run has one provider
error, so its history holds a retried batch. A history that holds the API key or does not
replay with the current code is refused, not written.

Record a new history when a change adds a path (behind ``workflow.patched``); never re-record
an old one: it proves that tasks begun by an older release still replay. The committed ones:

    research-completed.json, translate-completed.json: before the engine's cadence
    python -m tests.record_agent_history --under-load research translate map
        -> research-cadence.json, translate-cadence.json, map-calls-retry.json
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import sys
import tempfile
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

from temporalio.client import Client, WorkflowHandle, WorkflowHistory
from temporalio.testing import WorkflowEnvironment
from temporalio.worker import Replayer

from bench.harness import cpu_load
from bench.map_task import MAP_TASK, BenchMap, MapInput, MapOutcome
from examples.translate import Translate
from longtask.agent import start_long_task, start_task_by_name, task_defaults
from longtask.connections import connect_redis
from longtask.payload_store import data_converter
from longtask.research import start_research
from longtask.search_attributes import KEYS
from longtask.settings import Settings
from longtask.tooling.servers import LlmServer, RedisServer
from longtask.tooling.stack import installed_tool
from tests.agents import FAST_POLICY, running_worker
from tests.record_history import INLINE_PAYLOADS, RECORDING_API_KEY, holds_secret
from workflows.research import ResearchTask

HISTORIES = Path(__file__).parent / "histories" / "agents"
EXAMPLES = Path(__file__).resolve().parent.parent / "examples"
TASK_MODULES = "examples.translate,bench.map_task"
RECORDED_AS = {
    "research": "research-cadence",
    "translate": "translate-cadence",
    "map": "map-calls-retry",
}
CHAPTERS = {
    "01-harbour.txt": "The ship left the harbour at dawn, and Captain Ilsa Marrow watched Tern.",
    "02-storm.txt": "A storm came up. The crew of the Tern trusted Marrow.",
}


@contextlib.asynccontextmanager
async def stack(folder: Path) -> AsyncIterator[tuple[Client, Settings]]:
    (folder / "redis").mkdir()
    with RedisServer(folder / "redis") as redis, LlmServer("--tool-mode", "auto") as llm:
        converter = data_converter(folder / "payloads", INLINE_PAYLOADS)
        env = await WorkflowEnvironment.start_local(
            dev_server_existing_path=installed_tool("temporal"),
            search_attributes=KEYS,
            data_converter=converter,
        )
        try:
            settings = Settings(
                temporal_address=env.client.service_client.config.target_host,
                redis_url=redis.url,
                llm_base_url=llm.base_url,
                llm_api_key=RECORDING_API_KEY,
                state_dir=folder / "state",
                payload_dir=folder / "payloads",
                payload_threshold_bytes=INLINE_PAYLOADS,
                max_cached_workflows=0,
                task_queue=f"record-{uuid.uuid4().hex[:8]}",
            )
            yield env.client, settings
        finally:
            await env.shutdown()


async def start(name: str, client: Client, settings: Settings, folder: Path) -> Any:
    policy = {**settings.timeout_policy().model_dump(), **FAST_POLICY}
    if name == "research":
        return await start_research(
            client, settings, "What was decided after the incident?", [str(EXAMPLES)],
            policy=policy, max_turns=3,
        )  # fmt: skip
    if name == "translate":
        book = folder / "book"
        book.mkdir()
        for chapter, text in CHAPTERS.items():
            (book / chapter).write_text(text, encoding="utf-8")
        return await start_task_by_name(
            client, settings, "Translate", {"folder": str(book), "policy": policy}
        )
    request = MapInput(
        **{**task_defaults(settings), "policy": policy},
        task_id=f"map-{uuid.uuid4().hex[:8]}",
        items=40,
        calls_in_flight=32,
    )
    return await start_long_task(client, settings, MAP_TASK, request, MapOutcome)


async def record(name: str, under_load: bool) -> Path:
    target = HISTORIES / f"{RECORDED_AS[name]}.json"
    # Two CPU-bound processes beside the recording: a busy 2-core machine.
    with tempfile.TemporaryDirectory() as folder, cpu_load(2 if under_load else 0):
        os.environ["LTM_TASK_MODULES"] = TASK_MODULES
        async with stack(Path(folder)) as (client, settings):
            llm = LlmServer()
            llm.port = settings.llm_host_port[1]
            if name == "map":
                llm.add({"type": "fail", "status": 500, "times": 1})
            redis = connect_redis(settings)
            try:
                async with running_worker(client, settings, redis):
                    handle: WorkflowHandle[Any, Any] = await start(
                        name, client, settings, Path(folder)
                    )
                    outcome = await handle.result()
                    print(f"{name}: {outcome.state} ({outcome.reason})")
                    history = await handle.fetch_history()
            finally:
                await redis.aclose()
            converter = client.data_converter
    await refuse_unless_sound(history, converter)
    target.write_text(history.to_json())
    return target


async def refuse_unless_sound(history: WorkflowHistory, converter: Any) -> None:
    if holds_secret(history, RECORDING_API_KEY):
        raise SystemExit("refused: the history holds the API key")
    replayer = Replayer(workflows=[ResearchTask, Translate, BenchMap], data_converter=converter)
    replayed = await replayer.replay_workflow(history, raise_on_replay_failure=False)
    if replayed.replay_failure is not None:
        raise SystemExit(f"refused: the history does not replay: {replayed.replay_failure}")


async def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("tasks", nargs="+", choices=["research", "translate", "map"])
    parser.add_argument("--under-load", action="store_true", help="two CPU hogs beside it")
    args = parser.parse_args(argv)
    for name in args.tasks:
        print(f"wrote {await record(name, args.under_load)}")
    return 0


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
