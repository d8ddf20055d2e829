"""Retention of the payload store and the report folder: files unused for long are deleted.

Payload files are touched each time a history names or reads them (longtask/payload_store.py),
report files when written, so a file's age is the time since a task last needed it. A file
is deleted only when it is older than the retention and than a task's deadline: no running
task can still need it, since a task ends at its deadline.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import time
from collections.abc import Iterable
from pathlib import Path

from longtask.settings import Settings

DAY_SECONDS = 24 * 3600
log = logging.getLogger("retention")


def keep_seconds(settings: Settings) -> float | None:
    """How long an unused file is kept; None when retention is off (LTM_RETENTION_DAYS=0)."""
    if settings.retention_days == 0:
        return None
    return max(settings.retention_days * DAY_SECONDS, settings.task_deadline_seconds)


def _files(folder: Path) -> Iterable[Path]:
    for root, _dirs, names in os.walk(folder):
        for name in names:
            yield Path(root) / name


def prune_folder(folder: Path, cutoff: float, empty_folders: bool = False) -> int:
    """Delete files of ``folder`` last modified before ``cutoff`` (epoch seconds) and, with
    ``empty_folders``, the folders left empty; returns how many files went."""
    if not folder.is_dir():
        return 0
    removed = 0
    for path in list(_files(folder)):
        with contextlib.suppress(FileNotFoundError):  # another worker pruned it first
            if path.stat().st_mtime < cutoff:
                path.unlink()
                removed += 1
    if not empty_folders:
        return removed
    for root, _dirs, _names in sorted(os.walk(folder), key=lambda w: -len(w[0])):
        if Path(root) != folder:
            with contextlib.suppress(OSError):  # not empty, or already gone
                Path(root).rmdir()
    return removed


def prune_stores(settings: Settings, now: float | None = None) -> dict[str, int]:
    """Apply the retention to the payload store and the report folder: files deleted, by folder."""
    kept = keep_seconds(settings)
    if kept is None:
        return {}
    cutoff = (time.time() if now is None else now) - kept
    return {
        # The store's 256 sub-folders stay: a writer may be about to put a file in one.
        "payloads": prune_folder(settings.payload_folder, cutoff),
        # A task's report folder goes with its last report.
        "reports": prune_folder(settings.report_folder(), cutoff, empty_folders=True),
    }


# A worker prunes when it starts and then this often; deleting a day-old file a few hours late
# costs nothing.
PRUNE_EVERY_SECONDS = 6 * 3600


async def keep_pruning(settings: Settings, stop: asyncio.Event) -> None:
    """Prune now and then every PRUNE_EVERY_SECONDS until ``stop`` is set; errors are logged,
    never raised: a full disk or a folder gone must not stop a worker."""
    if keep_seconds(settings) is None:
        return
    while not stop.is_set():
        try:
            removed = await asyncio.to_thread(prune_stores, settings)
            log.info("retention %g days: deleted %s", settings.retention_days, removed)
        except OSError as error:
            log.warning("retention: pruning failed: %s", error)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), PRUNE_EVERY_SECONDS)
