"""Command line client of the long task manager: the `ltm` command as a script.

python starter.py run PATH...        start a task, show live progress, print the reports
python starter.py start PATH...      start a task and print its id
python starter.py watch ID           live progress of a running task
python starter.py status ID [--json] the progress record plus the state
python starter.py list [--state S]   tasks, filtered by state, progress and cost
python starter.py cancel ID          cancel a task (its checkpoints stay)
python starter.py pause ID           start no new step until resumed
python starter.py resume ID [--checkpoint CID]
                                     continue a paused task, or start a new run of a failed,
                                     cancelled, timed-out or terminated one from a checkpoint
python starter.py run-task NAME --input JSON
                                     a long task of your own (LTM_TASK_MODULES) by name,
                                     followed to its end; `start-task` prints its id

The commands live in longtask/cli; `ltm --help` lists them all with examples.
"""

from __future__ import annotations

from longtask.cli import main
from longtask.process_exit import exit_now

if __name__ == "__main__":
    exit_now(main(prog="starter.py"))
