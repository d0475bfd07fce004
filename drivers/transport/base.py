"""One small interface for every byte transport (TCP :9100, serial / pty, USB bulk).

Every operation takes a deadline in seconds. ``read`` returns at least one byte, or raises
:class:`TransportTimeout` when nothing came in time (the device may simply have nothing to
say) and :class:`DeviceGone` when the device vanished. ``write`` returns once the bytes are
handed to the device (the kernel, the socket, the USB bulk OUT endpoint).
"""

from __future__ import annotations

import asyncio
from abc import ABC, abstractmethod
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from kassad.drivers.errors import TransportTimeout


class Transport(ABC):
    #: For logs and events: "tcp:127.0.0.1:9100", "serial:/dev/ttyUSB0", "usb:04b8:0e28:SN".
    name: str

    @property
    @abstractmethod
    def is_open(self) -> bool: ...

    @abstractmethod
    async def open(self, timeout: float) -> None:  # noqa: ASYNC109
        """Open the device; DeviceNotFound if it is not there, TransportTimeout if slow."""

    @abstractmethod
    async def close(self) -> None:
        """Release the device; never raises (a vanished device is already closed)."""

    @abstractmethod
    async def write(self, data: bytes, timeout: float) -> None:  # noqa: ASYNC109
        """Send all of ``data``; DeviceGone / TransportTimeout on failure."""

    @abstractmethod
    async def read(self, max_bytes: int, timeout: float) -> bytes:  # noqa: ASYNC109
        """At least one byte, at most ``max_bytes``; TransportTimeout if none in time."""

    async def flush(self, timeout: float) -> None:  # noqa: ASYNC109, B027
        """Wait until what was written has left for the device (not sitting in a kernel
        buffer), so that the next write — a drawer kick — is not queued behind it. Transports
        whose write already returns then (USB bulk OUT) keep this no-op."""


@asynccontextmanager
async def deadline(timeout: float, what: str) -> AsyncIterator[None]:  # noqa: ASYNC109
    """``asyncio.timeout`` that raises :class:`TransportTimeout` naming ``what`` on expiry.

    Only the expiry of this deadline is converted: a TimeoutError raised by the body itself
    (a TransportTimeout, or ETIMEDOUT from a dead TCP peer) passes through unchanged.
    """
    timer = asyncio.timeout(timeout)
    try:
        async with timer:
            yield
    except TimeoutError as exc:
        if not timer.expired():
            raise
        msg = f"{what}: nothing within {timeout:g} s"
        raise TransportTimeout(msg) from exc
