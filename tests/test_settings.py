"""Settings: defaults point at the embedded stack; a bad value fails at start-up by name."""

from __future__ import annotations

import math
import os
import subprocess
import sys

import pytest
from pydantic import ValidationError

from longtask.models import ModelRoute, TaskInput
from longtask.settings import Settings, SettingsError, load_settings
from tests.conftest import ROOT


def test_defaults_point_at_the_embedded_stack(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in list(os.environ):
        if name.startswith("LTM_"):
            monkeypatch.delenv(name)
    settings = load_settings()
    assert settings.temporal_address == "127.0.0.1:7233"
    assert settings.temporal_ui_port == 8233
    assert settings.redis_url == "redis://127.0.0.1:6379/0"
    assert settings.llm_base_url == "http://127.0.0.1:8000/v1"
    assert settings.temporal_namespace == "default"
    assert (settings.model_reasoning, settings.model_final) == ("gemini-2.5-flash", "gpt-4.1")


def test_environment_overrides_every_address(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LTM_TEMPORAL_ADDRESS", "temporal.internal:7300")
    monkeypatch.setenv("LTM_REDIS_URL", "redis://cache:6380/2")
    monkeypatch.setenv("LTM_LLM_BASE_URL", "https://llm.example/v1/")
    monkeypatch.setenv("LTM_TASK_QUEUE", "docs")
    settings = load_settings()
    assert settings.temporal_host_port == ("temporal.internal", 7300)
    assert settings.redis_host_port == ("cache", 6380)
    assert settings.llm_base_url == "https://llm.example/v1"
    assert settings.llm_host_port == ("llm.example", 443)
    assert settings.task_queue == "docs"


@pytest.mark.parametrize(
    ("variable", "value"),
    [
        ("LTM_TEMPORAL_ADDRESS", "no-port-here"),
        ("LTM_REDIS_URL", "http://localhost:6379"),
        ("LTM_LLM_BASE_URL", "127.0.0.1:8000"),
        ("LTM_HEARTBEAT_TIMEOUT_SECONDS", "soon"),
        ("LTM_DOCUMENT_CONCURRENCY", "0"),
        ("LTM_TASK_DEADLINE_SECONDS", "inf"),
        ("LTM_TASK_DEADLINE_SECONDS", "nan"),
        ("LTM_BUDGET_USD", "inf"),
        ("LTM_BUDGET_USD", "nan"),
        ("LTM_HEARTBEAT_TIMEOUT_SECONDS", "nan"),
        ("LTM_RATE_LIMIT_MAX_WAIT_SECONDS", "nan"),
        ("LTM_PRICES", '{"gpt-4.1": -8}'),
        ("LTM_PRICES", '{"gpt-4.1": "Infinity"}'),
        ("LTM_PRICES", '{"gpt-4.1": NaN}'),
        ("LTM_PRICES", '{"gpt-4.1": 8'),
        ("LTM_PRICES", "[8]"),
        ("LTM_RATE_LIMITS", '{"gpt-4.1": {"rpm": 5'),
        ("LTM_RATE_LIMITS", "not json"),
    ],
)
def test_bad_value_names_the_variable(
    monkeypatch: pytest.MonkeyPatch, variable: str, value: str
) -> None:
    monkeypatch.setenv(variable, value)
    with pytest.raises(SettingsError, match=variable):
        load_settings()


def test_api_key_never_shows_in_repr() -> None:
    settings = Settings(llm_api_key="sk-live-secret")
    assert "sk-live-secret" not in repr(settings)
    assert "sk-live-secret" not in settings.model_dump_json()


@pytest.mark.parametrize("program", ["worker.py", "starter.py"])
def test_programs_refuse_to_start_on_a_bad_setting(program: str) -> None:
    env = {**os.environ, "LTM_REDIS_URL": "nonsense"}
    args = [sys.executable, str(ROOT / program)]
    if program == "starter.py":
        args += ["status", "some-task"]
    done = subprocess.run(args, env=env, capture_output=True, text=True, timeout=60, check=False)
    assert done.returncode == 2
    assert "LTM_REDIS_URL" in done.stderr


@pytest.mark.parametrize("program", ["worker.py", "starter.py"])
@pytest.mark.parametrize("variable", ["LTM_PRICES", "LTM_RATE_LIMITS"])
def test_programs_name_a_malformed_json_setting_in_one_line(program: str, variable: str) -> None:
    env = {**os.environ, variable: '{"gpt-4.1": 8'}
    args = [sys.executable, str(ROOT / program)]
    if program == "starter.py":
        args += ["status", "some-task"]
    done = subprocess.run(args, env=env, capture_output=True, text=True, timeout=60, check=False)
    assert done.returncode == 2
    assert variable in done.stderr and "JSON" in done.stderr
    assert "Traceback" not in done.stderr
    assert len(done.stderr.strip().splitlines()) == 1


def test_a_task_input_refuses_endless_deadlines_and_negative_prices() -> None:
    route = ModelRoute(embedding="e", intermediate="i", reasoning="r", final="f")
    good = TaskInput(task_id="t", paths=["a.txt"], models=route)
    for change in (
        {"deadline_seconds": math.inf},
        {"deadline_seconds": math.nan},
        {"deadline_seconds": 0},
        {"prices": {"f": -1.0}},
        {"prices": {"f": math.inf}},
        {"budget": {"max_cost_usd": math.inf}},
        {"budget": {"max_cost_usd": math.nan}},
    ):
        with pytest.raises(ValidationError):
            TaskInput.model_validate({**good.model_dump(), **change})
