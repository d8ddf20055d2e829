"""A server process a benchmark runs beside the stack: started, awaited on its port, stopped."""

from __future__ import annotations

import contextlib
import subprocess
from collections.abc import Iterator
from pathlib import Path

from longtask.tooling.servers import wait_for_port


@contextlib.contextmanager
def serving(
    command: list[str],
    port: int,
    log: Path,
    *,
    cwd: Path | None = None,
    env: dict[str, str] | None = None,
    seconds: float = 30,
) -> Iterator[subprocess.Popen[bytes]]:
    """Run ``command`` (its output appended to ``log``) until it listens on ``port``; on the way
    out, terminate it, and kill it if it has not ended within 15 s."""
    log.parent.mkdir(parents=True, exist_ok=True)
    with log.open("ab") as sink:
        process = subprocess.Popen(command, cwd=cwd, env=env, stdout=sink, stderr=subprocess.STDOUT)
    try:
        wait_for_port(port, process, seconds)
        yield process
    finally:
        process.terminate()
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
