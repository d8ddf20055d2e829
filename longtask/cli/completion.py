"""Shell completion scripts generated from the parser, so they never fall behind it."""

from __future__ import annotations

import argparse

from longtask.cli.parser import subcommands

BASH = """\
# {prog} completion for bash; for zsh, `{prog} completion zsh`.
_{name}_complete() {{
    local cur=${{COMP_WORDS[COMP_CWORD]}} options=""
    if [ "$COMP_CWORD" -eq 1 ]; then
        COMPREPLY=($(compgen -W "{commands} --help --version" -- "$cur"))
        return
    fi
    case "${{COMP_WORDS[1]}}" in
{cases}
    esac
    if [[ "$cur" == -* ]]; then
        COMPREPLY=($(compgen -W "$options" -- "$cur"))
    else
        COMPREPLY=($(compgen -f -- "$cur"))
    fi
}}
complete -o default -F _{name}_complete {prog}
"""

ZSH_HEAD = "autoload -U +X bashcompinit && bashcompinit\n"


def options_of(command: argparse.ArgumentParser) -> list[str]:
    return [
        option
        for action in command._actions
        for option in action.option_strings
        if option.startswith("--")
    ]


def script(root: argparse.ArgumentParser, shell: str) -> str:
    """The completion script for ``shell`` (bash, or zsh through its bash emulation)."""
    commands = subcommands(root)
    cases = "\n".join(
        f'        {name}) options="{" ".join(options_of(command))}" ;;'
        for name, command in commands.items()
    )
    prog = root.prog
    name = "".join(c if c.isalnum() else "_" for c in prog)
    text = BASH.format(prog=prog, name=name, commands=" ".join(commands), cases=cases)
    return ZSH_HEAD + text if shell == "zsh" else text
