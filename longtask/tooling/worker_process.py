"""Workers in their own processes, configured the way a user would: by environment."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import urllib.request
from pathlib import Path

from longtask.settings import Settings

ROOT = Path(__file__).resolve().parents[2]


class WorkerProcess:
    """`python worker.py` in its own process, configured like a user would: by environment."""

    def __init__(
        self,
        settings: Settings,
        log: Path,
        metrics_port: int = 0,
        extra_env: dict[str, str] | None = None,
    ) -> None:
        env = {
            **os.environ,
            "LTM_TEMPORAL_ADDRESS": settings.temporal_address,
            "LTM_TASK_QUEUE": settings.task_queue,
            "LTM_REDIS_URL": settings.redis_url,
            # Where the embedded Redis's password is, for a stack `make up` started.
            "LTM_STATE_DIR": str(settings.state_dir),
            "LTM_LLM_BASE_URL": settings.llm_base_url,
            "LTM_METRICS_PORT": str(metrics_port),
            "LTM_PAYLOAD_DIR": str(settings.payload_folder),
            "LTM_PAYLOAD_THRESHOLD_BYTES": str(settings.payload_threshold_bytes),
            **(extra_env or {}),
        }
        self.log = log
        with log.open("ab") as sink:
            self.process = subprocess.Popen(
                [sys.executable, str(ROOT / "worker.py")],
                env=env,
                stdout=sink,
                stderr=subprocess.STDOUT,
            )

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            self.process.wait(timeout=30)


def read_metrics(port: int) -> str:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as response:
        text: str = response.read().decode()
        return text
