"""`make up` / `make down`: the embedded stack starts on the configured ports and stops cleanly."""

from __future__ import annotations

import asyncio
import json
import os
import socket
import stat
import subprocess
import sys
from pathlib import Path

from longtask.connections import connect_redis
from longtask.redis_auth import embedded_password
from longtask.settings import Settings
from longtask.tooling.servers import free_port
from longtask.tooling.stack import installed_tool
from tests.conftest import ROOT


def port_open(port: int) -> bool:
    with socket.socket() as probe:
        return probe.connect_ex(("127.0.0.1", port)) == 0


def stack(command: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "longtask.tooling.stack", command],
        env=env,
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def redis_cli(port: int, *args: str, password: str | None = None) -> str:
    env = {k: v for k, v in os.environ.items() if k != "REDISCLI_AUTH"}
    if password is not None:
        env["REDISCLI_AUTH"] = password  # as the README has it: never on the command line
    ran = subprocess.run(
        [installed_tool("redis-cli"), "-h", "127.0.0.1", "-p", str(port), *args],
        env=env, capture_output=True, text=True, timeout=30, check=False,
    )  # fmt: skip
    return ran.stdout + ran.stderr


def redis_has_a_password(
    state: Path, port: int, outputs: list[subprocess.CompletedProcess[str]]
) -> None:
    """The embedded Redis refuses strangers; the stack's own processes get in."""
    password_file = state / f"redis-{port}.password"
    password = password_file.read_text()
    assert len(password) >= 32
    for secret in (password_file, state / "redis" / "redis.conf"):
        assert stat.S_IMODE(secret.stat().st_mode) == 0o600, secret
    assert "NOAUTH" in redis_cli(port, "ping")
    assert redis_cli(port, "ping", password=password).strip() == "PONG"
    settings = Settings(state_dir=state, redis_url=f"redis://127.0.0.1:{port}/0")

    async def ping() -> bool:
        connection = connect_redis(settings)
        try:
            return bool(await connection.ping())
        finally:
            await connection.aclose()

    assert asyncio.run(ping())
    # Never shown: not by `up`, not in what it records, not in the process list.
    shown = [o.stdout + o.stderr for o in outputs] + [(state / "stack.json").read_text()]
    started = json.loads((state / "stack.json").read_text())
    (redis_pid,) = [entry["pid"] for entry in started if entry["name"] == "redis"]
    shown.append(Path(f"/proc/{redis_pid}/cmdline").read_bytes().decode(errors="replace"))
    shown.append(repr(settings))
    assert not any(password in text for text in shown)


def test_up_starts_each_service_where_configured_and_down_stops_only_those(
    tmp_path: Path,
) -> None:
    ports = {name: free_port() for name in ("temporal", "ui", "redis", "llm")}
    env = {
        **os.environ,
        "LTM_STATE_DIR": str(tmp_path / "state"),
        "LTM_TEMPORAL_ADDRESS": f"127.0.0.1:{ports['temporal']}",
        "LTM_TEMPORAL_UI_PORT": str(ports["ui"]),
        "LTM_REDIS_URL": f"redis://127.0.0.1:{ports['redis']}/0",
        "LTM_LLM_BASE_URL": f"http://127.0.0.1:{ports['llm']}/v1",
    }
    try:
        started = stack("up", env)
        assert started.returncode == 0, started.stderr
        assert f"Temporal UI: http://127.0.0.1:{ports['ui']}" in started.stdout
        for port in ports.values():
            assert port_open(port), port
        # Tasks can be filtered by state, progress and cost on this server.
        listed_attributes = subprocess.run(
            [installed_tool("temporal"), "operator", "search-attribute", "list",
             "--address", f"127.0.0.1:{ports['temporal']}"],
            capture_output=True, text=True, timeout=60, check=True,
        ).stdout  # fmt: skip
        for name in ("LtmState", "LtmProgress", "LtmCostUsd"):
            assert name in listed_attributes
        # Persisted to SQLite under the state folder, in WAL mode.
        assert (tmp_path / "state" / "temporal.db").exists()
        assert (tmp_path / "state" / "temporal.db-wal").exists()

        redis_has_a_password(tmp_path / "state", ports["redis"], [started])

        again = stack("up", env)
        assert again.returncode == 0
        assert again.stdout.count("already answering") == 3

        listed = stack("status", env)
        assert listed.stdout.count("started by `up`") == 3
    finally:
        stopped = stack("down", env)
    assert stopped.returncode == 0, stopped.stderr
    assert stopped.stdout.count("stopped") == 3
    for port in ports.values():
        assert not port_open(port), port
    assert not (tmp_path / "state" / "stack.json").exists()
    # Stopped: a Redis of another kind on that port later is not sent the stack's password.
    later = Settings(
        state_dir=tmp_path / "state", redis_url=f"redis://127.0.0.1:{ports['redis']}/0"
    )
    assert embedded_password(later) is None
