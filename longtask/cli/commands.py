"""What each `ltm` command does, through the task client; expected errors become one line."""

from __future__ import annotations

import argparse
import asyncio
import functools
import json
import logging
import sys
from pathlib import Path
from typing import Any

from rich.console import Console
from temporalio.service import RPCError

from longtask.cli.output import print_status, print_task_list
from longtask.cli.parser import MODEL_KINDS
from longtask.client_errors import (
    TaskError,
    UsageError,
    no_worker_answered_hint,
    no_worker_hint,
    task_module_hint,
)
from longtask.cost import TaskBudget
from longtask.engine.names import DOCUMENT_TASK
from longtask.models import TaskInput
from longtask.settings import Settings, SettingsError, load_settings
from longtask.states import TaskState
from longtask.task_by_name import parse_params
from longtask.task_client import TaskClient
from longtask.task_list import TaskFilter, parse_state
from longtask.task_start import checked_budget, missing_paths, settings_budget, task_input
from longtask.temporal_runtime import CORE_LOGGER
from longtask.tooling.live_view import print_outcome, print_result, show_live

# Exit codes: a bad input is the caller's to fix (2); anything else expected is 1.
USAGE_EXIT = 2
FAILED_EXIT = 1


def run_command(args: argparse.Namespace, prog: str) -> int:
    # The core client's retry warnings (a query it retried while the task's worker was gone)
    # would break the one line `ltm` prints on stderr; it says itself what went wrong.
    logging.getLogger(CORE_LOGGER).setLevel(logging.ERROR)
    try:
        settings = load_settings()
        return asyncio.run(dispatch(args, settings, prog))
    except (SettingsError, UsageError) as error:
        print(f"{prog}: {error}", file=sys.stderr)
        return USAGE_EXIT
    except TaskError as error:
        print(f"{prog}: {error}", file=sys.stderr)
        return FAILED_EXIT
    except RPCError as error:
        # Temporal answered the connection but not this call (it stopped, or refused it).
        first_line = str(error).splitlines()[0] if str(error) else error.status.name
        print(
            f"{prog}: Temporal refused the request ({error.status.name}: {first_line}); "
            "check that the stack is up (`make up`) and LTM_TEMPORAL_* point at it",
            file=sys.stderr,
        )
        return FAILED_EXIT
    except KeyboardInterrupt:
        # Ctrl-C stops this command only; a task it started or watched goes on.
        print(f"{prog}: interrupted; a started task goes on (`{prog} list`)", file=sys.stderr)
        return 130


def task_filter(args: argparse.Namespace) -> TaskFilter:
    if args.limit < 1:
        raise UsageError(f"--limit {args.limit}: give 1 or more")
    return TaskFilter(
        state=None if args.state is None else parse_state(args.state),
        min_progress=args.min_progress,
        max_progress=args.max_progress,
        min_cost_usd=args.min_cost,
        max_cost_usd=args.max_cost,
        limit=args.limit,
    )


class Command:
    """One run of a command: its arguments, the client, and where it prints."""

    def __init__(self, args: argparse.Namespace, tasks: TaskClient, prog: str) -> None:
        self.args = args
        self.tasks = tasks
        self.prog = prog
        self.console = Console()

    async def warn_without_worker(self, what: str) -> None:
        """Say so when nothing polls the task queue: else the task seems stuck for no reason."""
        if await self.tasks.workers() == 0:
            hint = no_worker_hint(self.tasks.settings.task_queue)
            print(f"{self.prog}: warning: {hint}; {what}", file=sys.stderr)

    async def warn_unanswered(self, task_name: str, what: str) -> None:
        """The task did not answer its status query: no worker, only one that died lately, or
        (a long task of one's own) none that loads its module."""
        queue = self.tasks.settings.task_queue
        if await self.tasks.workers() == 0:
            hint = no_worker_hint(queue)
        else:
            hint = "no worker answered the task's status query; " + no_worker_answered_hint(queue)
        if task_name != DOCUMENT_TASK:
            hint = f"{hint}; {task_module_hint(task_name)}"
        print(f"{self.prog}: warning: {hint}; {what}", file=sys.stderr)

    async def start_named(self, name: str, params: dict[str, Any]) -> int:
        """Start a long task of one's own by name; `run-task` follows it to its end."""
        args = self.args
        task_id = await self.tasks.start_task(
            name,
            params,
            task_id=args.task_id,
            new_run=args.new_run,
            budget_usd=args.budget_usd,
            budget_tokens=args.budget_tokens,
        )
        await self.warn_without_worker("the task waits until one does")
        if args.command == "start-task":
            print(task_id)
            return 0
        self.console.print(f"task {task_id} ({name}) started", soft_wrap=True, markup=False)
        return await self.watch(task_id)

    async def start(self, task: TaskInput) -> int:
        task_id = await self.tasks.start_input(task, new_run=self.args.new_run)
        await self.warn_without_worker("the task waits until one does")
        if self.args.command == "start":
            print(task_id)
            return 0
        settings = self.tasks.settings
        ui = f"http://{settings.temporal_host_port[0]}:{settings.temporal_ui_port}"
        self.console.print(
            f"task {task_id} started; watch it in the Temporal UI: {ui}",
            soft_wrap=True,
            markup=False,
        )
        return await self.watch(task_id)

    async def research(self, question: str, paths: list[str]) -> int:
        """Start the research agent (longtask/research.py); `run` waits and prints its report."""
        from longtask.research import start_research

        settings = self.tasks.settings
        handle = await start_research(
            self.tasks.temporal,
            settings,
            question,
            paths,
            task_id=self.args.task_id,
            max_turns=self.args.max_turns,
        )
        await self.warn_without_worker("the task waits until one does")
        if self.args.command == "start":
            print(handle.id)
            return 0
        outcome = await handle.result()
        if outcome.result is None:
            print(f"task {handle.id} {outcome.state.value}: {outcome.reason}", file=sys.stderr)
            return FAILED_EXIT
        print(outcome.result.report)
        print(f"{outcome.state.value}: {outcome.result.turns} turn(s), cost so far "
              f"${outcome.cost_so_far:.6f}")  # fmt: skip
        return 0

    async def watch(self, task_id: str) -> int:
        name = await self.tasks.task_name(task_id)
        what = "progress shows once a worker runs the task"
        if await self.tasks.workers() == 0:
            await self.warn_without_worker(what)
            await show_live(self.tasks.handle(task_id), self.console, name)
        else:  # a worker is listed; if it died lately, the first query says so
            unanswered = functools.partial(self.warn_unanswered, name, what)
            await show_live(self.tasks.handle(task_id), self.console, name, unanswered)
        if name != DOCUMENT_TASK:
            outcome = await self.tasks.outcome(task_id)
            print_outcome(name, outcome, self.console)
            return 0 if outcome.state is TaskState.COMPLETED else FAILED_EXIT
        result = await self.tasks.result(task_id)
        if result is None:
            self.console.print(f"task {task_id} cancelled", markup=False)
            return FAILED_EXIT
        prices = await self.tasks.prices(task_id)
        print_result(result, self.console, self.tasks.settings.report_folder(), prices)
        return 0 if result.state is TaskState.COMPLETED else FAILED_EXIT

    async def status(self) -> int:
        status, answered = await self.tasks.status_from(self.args.task_id)
        if not answered:
            name = await self.tasks.task_name(self.args.task_id)
            await self.warn_unanswered(name, "these figures come from the Redis mirror")
        if self.args.json:
            print(json.dumps(status, indent=2))
        else:
            print_status(self.args.task_id, status, self.console)
        return 0

    async def list(self) -> int:
        found = await self.tasks.list_tasks(task_filter(self.args))
        if self.args.json:
            print(json.dumps([task.model_dump(mode="json") for task in found], indent=2))
        else:
            print_task_list(found, self.console)
        return 0

    async def steer(self) -> int:
        """pause, resume, cancel: one line saying what happened."""
        args, task_id = self.args, self.args.task_id
        if args.command == "pause":
            print(f"task {task_id} {await self.tasks.pause(task_id)}")
        elif args.command == "resume":
            budget = (args.budget_usd, args.budget_tokens)
            print(await self.tasks.resume(task_id, args.checkpoint, *budget))
            await self.warn_without_worker("the new run waits until one does")
        else:
            await self.tasks.cancel(task_id)
            print(f"cancel requested for {task_id}")
        return 0

    async def checkpoints(self) -> int:
        await self.tasks.describe_status(self.args.task_id)
        for checkpoint_id in await self.tasks.list_checkpoints(self.args.task_id):
            print(checkpoint_id)
        return 0


def research_request(args: argparse.Namespace) -> tuple[str, list[str]]:
    """The research agent's question and documents, from `start research PATH... --question`."""
    paths = args.paths[1:] if args.paths[0] == "research" else args.paths
    if not args.question or args.paths[0] != "research":
        raise UsageError("the research agent takes `start research PATH... --question TEXT`")
    if not paths:
        raise UsageError("research needs documents: `start research PATH... --question TEXT`")
    if args.max_turns < 1:
        raise UsageError("--max-turns must be at least 1")
    return args.question, [str(Path(path).resolve()) for path in paths]


async def dispatch(args: argparse.Namespace, settings: Settings, prog: str) -> int:
    # Bad input is refused before any connection is attempted.
    task = None
    if args.command in ("run", "start") and (args.paths[0] == "research" or args.question):
        question, paths = research_request(args)
        command = Command(args, await TaskClient.connect(settings), prog)
        return await command.research(question, paths)
    if args.command in ("run", "start"):
        models = {kind: getattr(args, f"model_{kind}") for kind in MODEL_KINDS}
        budget = checked_budget(args.budget_usd, args.budget_tokens, settings_budget(settings))
        task = task_input(settings, args.paths, args.task_id, models, budget)
        # Warned, not refused: the worker may see files this machine does not.
        for warning in missing_paths(args.paths):
            print(f"{prog}: warning: {warning}", file=sys.stderr)
    if args.command in ("resume", "start-task", "run-task"):
        checked_budget(args.budget_usd, args.budget_tokens, TaskBudget())
    if args.command in ("start-task", "run-task"):
        params = parse_params(args.input)
        command = Command(args, await TaskClient.connect(settings), prog)
        return await command.start_named(args.name, params)
    command = Command(args, await TaskClient.connect(settings), prog)
    if task is not None:
        return await command.start(task)
    if args.command == "watch":
        return await command.watch(args.task_id)
    if args.command == "status":
        return await command.status()
    if args.command == "list":
        return await command.list()
    if args.command in ("pause", "resume", "cancel"):
        return await command.steer()
    if args.command == "checkpoints":
        return await command.checkpoints()
    raise UsageError(f"unknown command {args.command}")
