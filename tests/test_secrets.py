"""No API key leaves a worker, even when the provider echoes the request's headers back."""

from __future__ import annotations

import logging
from collections.abc import Iterator

import pytest
from redis.asyncio import Redis
from temporalio.client import Client
from temporalio.worker import Worker

from longtask.settings import Settings
from longtask.states import TaskState
from longtask.task_resume import outcome
from tests.conftest import EXAMPLES, TEST_API_KEY
from tests.echo_server import EchoServer
from tests.record_history import holds_secret
from tests.tasks import read_json, read_list, start
from tests.test_mirror_privacy import redis_values

FINAL_MODEL = "gpt-4.1"


@pytest.fixture
def echoing() -> Iterator[EchoServer]:
    with EchoServer(failing_model=FINAL_MODEL) as server:
        yield server


@pytest.fixture
def settings(settings: Settings, echoing: EchoServer) -> Settings:
    """The suite's settings, with the provider that echoes the key in its stream errors."""
    return settings.model_copy(update={"llm_base_url": echoing.base_url})


async def test_a_stream_error_echoing_the_key_is_stored_and_logged_without_it(
    client: Client,
    settings: Settings,
    worker: Worker,
    redis: Redis,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG)
    task, handle = await start(client, settings, [EXAMPLES / "incident-postmortem.txt"])
    result = await outcome(handle)
    assert result is not None and result.state is TaskState.FAILED
    failure = result.documents[0].error
    # The provider's own words are kept, with the key blanked.
    assert "upstream refused the request" in failure and "Bearer ***" in failure

    ids = await read_list(redis, f"task:{task.task_id}:checkpoints")
    errors = [(await read_json(redis, f"checkpoint:{i}")).get("error") or "" for i in ids]
    # The cut report was mirrored with its error (the path that once stored the key).
    assert any("Bearer ***" in error for error in errors)

    history = await handle.fetch_history()
    for secret in (TEST_API_KEY, "Bearer sk-"):
        assert not holds_secret(history, secret)  # its events and every payload, decoded
    texts = {
        "redis": await redis_values(redis),
        "result": result.model_dump_json(),
        "logs": caplog.text,
    }
    for where, text in texts.items():
        assert TEST_API_KEY not in text, where
        assert "Bearer sk-" not in text, where
