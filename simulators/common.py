"""What the simulators share: waking waiters on every change, and a raw pty read on the loop.

:class:`Changes` backs the simulators' ``wait_for(predicate, timeout)``: their verbs are
synchronous, so :meth:`Changes.changed` schedules one small task that notifies an
asyncio.Condition, and waiters re-check their predicate then.

:class:`RawPty` is a serial port as the simulators open it (recipes.md §3): ``os.openpty``,
``tty.setraw`` on the master (one termios for the pair: no echo, no CR/LF mangling), the master
non-blocking and read on the event loop. The owner keeps the slave descriptor open while
plugged, else the master reads EIO whenever no client has the port open; :meth:`RawPty.close`
closes both, so the client's next read fails as with a pulled cable.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import tty
from collections.abc import Callable


def open_raw_pty() -> tuple[int, int, str]:
    """A new pty, its master in raw mode and non-blocking: ``(master, slave, slave_path)``."""
    master, slave = os.openpty()
    tty.setraw(master)  # one termios for the pair: no echo, no CR/LF mangling
    os.set_blocking(master, False)
    return master, slave, os.ttyname(slave)


class RawPty:
    """A raw pty whose master is read on the running loop, ``read_size`` bytes at a time.

    ``on_data`` gets each non-empty read; ``on_error`` the OSError of a failed read (EIO once
    nobody holds the slave open, …); it usually logs it and closes the pty.
    """

    def __init__(self, on_data: Callable[[bytes], None], on_error: Callable[[OSError], None],
                 read_size: int) -> None:
        self.master, self.slave, self.path = open_raw_pty()
        self._on_data, self._on_error, self._read_size = on_data, on_error, read_size
        self.closed = False
        asyncio.get_running_loop().add_reader(self.master, self._readable)

    def _readable(self) -> None:
        try:
            data = os.read(self.master, self._read_size)
        except BlockingIOError:
            return
        except OSError as error:
            self._on_error(error)
            return
        if data:
            self._on_data(data)

    def close(self) -> None:
        """Stop reading and close both ends (idempotent)."""
        if self.closed:
            return
        self.closed = True
        with contextlib.suppress(RuntimeError):  # the loop may already be closed
            asyncio.get_running_loop().remove_reader(self.master)
        for fd in (self.master, self.slave):
            with contextlib.suppress(OSError):
                os.close(fd)


class Changes:
    """Wakes ``wait_for`` waiters whenever the owner calls :meth:`changed`.

    ``name`` starts the TimeoutError's message (``"printer simulator"``).
    """

    def __init__(self, name: str) -> None:
        self.name = name
        self._cond = asyncio.Condition()
        self._notify_task: asyncio.Task[None] | None = None

    def changed(self) -> None:
        """Wake wait_for(). Verbs are synchronous, so the notification runs as a small task."""
        if self._notify_task is None:
            try:
                loop = asyncio.get_running_loop()
            except RuntimeError:
                return  # no loop, so nobody can be waiting
            self._notify_task = loop.create_task(self._notify())

    async def _notify(self) -> None:
        async with self._cond:
            self._notify_task = None  # later changes need a new notification
            self._cond.notify_all()

    async def wait_for(self, predicate: Callable[[], bool], timeout: float,  # noqa: ASYNC109
                       describe: Callable[[], str]) -> None:
        """Return once ``predicate()`` holds, re-checked on every :meth:`changed`; at the
        timeout raise TimeoutError naming the simulator and ``describe()`` (its state)."""
        try:
            async with asyncio.timeout(timeout), self._cond:
                await self._cond.wait_for(predicate)
        except TimeoutError:
            msg = f"{self.name}: condition not met within {timeout} s; {describe()}"
            raise TimeoutError(msg) from None

    async def close(self) -> None:
        """Let a notification still under way finish."""
        if self._notify_task is not None:
            await self._notify_task
