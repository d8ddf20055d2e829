"""`python -m longtask.cli`: the `ltm` command without its installed script."""

from longtask.cli import entry_point

entry_point()
