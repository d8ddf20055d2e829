"""docker-compose.yml: the same stack as `make up`, with addresses that agree with the settings."""

from __future__ import annotations

import os
from typing import Any
from urllib.parse import urlsplit

import pytest
import yaml

from longtask.settings import Settings
from tests.conftest import ROOT


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    loaded: dict[str, Any] = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    return loaded


@pytest.fixture(scope="module")
def defaults() -> Settings:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("LTM_")}
    saved = dict(os.environ)
    os.environ.clear()
    os.environ.update(clean)
    try:
        return Settings()
    finally:
        os.environ.clear()
        os.environ.update(saved)


def published(service: dict[str, Any]) -> set[int]:
    return {int(str(mapping).split(":")[0]) for mapping in service.get("ports", [])}


def test_services_of_the_stack(compose: dict[str, Any]) -> None:
    assert set(compose["services"]) == {"temporal", "redis", "llmock", "worker"}
    assert "build" in compose["services"]["worker"]
    assert (ROOT / "Dockerfile").exists()


def test_published_ports_match_the_default_settings(
    compose: dict[str, Any], defaults: Settings
) -> None:
    services = compose["services"]
    assert published(services["temporal"]) == {
        defaults.temporal_host_port[1],
        defaults.temporal_ui_port,
    }
    assert published(services["redis"]) == {defaults.redis_host_port[1]}
    assert published(services["llmock"]) == {defaults.llm_host_port[1]}


def test_worker_reaches_each_service_by_its_name_on_the_default_ports(
    compose: dict[str, Any], defaults: Settings
) -> None:
    environment = compose["services"]["worker"]["environment"]
    temporal_host, temporal_port = environment["LTM_TEMPORAL_ADDRESS"].split(":")
    assert (temporal_host, int(temporal_port)) == ("temporal", defaults.temporal_host_port[1])
    redis = urlsplit(environment["LTM_REDIS_URL"])
    assert (redis.hostname, redis.port) == ("redis", defaults.redis_host_port[1])
    llm = urlsplit(environment["LTM_LLM_BASE_URL"])
    assert (llm.hostname, llm.port) == ("llmock", defaults.llm_host_port[1])
    assert llm.path == urlsplit(defaults.llm_base_url).path
    assert environment["LTM_TASK_QUEUE"] == defaults.task_queue
    assert environment["LTM_TEMPORAL_NAMESPACE"] == defaults.temporal_namespace
    # The key comes from the operator's environment, never from the file.
    assert environment["LTM_LLM_API_KEY"] == "${LTM_LLM_API_KEY:-}"


def test_temporal_persists_with_the_wal_pragmas(compose: dict[str, Any]) -> None:
    command = compose["services"]["temporal"]["command"]
    assert "--sqlite-pragma=journal_mode=wal" in command
    assert "--sqlite-pragma=synchronous=NORMAL" in command
    assert any(arg.startswith("--db-filename=/data/") for arg in command)
