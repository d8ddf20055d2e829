"""The `ltm` command line: its commands, options and examples. Only argparse is imported here,
so `ltm --help` answers at once."""

from __future__ import annotations

import argparse

MODEL_KINDS = ("embedding", "intermediate", "reasoning", "final")
STATES = (
    "pending", "running", "retrying", "paused", "completed", "failed", "cancelled", "timed_out",
    "budget_exceeded",
)  # fmt: skip

EXAMPLES = """\
examples:
  ltm run examples/                   start a task on a folder and watch it
  ltm start notes.md --task-id mins   start a task under a chosen id
  ltm status mins                     state, progress, elapsed time and ETA
  ltm watch mins                      live progress until the task ends
  ltm pause mins; ltm resume mins     hold the task between steps, then go on
  ltm list --state running --min-cost 0.01 --json
  ltm resume mins --checkpoint mins_1795490561000
  ltm run-task Translate --input '{"folder": "book"}'
                                      a task of your own, by name: its module
                                      in LTM_TASK_MODULES (docs/agents.md)
  ltm completion bash > ~/.local/share/bash-completion/completions/ltm

Settings come from LTM_* environment variables (README: Settings). A worker must
run for a task to move: `make worker`, or `python worker.py`.
Exit codes: 0 done, 1 the task or the request failed, 2 bad input.
"""


# Examples under each command's own --help.
COMMAND_EXAMPLES = {
    "run": "ltm run examples/ --budget-usd 0.50",
    "start": "ltm start docs/ --task-id weekly --model-final gpt-4.1-mini",
    "watch": "ltm watch weekly",
    "status": "ltm status weekly --json | jq .progress",
    "list": "ltm list --state completed --min-cost 1\n  ltm list --max-progress 50 --json",
    "cancel": "ltm cancel weekly",
    "pause": "ltm pause weekly",
    "resume": "ltm resume weekly\n  ltm resume weekly --checkpoint weekly_1795490561000",
    "checkpoints": "ltm checkpoints weekly | head -3",
    "start-task": 'ltm start-task Translate --input \'{"folder": "book", "language": "German"}\'\n'
    "  (its module named here and on the workers: LTM_TASK_MODULES=examples.translate)",
    "run-task": 'ltm run-task Translate --input \'{"folder": "book"}\' --task-id book-de\n'
    "  (its module named here and on the workers: LTM_TASK_MODULES=examples.translate)",
    "completion": "source <(ltm completion bash)\n  ltm completion zsh > ~/.zfunc/_ltm",
}


def add_command(
    commands: argparse._SubParsersAction[argparse.ArgumentParser], name: str, text: str
) -> argparse.ArgumentParser:
    return commands.add_parser(
        name,
        help=text,
        description=text,
        epilog=f"examples:\n  {COMMAND_EXAMPLES[name]}",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )


def version() -> str:
    from importlib.metadata import PackageNotFoundError
    from importlib.metadata import version as installed

    try:
        return installed("long-task-manager")
    except PackageNotFoundError:  # run from a checkout that was never installed
        return "unknown"


class VersionAction(argparse.Action):
    """--version, reading the installed version only when asked (it costs an import)."""

    def __init__(self, option_strings: list[str], dest: str, help: str | None = None) -> None:
        super().__init__(option_strings, dest, nargs=0, default=argparse.SUPPRESS, help=help)

    def __call__(self, parser: argparse.ArgumentParser, *args: object) -> None:
        print(f"{parser.prog} {version()}")
        parser.exit()


def parser(prog: str = "ltm") -> argparse.ArgumentParser:
    root = argparse.ArgumentParser(
        prog=prog,
        description="Long task manager: durable LLM document tasks on Temporal.",
        epilog=EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    root.add_argument("--version", action=VersionAction, help="show the version and exit")
    commands = root.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name, text in (("run", "start a task and watch it"), ("start", "start a task")):
        command = add_command(commands, name, text)
        command.add_argument(
            "paths",
            nargs="+",
            help=".txt, .md or .pdf files, or folders; `research PATH... --question Q` starts "
            "the research agent on them instead of the document agent",
        )
        command.add_argument("--question", help="the research agent's question")
        command.add_argument(
            "--max-turns", type=int, default=6, help="research: tool turns before the report"
        )
        command.add_argument("--task-id", help="id to give the task (default: generated)")
        command.add_argument(
            "--new-run",
            action="store_true",
            help="start an ended task's id again from zero (its old checkpoints stay)",
        )
        for kind in MODEL_KINDS:
            command.add_argument(
                f"--model-{kind}", help=f"model for the {kind} steps of this task (LTM_MODEL_*)"
            )
        add_budget_options(command)
    for name, text in (
        ("run-task", "start a long task of your own by name and follow it to its end"),
        ("start-task", "start a long task of your own (LTM_TASK_MODULES) by name"),
    ):
        add_named_task(add_command(commands, name, text))
    with_task_id(commands, "watch", "live progress until the task ends")
    status = with_task_id(commands, "status", "progress record and state")
    status.add_argument("--json", action="store_true", help="machine-readable output")
    add_list(commands)
    with_task_id(commands, "cancel", "cancel a task (its checkpoints stay)")
    with_task_id(commands, "pause", "start no new step until resumed")
    resumed = with_task_id(
        commands, "resume", "continue a paused task, or rerun an ended one from a checkpoint"
    )
    resumed.add_argument("--checkpoint", help="checkpoint id to start from (default: the newest)")
    add_budget_options(resumed)
    with_task_id(commands, "checkpoints", "the task's checkpoint ids in Redis, newest first")
    completion = add_command(commands, "completion", "print a shell completion script")
    completion.add_argument("shell", choices=("bash", "zsh"))
    return root


def with_task_id(
    commands: argparse._SubParsersAction[argparse.ArgumentParser], name: str, text: str
) -> argparse.ArgumentParser:
    command = add_command(commands, name, text)
    command.add_argument("task_id", help="the task's id (as `start` printed it)")
    return command


def add_named_task(command: argparse.ArgumentParser) -> None:
    command.add_argument(
        "name", help="the task's name, as its @long_task(name=...) gives it (e.g. Translate)"
    )
    command.add_argument(
        "--input",
        default="{}",
        metavar="JSON",
        help="the task's parameters, a JSON object its input model validates (default: {})",
    )
    command.add_argument("--task-id", help="id to give the task (default: generated)")
    command.add_argument(
        "--new-run",
        action="store_true",
        help="start an ended task's id again from zero (its old checkpoints stay)",
    )
    add_budget_options(command)


def add_list(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    text = "tasks, newest first, filtered by state, progress and cost"
    listed = add_command(commands, "list", text)
    listed.add_argument("--state", choices=STATES, help="only tasks in this state")
    listed.add_argument("--min-progress", type=float, metavar="PERCENT")
    listed.add_argument("--max-progress", type=float, metavar="PERCENT")
    listed.add_argument("--min-cost", type=float, metavar="USD")
    listed.add_argument("--max-cost", type=float, metavar="USD")
    listed.add_argument("--limit", type=int, default=50, help="at most this many (default 50)")
    listed.add_argument("--json", action="store_true", help="machine-readable output")


def add_budget_options(command: argparse.ArgumentParser) -> None:
    command.add_argument(
        "--budget-usd", type=float, help="stop the task once it has cost this much (LTM_BUDGET_USD)"
    )
    command.add_argument(
        "--budget-tokens", type=int, help="stop the task after this many tokens (LTM_BUDGET_TOKENS)"
    )


def subcommands(root: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    """Each command's own parser, by name."""
    for action in root._actions:
        if isinstance(action, argparse._SubParsersAction):
            return dict(action.choices)
    return {}
