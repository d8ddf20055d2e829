"""`make demo`: start the stack and a worker, run the agent on examples/, stop what it started."""

from __future__ import annotations

import signal
import subprocess
import sys
from pathlib import Path

from longtask.cli import main as cli_main
from longtask.process_exit import exit_now
from longtask.settings import SettingsError, load_settings
from longtask.tooling.stack import down, up

ROOT = Path(__file__).resolve().parents[2]


def main() -> int:
    try:
        settings = load_settings()
    except SettingsError as error:
        print(error, file=sys.stderr)
        return 2
    started = up(settings)
    log = settings.state_dir / "logs" / "demo-worker.log"
    worker = None
    try:
        with log.open("ab") as sink:
            worker = subprocess.Popen(
                [sys.executable, str(ROOT / "worker.py")], stdout=sink, stderr=subprocess.STDOUT
            )
        print(f"worker: started (pid {worker.pid}, log {log})")
        return cli_main(["run", str(ROOT / "examples")])
    finally:
        if worker is not None:
            worker.send_signal(signal.SIGTERM)
            worker.wait(timeout=30)
            print("worker: stopped")
        down(settings, only=started)


if __name__ == "__main__":
    exit_now(main())
