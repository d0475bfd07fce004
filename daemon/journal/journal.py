"""Async face of the journal: every call runs on the journal's own thread, never on the loop."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import ParamSpec, TypeVar

from .store import JournalFile

P = ParamSpec("P")
T = TypeVar("T")


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
