"""Fixtures: one real Temporal dev server, Redis and LLM server per session; a fresh task queue
and worker per test."""

from __future__ import annotations

import contextlib
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
from redis.asyncio import Redis
from temporalio.client import Client
from temporalio.testing import WorkflowEnvironment
from temporalio.worker import Worker

from activities.provider import make_client
from longtask.connections import connect_redis
from longtask.payload_store import data_converter
from longtask.search_attributes import KEYS
from longtask.settings import Settings
from longtask.tooling.servers import LlmServer, RedisServer
from longtask.tooling.stack import installed_tool, server_tuning
from longtask.tooling.worker_process import WorkerProcess
from worker import build_worker, shut_down

ROOT = Path(__file__).resolve().parent.parent
EXAMPLES = ROOT / "examples"
# A key-shaped value, to prove no key ever reaches history, logs or Redis.
TEST_API_KEY = "sk-test-0123456789abcdef"


# Payloads of this size or more leave the history for the payload store, as in production.
PAYLOAD_THRESHOLD = 128 * 1024


@pytest.fixture(scope="session")
def payload_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("payloads")


@pytest.fixture(scope="session")
async def temporal_env(payload_dir: Path) -> AsyncIterator[WorkflowEnvironment]:
    env = await WorkflowEnvironment.start_local(
        dev_server_existing_path=installed_tool("temporal"),
        data_converter=data_converter(payload_dir, PAYLOAD_THRESHOLD),
        search_attributes=KEYS,
        dev_server_extra_args=server_tuning(),
    )
    yield env
    await env.shutdown()


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    with RedisServer(tmp_path_factory.mktemp("redis")) as server:
        yield server


@pytest.fixture
def own_redis(tmp_path: Path) -> Iterator[RedisServer]:
    """A Redis of the test's own, which it may stop and start again (empty, same port)."""
    server = RedisServer(tmp_path / "redis")
    server.directory.mkdir()
    with server:
        yield server


@pytest.fixture(scope="session")
def llm_server() -> Iterator[LlmServer]:
    with LlmServer() as server:
        yield server


@pytest.fixture
def llm(llm_server: LlmServer) -> LlmServer:
    """The LLM server with no fault queued and an empty request log."""
    llm_server.reset()
    return llm_server


@pytest.fixture
def client(temporal_env: WorkflowEnvironment) -> Client:
    return temporal_env.client


@pytest.fixture
def settings(
    client: Client, redis_server: RedisServer, llm: LlmServer, payload_dir: Path
) -> Settings:
    return Settings(
        payload_dir=payload_dir,
        payload_threshold_bytes=PAYLOAD_THRESHOLD,
        temporal_address=client.service_client.config.target_host,
        task_queue=f"test-{uuid.uuid4().hex[:10]}",
        redis_url=redis_server.url,
        llm_base_url=llm.base_url,
        llm_api_key=TEST_API_KEY,
        # The suite scripts the LLM server's answers call by call and counts calls per
        # document; the one call per model that checks a route is tested on its own
        # (tests/test_model_check.py) and by the starter run as a program (tests/test_cli.py).
        check_models=False,
    )


@pytest.fixture
async def redis(settings: Settings) -> AsyncIterator[Redis]:
    connection = connect_redis(settings)
    yield connection
    await connection.aclose()


@pytest.fixture
async def worker(client: Client, settings: Settings, redis: Redis) -> AsyncIterator[Worker]:
    llm_client = make_client(settings.llm_base_url, settings.llm_api_key.get_secret_value())
    running = build_worker(client, settings, llm_client, redis)
    # Stopped within the worker program's limit: a poll the server has not answered yet
    # could otherwise hold the test's teardown for a minute.
    stack = contextlib.AsyncExitStack()
    await stack.enter_async_context(running)
    try:
        yield running
    finally:
        await shut_down(stack)
        await llm_client.close()


@pytest.fixture
def workers() -> Iterator[list[WorkerProcess]]:
    """Worker processes a test starts; stopped at its end, whatever happened."""
    started: list[WorkerProcess] = []
    yield started
    for process in started:
        process.stop()
