"""`make up` / `make down`: the embedded stack starts on the configured ports and stops cleanly."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

from longtask.stack import installed_tool
from tests.conftest import ROOT
from tests.servers import free_port


def port_open(port: int) -> bool:
    with socket.socket() as probe:
        return probe.connect_ex(("127.0.0.1", port)) == 0


def stack(command: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "longtask.stack", command],
        env=env,
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


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
