"""Retention: old files of the payload store and the report folder go, files in use stay."""

from __future__ import annotations

import asyncio
import os
import time
from pathlib import Path
from typing import Any

from longtask.payload_store import data_converter
from longtask.retention import DAY_SECONDS, prune_stores
from longtask.settings import Settings
from longtask.tooling.worker_process import WorkerProcess

THRESHOLD = 1024


def aged(path: Path, days: float) -> Path:
    """``path`` as if last modified ``days`` ago."""
    moment = time.time() - days * DAY_SECONDS
    os.utime(path, (moment, moment))
    return path


def a_file(path: Path, days: float, text: str = "x") -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return aged(path, days)


def stores(tmp_path: Path, **overrides: Any) -> Settings:
    return Settings(
        state_dir=tmp_path / "state",
        payload_dir=tmp_path / "payloads",
        report_dir=tmp_path / "reports",
        **overrides,
    )


def test_files_older_than_the_retention_go_and_the_others_stay(tmp_path: Path) -> None:
    settings = stores(tmp_path, retention_days=30)
    old_payload = a_file(settings.payload_folder / "ab" / "ab12", days=31)
    new_payload = a_file(settings.payload_folder / "cd" / "cd34", days=29)
    old_task = [a_file(settings.report_folder() / "old-task" / f"{i}.md", days=40) for i in (1, 2)]
    mixed_old = a_file(settings.report_folder() / "mixed-task" / "1.md", days=31)
    mixed_new = a_file(settings.report_folder() / "mixed-task" / "2.md", days=1)

    assert prune_stores(settings) == {"payloads": 1, "reports": 3}

    assert not old_payload.exists() and new_payload.exists()
    assert not any(path.exists() for path in old_task)
    assert not (settings.report_folder() / "old-task").exists()  # its folder went with it
    assert not mixed_old.exists() and mixed_new.exists()
    # The store's sub-folders stay for writers.
    assert (settings.payload_folder / "ab").is_dir()


def test_zero_keeps_everything_and_no_file_younger_than_a_task_deadline_goes(
    tmp_path: Path,
) -> None:
    forever = stores(tmp_path, retention_days=0)
    ancient = a_file(forever.payload_folder / "ab" / "ab12", days=3650)
    assert prune_stores(forever) == {}
    assert ancient.exists()

    # A task may run up to its deadline: a file it stored when it began is kept that long.
    long_tasks = stores(tmp_path, retention_days=1, task_deadline_seconds=10 * DAY_SECONDS)
    assert prune_stores(long_tasks) == {"payloads": 1, "reports": 0}
    in_use = a_file(long_tasks.payload_folder / "cd" / "cd34", days=5)
    assert prune_stores(long_tasks) == {"payloads": 0, "reports": 0}
    assert in_use.exists()


async def test_a_payload_named_or_read_again_counts_as_new(tmp_path: Path) -> None:
    settings = stores(tmp_path, retention_days=30)
    converter = data_converter(settings.payload_folder, THRESHOLD)
    large = {"text": "page " * 1000}
    [reference] = await converter.encode([large])
    [stored] = [p for p in settings.payload_folder.rglob("*") if p.is_file()]

    # A new task stores the same bytes: the one file is now in use again.
    aged(stored, days=31)
    await converter.encode([large])
    assert prune_stores(settings)["payloads"] == 0

    # A replay reads it: in use again too.
    aged(stored, days=31)
    assert await converter.decode([reference], [dict]) == [large]
    assert prune_stores(settings)["payloads"] == 0
    assert stored.exists()


async def test_a_worker_prunes_when_it_starts(settings: Settings, tmp_path: Path) -> None:
    old_report = a_file(tmp_path / "reports" / "old-task" / "000000-a.md", days=3)
    new_report = a_file(tmp_path / "reports" / "new-task" / "000000-a.md", days=0)
    worker = WorkerProcess(
        settings,
        tmp_path / "worker.log",
        extra_env={"LTM_REPORT_DIR": str(tmp_path / "reports"), "LTM_RETENTION_DAYS": "2"},
    )
    try:
        for _ in range(600):  # up to a minute on a loaded machine
            if not old_report.exists():
                break
            await asyncio.sleep(0.1)
        assert not old_report.exists(), (tmp_path / "worker.log").read_text()
        assert new_report.exists()
    finally:
        worker.stop()
    assert "retention 2 days: deleted" in (tmp_path / "worker.log").read_text()
