"""The embedded Redis's password: made by `make up`, kept in the state folder, read by every
process that connects to that Redis, never printed nor stored anywhere else.

A Redis configured by URL (``LTM_REDIS_URL=redis://:PASSWORD@host``) brings its own password;
this one applies only to a loopback Redis whose URL names none, on a port where `make up`
started Redis and that Redis still runs (``$LTM_STATE_DIR/stack.json``): after `make down`, a
Redis of another kind on the same port (docker compose) is not sent a password it does not have.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

from longtask.settings import Settings

LOOPBACK = frozenset({"127.0.0.1", "localhost", "::1"})


def password_file(state_dir: Path, port: int) -> Path:
    return state_dir / f"redis-{port}.password"


def ensure_password(state_dir: Path, port: int) -> str:
    """The password of the embedded Redis on ``port``: the one kept, or a new one, written
    readable by its owner only."""
    path = password_file(state_dir, port)
    path.parent.mkdir(parents=True, exist_ok=True)
    with contextlib.suppress(FileExistsError):
        descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(descriptor, "w") as sink:
            sink.write(secrets.token_urlsafe(32))
    os.chmod(path, 0o600)  # a copy restored with looser rights is tightened again
    return path.read_text().strip()


def embedded_password(settings: Settings) -> str | None:
    """The password `make up` gave the Redis at ``settings.redis_url``, if it is that Redis."""
    parts = urlsplit(settings.redis_url)
    if parts.scheme != "redis" or parts.password or "password=" in parts.query:
        return None
    host, port = settings.redis_host_port
    if host not in LOOPBACK or not _started_by_the_stack(settings.state_dir, port):
        return None
    try:
        return password_file(settings.state_dir, port).read_text().strip() or None
    except FileNotFoundError:
        return None


def _started_by_the_stack(state_dir: Path, port: int) -> bool:
    """Whether `make up` started the Redis on ``port`` and it still runs."""
    try:
        started = json.loads((state_dir / "stack.json").read_text())
    except (OSError, ValueError):
        return False
    for entry in started if isinstance(started, list) else []:
        if isinstance(entry, dict) and entry.get("name") == "redis" and entry.get("port") == port:
            try:
                # Redis names itself "redis-server HOST:PORT"; a reused pid runs something else.
                return b"redis-server" in Path(f"/proc/{entry.get('pid')}/cmdline").read_bytes()
            except OSError:
                return False
    return False


def redis_url_with_password(settings: Settings) -> str:
    """``settings.redis_url`` with the embedded Redis's password in it, for tools that take a
    URL only; keep it out of logs (``longtask.settings.redact_url`` masks it)."""
    password = embedded_password(settings)
    if password is None:
        return settings.redis_url
    parts = urlsplit(settings.redis_url)
    netloc = f":{password}@{parts.netloc.rsplit('@', 1)[-1]}"
    return urlunsplit(parts._replace(netloc=netloc))
