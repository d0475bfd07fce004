"""A transport that keeps its device open: reopen with back-off after every unplug.

Layer: transport (policy on top of one concrete transport). The owner runs :meth:`run` in its
TaskGroup; drivers call read/write as on any transport. While the device is away they fail
fast with DeviceGone ("not connected") instead of hanging, so a status poll reports
"offline" at once and a drawer kick is refused rather than queued for later. A loss is seen
when a read or write raises DeviceGone, so the owner keeps some poll going (a status query).

Each attempt builds a fresh inner transport from ``factory``: a replugged USB printer has a new
bus address, a restarted TCP printer needs a new socket. ``factory`` must therefore be cheap
and side-effect free (all three transports open nothing in their constructor).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
from collections.abc import Callable

from kassad.drivers.errors import DeviceGone, TransportError
from kassad.drivers.transport.base import Transport, deadline

_LOGGER = logging.getLogger(__name__)

CONNECTED = "connected"
DISCONNECTED = "disconnected"


class ReconnectingTransport(Transport):
    """Transport facade over ``factory()``; :meth:`run` does the opening and reopening."""

    def __init__(
        self,
        factory: Callable[[], Transport],
        *,
        open_timeout: float = 5.0,
        backoff_min: float = 0.1,
        backoff_max: float = 5.0,
        on_state: Callable[[str, str], None] | None = None,
        name: str | None = None,
    ) -> None:
        if not 0 < backoff_min <= backoff_max:
            msg = f"need 0 < backoff_min <= backoff_max, got {backoff_min}, {backoff_max}"
            raise ValueError(msg)
        self._factory = factory
        self.name = name if name is not None else factory().name
        self.open_timeout = open_timeout
        self.backoff_min, self.backoff_max = backoff_min, backoff_max
        #: Called as on_state("connected", inner name) / on_state("disconnected", reason),
        #: once per change of state, from run()'s task.
        self.on_state = on_state
        #: Set while an inner transport is open and usable.
        self.connected = asyncio.Event()
        self._inner: Transport | None = None
        self._state: str | None = None
        self._lost = asyncio.Event()  # the open inner transport failed, or close() was called
        self._reason = ""
        self._stop = asyncio.Event()
        self._idle = asyncio.Event()  # run() is not running
        self._idle.set()

    @property
    def is_open(self) -> bool:
        return self.connected.is_set()

    async def run(self) -> None:
        """Keep the device open until cancelled or :meth:`close`d."""
        self._idle.clear()
        current: Transport | None = None
        delay = self.backoff_min
        try:
            while not self._stop.is_set():
                current = self._factory()
                try:
                    await current.open(self.open_timeout)
                except TransportError as exc:
                    await current.close()
                    current = None
                    self._report(DISCONNECTED, str(exc))
                    await self._pause(self._jitter(delay))
                    delay = min(delay * 2, self.backoff_max)
                    continue
                if self._stop.is_set():  # close() came while we were opening
                    break
                delay = self.backoff_min
                self._lost.clear()
                self._inner = current
                self.connected.set()
                self._report(CONNECTED, current.name)
                await self._lost.wait()  # _drop() already detached it from read/write
                self._report(DISCONNECTED, self._reason)
                await current.close()
                current = None
                # A device that accepts and drops at once must not make us spin.
                await self._pause(self._jitter(self.backoff_min))
        finally:
            self._inner = None
            self.connected.clear()
            if current is not None:  # cancelled while opening or while connected
                await current.close()
            self._idle.set()

    async def wait_connected(self, timeout: float) -> None:  # noqa: ASYNC109
        """Return once connected; TransportTimeout if not within ``timeout`` seconds."""
        async with deadline(timeout, f"{self.name}: connect"):
            await self.connected.wait()

    async def open(self, timeout: float) -> None:  # noqa: ASYNC109
        """Wait for run() to connect (it does the opening)."""
        await self.wait_connected(timeout)

    async def close(self) -> None:
        """Stop reconnecting and release the device; final (run() returns)."""
        self._stop.set()
        self._drop(self._inner, "closed by its owner")
        await self._idle.wait()

    async def write(self, data: bytes, timeout: float) -> None:  # noqa: ASYNC109
        inner = self._current()
        try:
            await inner.write(data, timeout)
        except DeviceGone as exc:
            self._drop(inner, str(exc))
            raise

    async def flush(self, timeout: float) -> None:  # noqa: ASYNC109
        inner = self._current()
        try:
            await inner.flush(timeout)
        except DeviceGone as exc:
            self._drop(inner, str(exc))
            raise

    async def read(self, max_bytes: int, timeout: float) -> bytes:  # noqa: ASYNC109
        inner = self._current()
        try:
            return await inner.read(max_bytes, timeout)
        except DeviceGone as exc:
            self._drop(inner, str(exc))
            raise

    def _current(self) -> Transport:
        if self._inner is None:
            msg = f"{self.name}: not connected"
            raise DeviceGone(msg)
        return self._inner

    def _drop(self, inner: Transport | None, reason: str) -> None:
        # Only the failure of the transport that is current counts: a late error from one
        # already replaced must not tear down its successor.
        if inner is None or inner is not self._inner:
            return
        self._inner = None
        self.connected.clear()
        self._reason = reason
        self._lost.set()

    @staticmethod
    def _jitter(delay: float) -> float:
        # Spread retries so several devices (or registers) do not retry in lockstep.
        return delay * (0.5 + random.random() / 2)  # noqa: S311 - not for security

    async def _pause(self, seconds: float) -> None:
        with contextlib.suppress(TimeoutError):  # only our own timer: a cancel still raises
            async with asyncio.timeout(seconds):
                await self._stop.wait()

    def _report(self, state: str, detail: str) -> None:
        if state == self._state:
            _LOGGER.debug("%s: still %s: %s", self.name, state, detail)
            return
        self._state = state
        _LOGGER.info("%s: %s: %s", self.name, state, detail)
        if self.on_state is not None:
            self.on_state(state, detail)
