"""Finished reports as files: the durable output of a large task, one file per document.

A task of ten thousand documents keeps its reports here rather than in its workflow state
or checkpoints. Workers and the client of one deployment share the folder, like the payload
store.
"""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

from longtask.models import DocumentRef, report_file_of


class ReportStore:
    def __init__(self, directory: Path) -> None:
        self.directory = directory

    def path_of(self, relative: str) -> Path:
        return self.directory / relative

    def write(self, relative: str, text: str) -> None:
        path = self.path_of(relative)
        path.parent.mkdir(parents=True, exist_ok=True)
        partial = path.with_suffix(f".{os.getpid()}.tmp")
        partial.write_text(text, encoding="utf-8")
        # A rename is atomic: a reader sees the whole report or none.
        partial.replace(path)

    async def save(self, task_id: str, document: DocumentRef, text: str) -> str:
        relative = report_file_of(task_id, document)
        await asyncio.to_thread(self.write, relative, text)
        return relative
