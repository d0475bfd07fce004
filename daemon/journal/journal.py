"""Async face of the journal: every call runs on the journal's own thread, never on the loop."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import ParamSpec, TypeVar

from .store import JournalError, JournalFile

P = ParamSpec("P")
T = TypeVar("T")

_LOGGER = logging.getLogger(__name__)

#: A write the journal refused (disk full, I/O error) is tried again after this long, doubling
#: up to :data:`RETRY_MAX`: the disk gets its space back, the write goes through within it.
RETRY_MIN = 0.05
RETRY_MAX = 1.0


class Journal:
    """Owns a :class:`JournalFile` and the one thread that may touch it.

    SQLite commits with ``synchronous=FULL`` wait for fsync; doing them here keeps the event
    loop (MQTT keepalives, other commands' replies) running meanwhile.
    """

    def __init__(self, file: JournalFile, executor: ThreadPoolExecutor) -> None:
        self.file = file
        self._executor = executor

    @classmethod
    async def open(cls, path: Path, store: str, register: str, boot_id: str) -> Journal:
        executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="kassad-journal")
        loop = asyncio.get_running_loop()
        try:
            file = await loop.run_in_executor(executor, JournalFile, path, store, register,
                                              boot_id)
        except BaseException:
            executor.shutdown(wait=False)
            raise
        return cls(file, executor)

    @property
    def epoch(self) -> int:
        return self.file.epoch

    @property
    def last_seq(self) -> int:
        return self.file.last_seq

    async def run(self, fn: Callable[P, T], *args: P.args, **kwargs: P.kwargs) -> T:
        """Run ``fn`` on the journal thread. A cancelled caller does not stop a started write:
        SQLite finishes or rolls back the transaction by itself."""
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._executor, lambda: fn(*args, **kwargs))

    async def close(self) -> None:
        await self.run(self.file.close)
        self._executor.shutdown(wait=True)


async def until_written(write: Callable[[], Awaitable[T]], what: str) -> T:
    """Call ``write`` until the journal takes it: for what has already happened and must be
    journaled before anyone hears of it (a device's event, a command's result after its
    effect, a consumer's ack). While the disk is full or failing it waits, trying again with a
    backoff; the first failure and the recovery are logged. A cancelled caller (a stop) leaves
    it unwritten: a command stays ``executing`` and is indeterminate at the next start."""
    delay = RETRY_MIN
    failed = False
    while True:
        try:
            result = await write()
        except JournalError as e:
            if not failed:
                _LOGGER.error("%s not journaled, waiting for the journal to take it: %s",
                              what, e)
            failed = True
            await asyncio.sleep(delay)
            delay = min(delay * 2, RETRY_MAX)
            continue
        if failed:
            _LOGGER.warning("%s journaled after all: the journal takes writes again", what)
        return result
