"""The installed `ltm` command run as a user runs it: a process configured by environment."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from pathlib import Path

from longtask.settings import Settings

LTM = Path(sys.executable).parent / "ltm"
ROOT = Path(__file__).resolve().parent.parent


def run_ltm(
    settings: Settings, *args: str, extra_env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    env = {
        **os.environ,
        "LTM_TEMPORAL_ADDRESS": settings.temporal_address,
        "LTM_TASK_QUEUE": settings.task_queue,
        "LTM_REDIS_URL": settings.redis_url,
        "LTM_PAYLOAD_DIR": str(settings.payload_folder),
        "COLUMNS": "80",
        **(extra_env or {}),
    }
    # Run from the checkout, as the README's walkthroughs are (task modules import from it).
    return subprocess.run(
        [str(LTM), *args],
        env=env,
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


async def ltm(
    settings: Settings, *args: str, extra_env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    """Run `ltm` in a thread: the test's worker shares this event loop and must keep going."""
    return await asyncio.to_thread(run_ltm, settings, *args, extra_env=extra_env)


def one_line(done: subprocess.CompletedProcess[str]) -> str:
    """The single line an expected error prints; fails the test on a traceback or more."""
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in done.stderr, done.stderr
    return lines[0]
