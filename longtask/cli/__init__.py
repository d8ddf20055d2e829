"""The `ltm` command. Heavy modules (Temporal, Rich, pydantic) are imported only once a command
that needs them runs, so help, version and completion answer at once."""

from __future__ import annotations

from longtask.cli.parser import parser


def main(argv: list[str] | None = None, prog: str = "ltm") -> int:
    args = parser(prog).parse_args(argv)
    if args.command == "completion":
        from longtask.cli.completion import script

        print(script(parser(prog), args.shell), end="")
        return 0
    from longtask.cli.commands import run_command

    return run_command(args, prog)


def entry_point() -> None:
    """The installed `ltm` script: leaves without interpreter teardown (see process_exit)."""
    code = main()
    from longtask.process_exit import exit_now

    exit_now(code)
