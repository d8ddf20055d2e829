"""Leaving a process that used a Temporal client."""

from __future__ import annotations

import os
import sys
from typing import NoReturn


def exit_now(code: int) -> NoReturn:
    """Exit without interpreter teardown.

    The Temporal client's native runtime keeps threads that can touch the interpreter while it
    finalizes, which aborts the process now and then ("PyGILState_Release ... finalizing",
    temporalio/sdk-python#300). All work is done by now, so flush and leave.
    """
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)
