"""Record a real run of the current code as a committed history: tests/histories/NAME.json.

    .venv/bin/python -m tests.record_history NAME PATH... [--fail-once STATUS:MODEL]
        [--cancel-mid-batch] [--from-env]

Runs one task on PATH... with a worker in this process, waits for it to end (completed or
failed), fetches its history and writes ``history.to_json()``. The stack is a throwaway one of
its own (a Temporal dev server, Redis and the local LLM server on free ports, stopped at the
end) or, with ``--from-env``, the one the LTM_* settings name (``make up``), on a task queue of
its own. ``--fail-once 500:gpt-4.1`` makes the local LLM server fail one call to that model, so
the history holds a retry. Payloads stay in the history (threshold 2 MiB, no encryption), so
the file replays with a plain pydantic converter and no payload folder; a history that holds
the API key or does not replay with the current workflow code is refused, not written.

Record a new history when a change to workflows/ adds a path (behind ``workflow.patched``);
never re-record an old one: it proves that tasks begun by an older release still replay.
tests/test_replay.py replays every file here. The committed ones came from:

    python -m tests.record_history examples-batches examples/
    python -m tests.record_history examples-retry examples/ --fail-once 500:gpt-4.1
    printf '' > /tmp/empty.md
    python -m tests.record_history failed-documents examples/incident-postmortem.txt \\
        /tmp/empty.md /tmp/missing.txt
    python -m tests.record_history no-usable-document /tmp/empty.md
    python -m tests.record_history cancelled-mid-batch examples/ --cancel-mid-batch
    python -m tests.record_history calls-retry examples/ --fail-once 500:gpt-4.1
    python -m longtask.tooling.corpus /tmp/corpus40 --count 40
    LTM_DOCUMENT_CONCURRENCY=8 LTM_BATCH_DOCUMENTS=4 LTM_CALL_CONCURRENCY=4 \
        python -m tests.record_history batches-take-documents /tmp/corpus40 \
        --fail-once 500:gpt-4.1:streamed      # two CPU-bound processes beside it
    LTM_DOCUMENT_CONCURRENCY=8 LTM_BATCH_DOCUMENTS=4 LTM_CALL_CONCURRENCY=4 \
        python -m tests.record_history batches-ask-by-signal /tmp/corpus40 \
        --fail-once 500:gpt-4.1:streamed      # the same, after batches asked by signal

(examples-completed.json predates batches: one activity per step.)
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import binascii
import json
import sys
import tempfile
import uuid
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

from temporalio.client import WorkflowFailureError, WorkflowHandle, WorkflowHistory
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.testing import WorkflowEnvironment
from temporalio.worker import Replayer

from activities.provider import make_client
from longtask.connections import connect_redis, connect_temporal
from longtask.policies import StepKind
from longtask.search_attributes import KEYS
from longtask.settings import Settings, load_settings
from longtask.task_start import start_task, task_input
from longtask.tooling.live_view import query_status
from longtask.tooling.servers import LlmServer, RedisServer
from longtask.tooling.stack import installed_tool
from worker import build_worker
from workflows.document_task import DocumentTaskWorkflow

HISTORIES = Path(__file__).parent / "histories"
# The largest threshold the settings allow: every payload of a small task stays in the history.
INLINE_PAYLOADS = 2 * 1024 * 1024
# How long --cancel-mid-batch holds a reasoning call: far longer than it takes to cancel.
HELD_SECONDS = 20.0
# A key-shaped value for the throwaway stack, to prove no key reaches the history.
RECORDING_API_KEY = "sk-recording-0123456789abcdef"


@asynccontextmanager
async def own_stack(folder: Path) -> AsyncIterator[tuple[Settings, LlmServer]]:
    """A Temporal dev server, Redis and the local LLM server for one recording."""
    (folder / "redis").mkdir()
    with RedisServer(folder / "redis") as redis, LlmServer() as llm:
        env = await WorkflowEnvironment.start_local(
            dev_server_existing_path=installed_tool("temporal"), search_attributes=KEYS
        )
        try:
            settings = Settings(
                temporal_address=env.client.service_client.config.target_host,
                redis_url=redis.url,
                llm_base_url=llm.base_url,
                llm_api_key=RECORDING_API_KEY,
            )
            yield settings, llm
        finally:
            await env.shutdown()


@asynccontextmanager
async def env_stack() -> AsyncIterator[tuple[Settings, LlmServer]]:
    """The stack the LTM_* settings name; faults go to its local LLM server's admin API."""
    settings = load_settings()
    admin = LlmServer()  # not started: only its admin calls, aimed at the running server
    admin.port = settings.llm_host_port[1]
    yield settings, admin


def _decoded(text: str) -> bytes:
    try:
        return base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        return text.encode()


def payload_texts(value: Any) -> Iterator[bytes]:
    """Every payload's bytes in a history's JSON form (they are base64 there)."""
    if isinstance(value, dict):
        for key, item in value.items():
            if key == "data" and isinstance(item, str):
                yield _decoded(item)
            else:
                yield from payload_texts(item)
    elif isinstance(value, list):
        for item in value:
            yield from payload_texts(item)


def holds_secret(history: WorkflowHistory, secret: str) -> bool:
    as_json = history.to_json_dict()
    return secret in json.dumps(as_json) or any(
        secret.encode() in data for data in payload_texts(as_json)
    )


async def cancel_mid_batch(handle: WorkflowHandle[Any, Any]) -> None:
    """Cancel the task once a batch is reasoning: its first steps done, the rest held."""
    for _ in range(600):  # a minute at most
        status = await query_status(handle)
        if status is not None and StepKind.REASON in status.calls:
            await handle.cancel()
            return
        await asyncio.sleep(0.1)
    raise SystemExit("refused: no batch reached its reasoning step within a minute")


async def record(
    name: str,
    paths: list[str],
    fault: str | None,
    stack: tuple[Settings, LlmServer],
    cancel: bool = False,
) -> Path:
    stack_settings, llm = stack
    with tempfile.TemporaryDirectory() as scratch:
        settings = stack_settings.model_copy(
            update={
                "task_queue": f"record-{uuid.uuid4().hex[:10]}",
                "payload_dir": Path(scratch) / "payloads",
                "payload_threshold_bytes": INLINE_PAYLOADS,
                "report_dir": Path(scratch) / "reports",
                "metrics_port": 0,
                "encrypt_payloads": False,
            }
        )
        if fault is not None:
            status, model, *streamed = fault.split(":")
            match: dict[str, Any] = {"model": model}
            if streamed == ["streamed"]:
                # A streamed call: a step of a batch, not the check of the models.
                match["stream"] = True
            llm.add({"type": "fail", "status": int(status), "times": 1, "match": match})
        if cancel:
            # One batch at a time, the others waiting their turn; its reasoning call held.
            settings = settings.model_copy(
                update={"document_concurrency": 1, "stall_timeout_seconds": 60.0}
            )
            hold = {"model": settings.model_reasoning}
            llm.add({"type": "delay", "seconds": HELD_SECONDS, "times": 1, "match": hold})
        client = await connect_temporal(settings)
        redis = connect_redis(settings)
        llm_client = make_client(settings.llm_base_url, settings.llm_api_key.get_secret_value())
        try:
            async with build_worker(client, settings, llm_client, redis):
                task = task_input(settings, paths, f"history-{name}-{uuid.uuid4().hex[:6]}")
                await start_task(client, settings, task)
                handle = client.get_workflow_handle(task.task_id)
                if cancel:
                    await cancel_mid_batch(handle)
                try:
                    await handle.result()
                except WorkflowFailureError as failure:
                    print(f"the task failed (recorded as such): {failure.cause}")
                history = await handle.fetch_history()
                if cancel:
                    # The server holds the cut call to its end; it stops cleanly only after.
                    await asyncio.sleep(HELD_SECONDS)
        finally:
            await redis.aclose()
            await llm_client.close()
    if holds_secret(history, settings.llm_api_key.get_secret_value()):
        raise SystemExit("refused: the history holds the API key")
    replayer = Replayer(workflows=[DocumentTaskWorkflow], data_converter=pydantic_data_converter)
    replayed = await replayer.replay_workflow(history, raise_on_replay_failure=False)
    if replayed.replay_failure is not None:
        raise SystemExit(f"refused: the history does not replay: {replayed.replay_failure}")
    target = HISTORIES / f"{name}.json"
    target.write_text(history.to_json())
    return target


async def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("name", help="file name under tests/histories/, without .json")
    parser.add_argument("paths", nargs="+", help="documents or folders for the task")
    parser.add_argument(
        "--fail-once",
        metavar="STATUS:MODEL[:streamed]",
        help="e.g. 500:gpt-4.1 (:streamed: a batch's streamed call, not the model check)",
    )
    parser.add_argument("--from-env", action="store_true", help="use the LTM_* stack")
    parser.add_argument(
        "--cancel-mid-batch",
        action="store_true",
        help="one batch at a time; cancel the task while a batch is reasoning",
    )
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as folder:
        stack = env_stack() if args.from_env else own_stack(Path(folder))
        async with stack as running:
            target = await record(
                args.name, args.paths, args.fail_once, running, args.cancel_mid_batch
            )
    print(f"wrote {target}")
    return 0


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
