"""The soak's services: its LLM server with random provider faults, and service restarts.

The embedded stack (bench/harness.py) starts Temporal and Redis; the LLM server is started
here first, on the stack's LLM port, with llmock's own random faults switched on, so
`stack.up` finds it answering and leaves it alone.
"""

from __future__ import annotations

import contextlib
import io
import json
import shutil
from collections.abc import Iterator

from pydantic import BaseModel, Field

from bench.processes import serving
from longtask.settings import Settings
from longtask.tooling import stack

# A random stall lasts far past the product's stall limit, so only the client can end it.
STALL_SECONDS = 30


class ProviderFaults(BaseModel):
    """Probabilities per request of each random provider fault llmock injects.

    Only faults a provider really sends and the product must survive: no 400s or 401s, which
    rightly end a document or the task.
    """

    http: dict[int, float] = Field(default_factory=lambda: {429: 0.01, 500: 0.01, 503: 0.01})
    stream: dict[str, float] = Field(
        default_factory=lambda: {
            "disconnect": 0.01,
            "truncate": 0.01,
            "stall": 0.005,
            "malformed": 0.005,
        }
    )

    def arguments(self) -> list[str]:
        words: list[str] = []
        for status, rate in self.http.items():
            words += ["--error-rate", f"{status}={rate}"]
        for kind, rate in self.stream.items():
            words += ["--stream-fault", f"{kind}={rate}"]
        return words


@contextlib.contextmanager
def faulty_llm_server(settings: Settings, faults: ProviderFaults) -> Iterator[None]:
    """llmock on the stack's LLM port with random faults; stopped on the way out."""
    host, port = settings.llm_host_port
    command = [
        stack.installed_tool("llmock"), "serve", "--host", host, "--port", str(port),
        "--log-level", "warning",
        "--latency-ms", str(settings.llm_server_latency_ms),
        "--stream-chunk-delay-ms", str(settings.llm_server_chunk_delay_ms),
        "--stream-stall-seconds", str(STALL_SECONDS),
        *faults.arguments(),
    ]  # fmt: skip
    with serving(command, port, settings.state_dir / "logs" / "llm.log"):
        yield


class PortTaken(RuntimeError):
    """A port picked for the stack was taken before its service started (the dev server
    opens ports of its own at random), so `stack.up` found another program answering."""


def ensure_ours(settings: Settings) -> None:
    """Temporal and Redis are the ones this stack started, not whatever held their ports."""
    for name in ("temporal", "redis"):
        try:
            _started(settings, name)
        except RuntimeError:
            raise PortTaken(f"{name}: its port answered before it started") from None


def _started(settings: Settings, name: str) -> stack.Started:
    """The running service ``name`` as `stack.up` recorded it in the stack's folder."""
    record = settings.state_dir / "stack.json"
    if not record.exists():
        raise RuntimeError(f"no stack record in {settings.state_dir}")
    for item in json.loads(record.read_text()):
        entry = stack.Started.model_validate(item)
        if entry.name == name:
            return entry
    raise RuntimeError(f"{name} is not a service this stack started")


def restart_service(settings: Settings, name: str, empty: bool = False) -> None:
    """Stop the stack's service ``name`` (SIGTERM, then SIGKILL) and start it again on the
    same port. ``empty`` deletes Redis' data first, as a Redis that lost its disk would
    come back. Temporal's SQLite file is kept: the server comes back with its history.
    Blocking: run it in a thread."""
    with contextlib.redirect_stdout(io.StringIO()):
        stack.down(settings, only=[_started(settings, name)])
        if empty:
            data = settings.state_dir / "redis"
            shutil.rmtree(data, ignore_errors=True)
            data.mkdir()
        stack.up(settings)
