"""The Temporal runtime every process connects with: its core's log lines go through Python's
logging, never straight to stdout.

By default the core client prints its own warnings (a retried RESOURCE_EXHAUSTED, a poll that
failed) on stdout. `ltm`'s stdout is its answer, which scripts read: `ltm status` once printed
such a line before the task's status. Forwarded, they go where the process's logging goes:
stderr for `ltm` (Python's last-resort handler) and the worker's log.
"""

from __future__ import annotations

import functools
import logging

from temporalio.runtime import (
    LogForwardingConfig,
    LoggingConfig,
    Runtime,
    TelemetryConfig,
    TelemetryFilter,
)

CORE_LOGGER = "temporalio.core"


@functools.cache
def temporal_runtime() -> Runtime:
    """One runtime per process (each holds its own threads), made on first use."""
    forwarded = LoggingConfig(
        # The SDK's default levels: the core's warnings, other crates' errors.
        filter=TelemetryFilter(core_level="WARN", other_level="ERROR"),
        forwarding=LogForwardingConfig(logger=logging.getLogger(CORE_LOGGER)),
    )
    return Runtime(telemetry=TelemetryConfig(logging=forwarded))
