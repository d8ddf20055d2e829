"""A worker's workflows on a thread with an event loop of their own.

temporalio polls, decodes and completes workflow tasks on the event loop of the worker that runs
them. A worker busy with LLM calls keeps that loop full (every streamed chunk is parsed there),
and its tasks' workflow tasks then wait their turn: measured here, 0.2 to 2.5 s each with 64
streams in flight at zero latency. Every progress update a batch makes, every checkpoint on its
way to Redis and every status query waits that long. On a loop of their own they wait only for
their share of the interpreter.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
from collections.abc import Callable

from temporalio.worker import Worker

log = logging.getLogger(__name__)

# How long the thread gets to start its worker (it connects nothing: the client is shared).
START_SECONDS = 30.0


class WorkflowThread:
    """Runs the worker ``build`` returns on a thread of its own until ``stop``."""

    def __init__(self, build: Callable[[], Worker]) -> None:
        self._build = build
        self._ready = threading.Event()
        self._failure: BaseException | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop: asyncio.Event | None = None
        self._thread = threading.Thread(target=self._main, name="workflows", daemon=True)

    async def __aenter__(self) -> WorkflowThread:
        self._thread.start()
        started = await asyncio.to_thread(self._ready.wait, START_SECONDS)
        if self._failure is not None:
            raise RuntimeError(f"the workflows' worker did not start: {self._failure}")
        if not started:
            raise RuntimeError(f"the workflows' worker did not start within {START_SECONDS} s")
        return self

    async def __aexit__(self, *_: object) -> None:
        """Shut the workflows' worker down (its workflow tasks in flight complete first)."""
        if self._loop is not None and self._stop is not None:
            with contextlib.suppress(RuntimeError):  # the loop already ended
                self._loop.call_soon_threadsafe(self._stop.set)
        await asyncio.to_thread(self._thread.join)

    def _main(self) -> None:
        try:
            asyncio.run(self._serve())
        except BaseException as error:  # said in __aenter__, or logged once running
            self._failure = error
            if self._ready.is_set():
                log.exception("the workflows' worker stopped on an error")
            self._ready.set()

    async def _serve(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._stop = asyncio.Event()
        async with self._build():
            self._ready.set()
            await self._stop.wait()
