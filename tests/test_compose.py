"""docker-compose.yml: a production-like stack, pinned by .env, whose addresses agree with the
settings. No Docker engine runs here, so the file is read the way compose reads it: .env
interpolated into the YAML."""

from __future__ import annotations

import os
import re
from collections.abc import Iterator
from typing import Any
from urllib.parse import urlsplit

import pytest
import yaml

from longtask.search_attributes import KEYS
from longtask.settings import Settings, load_settings
from longtask.tooling.stack import TIMER_MAX_TIME_SHIFT, server_tuning
from tests.conftest import ROOT

COMPOSE_TEXT = (ROOT / "docker-compose.yml").read_text()
ONE_SHOT_JOBS = {"temporal-schema", "temporal-setup"}
LONG_RUNNING = {"postgresql", "temporal", "temporal-ui", "redis", "llmock", "worker"}
# `$$` is a literal dollar; `${NAME}`, `${NAME:-default}`, `${NAME:?error}` and `$NAME` are
# compose variables.
_DOLLAR = re.compile(r"\$\$|\$\{(?P<name>\w+)(?P<default>:?[-?][^}]*)?\}|\$(?P<bare>\w+)")
# Secrets the operator's shell must set; compose stops with this message otherwise.
REQUIRED_FROM_SHELL = {
    "POSTGRES_PASSWORD": "${POSTGRES_PASSWORD:?set POSTGRES_PASSWORD in your shell}"
}
# What a test shell sets for them, to read the file as compose would.
SHELL = {"POSTGRES_PASSWORD": "set-by-the-shell"}
_SECRET_NAME = re.compile(r"PASSWORD|PWD|SECRET|TOKEN|API_KEY", re.IGNORECASE)


def read_dotenv() -> dict[str, str]:
    pins: dict[str, str] = {}
    for line in (ROOT / ".env").read_text().splitlines():
        if line.strip() and not line.lstrip().startswith("#"):
            name, sep, value = line.partition("=")
            assert sep, f".env: not NAME=VALUE: {line!r}"
            pins[name.strip()] = value.strip()
    return pins


def references(text: str) -> set[str]:
    """The variables a compose text uses (escaped `$$` excluded)."""
    found = set()
    for match in _DOLLAR.finditer(text):
        assert not match["bare"], f"write ${{{match['bare']}}} or $${match['bare']}"
        if match["name"]:
            found.add(match["name"])
    return found


def interpolate(text: str, values: dict[str, str]) -> str:
    def value(match: re.Match[str]) -> str:
        if match[0] == "$$":
            return "$"
        name, default = match["name"], match["default"]
        if name in values and (values[name] or not default or not default.startswith(":")):
            return values[name]
        assert default is not None, f"${{{name}}} has no value and no default"
        assert "?" not in default[:2], f"${{{name}}} is required: {default.lstrip(':')[1:]}"
        return default.lstrip(":")[1:]

    return _DOLLAR.sub(value, text)


def environment(service: dict[str, Any]) -> dict[str, str | None]:
    env = service.get("environment", {})
    if isinstance(env, list):
        return {k: (v if sep else None) for k, sep, v in (e.partition("=") for e in env)}
    return {k: None if v is None else str(v) for k, v in env.items()}


def published(service: dict[str, Any]) -> Iterator[tuple[str, int, int]]:
    """(host address, host port, container port) of each published port."""
    for mapping in service.get("ports", []):
        *address, host, container = str(mapping).split(":")
        yield (address[0] if address else "0.0.0.0"), int(host), int(container)


def script(service: dict[str, Any]) -> str:
    command = service["command"]
    return "\n".join(command) if isinstance(command, list) else str(command)


@pytest.fixture(scope="module")
def pins() -> dict[str, str]:
    return read_dotenv()


@pytest.fixture(scope="module")
def raw() -> dict[str, Any]:
    """The file as written, variables left in."""
    loaded: dict[str, Any] = yaml.safe_load(COMPOSE_TEXT)
    return loaded


@pytest.fixture(scope="module")
def compose(pins: dict[str, str]) -> dict[str, Any]:
    """The file as compose sees it from a shell that sets only the required secrets."""
    loaded: dict[str, Any] = yaml.safe_load(interpolate(COMPOSE_TEXT, {**pins, **SHELL}))
    return loaded


@pytest.fixture(scope="module")
def services(compose: dict[str, Any]) -> dict[str, dict[str, Any]]:
    found: dict[str, dict[str, Any]] = compose["services"]
    return found


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


def test_services_of_the_stack(services: dict[str, dict[str, Any]]) -> None:
    assert set(services) == LONG_RUNNING | ONE_SHOT_JOBS
    # Compose names containers per project and replica; a fixed name would forbid --scale.
    assert not [name for name, service in services.items() if "container_name" in service]
    worker = services["worker"]
    assert worker["build"]["context"] == "."
    assert (ROOT / "Dockerfile").exists()
    assert "ports" not in worker  # a fixed host port would forbid --scale
    assert "deploy" not in worker  # the replica count comes from --scale only
    # The local LLM server: the same Dockerfile with the `local` extra, the worker without it.
    llmock = services["llmock"]
    assert llmock["build"]["context"] == worker["build"]["context"]
    assert llmock["build"]["args"]["EXTRAS"] == "[local]"
    assert "EXTRAS" not in worker["build"]["args"]
    assert llmock["image"] != worker["image"]


def test_every_variable_is_pinned_in_the_env_file(pins: dict[str, str]) -> None:
    used = references(COMPOSE_TEXT)
    assert used, "the versions must come from .env"
    assert {name for name in used if not pins.get(name)} == set(REQUIRED_FROM_SHELL)
    assert set(pins) - used == set(), "a pin nothing uses"
    # A shell that does not set a required secret gets compose's error, not an empty password.
    with pytest.raises(AssertionError, match="set POSTGRES_PASSWORD in your shell"):
        interpolate(COMPOSE_TEXT, pins)


def test_interpolation_follows_compose() -> None:
    values = {"A": "1", "EMPTY": ""}
    assert interpolate("$${A} ${A} ${B:-2} ${EMPTY:-3} ${EMPTY-4}", values) == "${A} 1 2 3 "
    assert interpolate("${A:?set A}", values) == "1"
    with pytest.raises(AssertionError, match="no value"):
        interpolate("${B}", values)
    with pytest.raises(AssertionError, match="set B"):
        interpolate("${B:?set B}", values)
    with pytest.raises(AssertionError, match="B"):
        references("$B")


def test_images_are_pinned_never_latest(
    raw: dict[str, Any], services: dict[str, dict[str, Any]], pins: dict[str, str]
) -> None:
    for name, service in services.items():
        written = raw["services"][name]["image"]
        assert "${" in written, f"{name}: the version belongs in .env, got {written}"
        repository, _, tag = service["image"].rpartition(":")
        assert repository and "/" not in tag, f"{name}: no tag in {service['image']}"
        assert tag != "latest" and re.search(r"\d", tag), f"{name}: {service['image']}"
    for pin, value in pins.items():
        if pin.endswith("_VERSION"):
            assert value != "latest" and re.match(r"\d", value), f"{pin}={value}"


def test_no_secret_is_written_in_the_compose_file(
    raw: dict[str, Any], pins: dict[str, str]
) -> None:
    for name, service in raw["services"].items():
        for variable, value in environment(service).items():
            if _SECRET_NAME.search(variable):
                # Passed through from the shell, or required from it: never a value.
                assert value is None or value in REQUIRED_FROM_SHELL.values(), f"{name}.{variable}"
            assert not re.search(r"://[^/@\s]*:[^/@\s]*@", value or ""), f"{name}.{variable}"
    # No password, key or token is kept in .env.
    assert {name for name in pins if _SECRET_NAME.search(name)} == set()
    assert "ports" not in raw["services"]["postgresql"]
    # The provider key is passed through from the operator's shell, never written.
    assert environment(raw["services"]["worker"])["LTM_LLM_API_KEY"] is None
    assert "LTM_LLM_API_KEY" not in pins


def test_long_running_services_have_health_checks_and_start_in_order(
    services: dict[str, dict[str, Any]],
) -> None:
    completed: set[str] = set()
    for name, service in services.items():
        depends = service.get("depends_on", {})
        assert isinstance(depends, dict), f"{name}: depends_on needs conditions"
        for target, rule in depends.items():
            assert target in services, f"{name} depends on unknown {target}"
            if rule["condition"] == "service_completed_successfully":
                completed.add(target)
            else:
                assert rule["condition"] == "service_healthy", f"{name} -> {target}"
                assert "healthcheck" in services[target], f"{name} waits on {target}"
    assert completed == ONE_SHOT_JOBS
    for name in LONG_RUNNING:
        test = services[name]["healthcheck"]["test"]
        assert test[0] in {"CMD", "CMD-SHELL"} and len(test) > 1, name
        assert services[name]["restart"] == "unless-stopped", name
    for name in ONE_SHOT_JOBS:
        assert "healthcheck" not in services[name] and services[name]["restart"] == "no"
    order = {
        "temporal-schema": {"postgresql"},
        "temporal": {"postgresql", "temporal-schema"},
        "temporal-setup": {"temporal"},
        "temporal-ui": {"temporal"},
        "worker": {"temporal", "temporal-setup", "redis", "llmock"},
    }
    for name, needs in order.items():
        assert set(services[name]["depends_on"]) == needs, name


def test_local_llm_server_only_in_its_profile(services: dict[str, dict[str, Any]]) -> None:
    assert services["llmock"]["profiles"] == ["local-llm"]
    assert [name for name, s in services.items() if "profiles" in s] == ["llmock"]
    # Without the profile the worker starts anyway, against the provider the operator names.
    assert services["worker"]["depends_on"]["llmock"]["required"] is False


def test_state_lives_on_named_volumes(compose: dict[str, Any]) -> None:
    services = compose["services"]

    def mounts(name: str) -> dict[str, str]:
        return {v.split(":")[1]: v.split(":")[0] for v in services[name].get("volumes", [])}

    assert mounts("postgresql")["/var/lib/postgresql/data"] == "postgres-data"
    assert mounts("redis")["/data"] == "redis-data"
    command = services["redis"]["command"]
    assert command[command.index("--appendonly") + 1] == "yes"
    worker_env = environment(services["worker"])
    shared = mounts("worker")["/data"]
    assert shared == "worker-data"
    for variable in ("LTM_STATE_DIR", "LTM_PAYLOAD_DIR", "LTM_REPORT_DIR"):
        assert (worker_env[variable] or "").startswith("/data"), variable
    named = {
        source
        for service in services.values()
        for source in (v.split(":")[0] for v in service.get("volumes", []))
        if not source.startswith(".")
    }
    assert named == set(compose["volumes"])


def test_published_ports_match_the_default_settings(
    services: dict[str, dict[str, Any]], defaults: Settings
) -> None:
    def ports(name: str) -> set[tuple[int, int]]:
        found = list(published(services[name]))
        # Reachable from this host only; docs/deploying.md says how to open them.
        assert {address for address, _, _ in found} == {"127.0.0.1"}, name
        return {(host, container) for _, host, container in found}

    assert ports("temporal") == {(defaults.temporal_host_port[1], 7233)}
    assert ports("temporal-ui") == {(defaults.temporal_ui_port, 8080)}
    assert ports("redis") == {(defaults.redis_host_port[1], 6379)}
    assert ports("llmock") == {(defaults.llm_host_port[1], 8000)}
    published_anywhere = {n for n, s in services.items() if "ports" in s}
    assert published_anywhere == {"temporal", "temporal-ui", "redis", "llmock"}


def test_worker_reaches_each_service_by_its_name(
    services: dict[str, dict[str, Any]], defaults: Settings
) -> None:
    def listens(name: str) -> set[int]:
        return {container for _, _, container in published(services[name])}

    env = environment(services["worker"])
    host, port = (env["LTM_TEMPORAL_ADDRESS"] or "").split(":")
    assert host == "temporal" and int(port) in listens("temporal")
    assert int(port) == defaults.temporal_host_port[1]
    redis = urlsplit(env["LTM_REDIS_URL"])
    assert (redis.scheme, redis.hostname) == ("redis", "redis")
    assert redis.port in listens("redis") and redis.port == defaults.redis_host_port[1]
    llm = urlsplit(env["LTM_LLM_BASE_URL"])
    assert llm.hostname == "llmock" and llm.port in listens("llmock")
    assert llm.port == defaults.llm_host_port[1]
    serve = services["llmock"]["command"]
    assert serve[serve.index("--port") + 1] == str(llm.port)
    assert llm.path == urlsplit(defaults.llm_base_url).path
    assert env["LTM_TASK_QUEUE"] == defaults.task_queue
    assert env["LTM_TEMPORAL_NAMESPACE"] == defaults.temporal_namespace
    # Everything else that talks to Temporal uses the same address and namespace.
    for name in ("temporal-setup", "temporal-ui"):
        assert environment(services[name])["TEMPORAL_ADDRESS"] == env["LTM_TEMPORAL_ADDRESS"]
    setup_namespace = environment(services["temporal-setup"])["TEMPORAL_NAMESPACE"]
    assert setup_namespace == env["LTM_TEMPORAL_NAMESPACE"]
    # The worker is up once its metrics answer, on the port it is told to serve them on.
    assert f":{env['LTM_METRICS_PORT']}/metrics" in " ".join(
        services["worker"]["healthcheck"]["test"]
    )


def test_worker_environment_is_valid_for_the_product(
    services: dict[str, dict[str, Any]], monkeypatch: pytest.MonkeyPatch
) -> None:
    for name in list(os.environ):
        if name.startswith("LTM_"):
            monkeypatch.delenv(name)
    for variable, value in environment(services["worker"]).items():
        if value is not None:
            monkeypatch.setenv(variable, value)
    settings = load_settings()
    assert settings.temporal_address == "temporal:7233"
    assert not settings.temporal_tls_enabled  # the stack's own server speaks plain gRPC


def test_temporal_runs_on_the_schema_the_job_sets_up(
    raw: dict[str, Any], services: dict[str, dict[str, Any]]
) -> None:
    server = environment(services["temporal"])
    assert server["DB"] == "postgres12"
    assert server["POSTGRES_SEEDS"] in services and server["POSTGRES_SEEDS"] == "postgresql"
    assert server["DB_PORT"] == "5432"
    job = script(services["temporal-schema"])
    assert f"--ep {server['POSTGRES_SEEDS']} -p {server['DB_PORT']}" in job
    for database, schema in (
        (server["DBNAME"], "temporal"),
        (server["VISIBILITY_DBNAME"], "visibility"),
    ):
        assert f"--db {database} create" in job
        assert f"--db {database} setup-schema -v 0.0" in job
        assert re.search(rf"--db {database} update-schema -d \S*/{schema}/versioned", job)
    # One password, required from the shell, for the database and both of its users.
    written = {
        "postgresql": environment(raw["services"]["postgresql"])["POSTGRES_PASSWORD"],
        "temporal": environment(raw["services"]["temporal"])["POSTGRES_PWD"],
        "temporal-schema": environment(raw["services"]["temporal-schema"])["SQL_PASSWORD"],
    }
    assert set(written.values()) == {REQUIRED_FROM_SHELL["POSTGRES_PASSWORD"]}


def test_setup_registers_the_namespace_and_search_attributes(
    services: dict[str, dict[str, Any]],
) -> None:
    setup = script(services["temporal-setup"])
    assert re.search(r'namespace create --namespace "\$ns"', setup)
    assert 'ns="${TEMPORAL_NAMESPACE}"' in setup
    for key in KEYS:
        kind = "".join(p.capitalize() for p in key.indexed_value_type.name.split("_"))
        assert re.search(rf"^add {key.name} {kind}$", setup, re.MULTILINE), key.name


def test_dockerfile_builds_the_worker(
    services: dict[str, dict[str, Any]], pins: dict[str, str]
) -> None:
    dockerfile = (ROOT / "Dockerfile").read_text()
    copied = " ".join(line for line in dockerfile.splitlines() if line.startswith("COPY"))
    for needed in ("pyproject.toml", "longtask", "workflows", "activities", "worker.py"):
        assert needed in copied, needed
    assert "USER " in dockerfile  # not root
    assert re.search(r"^RUN pip install .*-c constraints\.txt", dockerfile, re.MULTILINE)
    assert "constraints.txt" in copied
    default = re.search(r"^ARG PYTHON_VERSION=(\S+)$", dockerfile, re.MULTILINE)
    assert default and default[1] == pins["PYTHON_VERSION"]
    assert services["worker"]["build"]["args"]["PYTHON_VERSION"] == pins["PYTHON_VERSION"]
    ignored = (ROOT / ".dockerignore").read_text().split()
    assert {".venv", ".state", ".git"} <= set(ignored)


def test_temporal_reads_the_dynamic_config_every_stack_runs_with(
    services: dict[str, dict[str, Any]],
) -> None:
    temporal = services["temporal"]
    path = environment(temporal)["DYNAMIC_CONFIG_FILE_PATH"]
    mounted = {
        target: source for source, target, *_ in (v.split(":") for v in temporal.get("volumes", []))
    }
    source = mounted[str(path)]
    config = yaml.safe_load((ROOT / source).read_text())
    assert config["limit.maxIDLength"] == [{"value": 255, "constraints": {}}]
    # The same timer tuning as the embedded stack and the tests' dev server.
    (shift,) = config["history.timerProcessorMaxTimeShift"]
    assert shift["value"] == TIMER_MAX_TIME_SHIFT
    assert server_tuning()[1] == f'history.timerProcessorMaxTimeShift="{shift["value"]}"'
