"""`ltm` help, version and completion: answered without a stack, generated from the parser."""

from __future__ import annotations

import os
import subprocess
from importlib.metadata import version

from longtask.cli.parser import parser, subcommands
from tests.cli_runs import LTM

COMMANDS = (
    "run",
    "start",
    "run-task",
    "start-task",
    "watch",
    "status",
    "list",
    "cancel",
    "pause",
    "resume",
    "checkpoints",
)


def ltm(*args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "COLUMNS": "80"}
    return subprocess.run(
        [str(LTM), *args], env=env, capture_output=True, text=True, timeout=60, check=False
    )


def test_help_lists_every_command_with_examples() -> None:
    shown = ltm("--help")
    assert shown.returncode == 0
    for name in COMMANDS:
        assert f"    {name}" in shown.stdout, name
    assert "examples:\n  ltm run examples/" in shown.stdout
    assert all(len(line) <= 80 for line in shown.stdout.splitlines())
    for name in COMMANDS:
        own = ltm(name, "--help")
        assert own.returncode == 0 and "examples:\n  ltm " in own.stdout, name


def test_version_is_the_installed_one() -> None:
    shown = ltm("--version")
    assert shown.returncode == 0
    assert shown.stdout.strip() == f"ltm {version('long-task-manager')}"


def test_completion_scripts_name_every_command_and_option() -> None:
    for shell in ("bash", "zsh"):
        script = ltm("completion", shell)
        assert script.returncode == 0
        for name, command in subcommands(parser()).items():
            assert name in script.stdout
            for action in command._actions:
                for option in action.option_strings:
                    if option.startswith("--"):
                        assert option in script.stdout, option
    bash = ltm("completion", "bash").stdout
    checked = subprocess.run(["bash", "-n"], input=bash, text=True, capture_output=True)
    assert checked.returncode == 0, checked.stderr
    # Completing `ltm list --min` offers the list's own options.
    completed = subprocess.run(
        ["bash", "-c", bash + 'COMP_WORDS=(ltm list --min); COMP_CWORD=2; _ltm_complete; '
         'echo "${COMPREPLY[@]}"'],
        text=True, capture_output=True, check=True,
    )  # fmt: skip
    assert completed.stdout.split() == ["--min-progress", "--min-cost"]
