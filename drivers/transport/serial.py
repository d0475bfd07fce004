"""Serial byte transport (RS-232 printers, USB-serial adaptors, ptys in tests and the simulator).

Layer: transport. pyserial-asyncio-fast gives asyncio streams over the tty: reads are driven by
the event loop (add_reader), and it already does the blocking pyserial open, flush and close in
the default executor, so nothing here blocks the loop. python-escpos's ``Serial`` is not used: it
reads and writes synchronously with no cancellation (device-protocols.md §2.7, §2.8).

Unplug (recipes.md §3): when the tty goes away pyserial raises ``SerialException`` from the
loop's read callback even if nobody is reading; the transport closes itself and every later
read / drain re-raises it -> DeviceGone. Our own close() gives the reader a plain EOF.
"""

from __future__ import annotations

import asyncio
import errno
from typing import Any

import serial
import serial_asyncio_fast

from kassad.drivers.errors import DeviceGone, DeviceNotFound, TransportError
from kassad.drivers.transport.base import Transport, deadline

# errno of a failed open that means "no such port" (rather than busy or misconfigured).
_ABSENT = frozenset({errno.ENOENT, errno.ENODEV, errno.ENXIO})
_LOCKED = frozenset({errno.EAGAIN, errno.EWOULDBLOCK, errno.EBUSY})


class SerialTransport(Transport):
    """A tty opened with pyserial settings; ``path`` may be any pyserial URL or a pty slave."""

    def __init__(
        self,
        path: str,
        baudrate: int = 9600,
        *,
        bytesize: int = serial.EIGHTBITS,
        parity: str = serial.PARITY_NONE,
        stopbits: float = serial.STOPBITS_ONE,
        xonxoff: bool = False,
        rtscts: bool = False,
        dsrdtr: bool = False,
        exclusive: bool = True,
        close_timeout: float = 1.0,
    ) -> None:
        self.path = path
        self.name = f"serial:{path}"
        #: How long close() waits for pyserial's flush + close in the executor.
        self.close_timeout = close_timeout
        self._settings: dict[str, Any] = {
            "baudrate": baudrate,
            "bytesize": bytesize,
            "parity": parity,
            "stopbits": stopbits,
            "xonxoff": xonxoff,
            "rtscts": rtscts,
            "dsrdtr": dsrdtr,
            # flock() the port so a second daemon (or a stray `screen`) fails loudly.
            "exclusive": exclusive,
        }
        self._reader: asyncio.StreamReader | None = None
        self._writer: asyncio.StreamWriter | None = None

    @property
    def is_open(self) -> bool:
        return self._writer is not None and not self._writer.is_closing()

    async def open(self, timeout: float) -> None:  # noqa: ASYNC109
        if self.is_open:
            return
        await self.close()  # a port that went away
        try:
            # If the deadline fires while the executor is still opening, the orphaned
            # serial.Serial is closed by its io.IOBase finalizer.
            async with deadline(timeout, f"{self.name}: open"):
                reader, writer = await serial_asyncio_fast.open_serial_connection(
                    url=self.path, **self._settings
                )
        except TransportError:
            raise
        except serial.SerialException as exc:
            if exc.errno in _ABSENT:
                msg = f"{self.name}: no such port: {exc}"
                raise DeviceNotFound(msg) from exc
            if exc.errno in _LOCKED:
                msg = f"{self.name}: port in use by another process: {exc}"
                raise TransportError(msg) from exc
            msg = f"{self.name}: cannot open: {exc}"
            raise TransportError(msg) from exc
        except OSError as exc:
            msg = f"{self.name}: cannot open: {exc!r}"
            raise TransportError(msg) from exc
        self._reader, self._writer = reader, writer

    async def close(self) -> None:
        writer, self._writer, self._reader = self._writer, None, None
        if writer is None:
            return
        writer.close()  # no-op when the port already closed itself after an unplug
        try:
            async with asyncio.timeout(self.close_timeout):
                await writer.wait_closed()
        except (OSError, TimeoutError):
            pass  # the unplug error again, or a flush stuck on flow control: nothing to do

    async def write(self, data: bytes, timeout: float) -> None:  # noqa: ASYNC109
        reader, writer = self._streams()
        # A closed serial transport drops writes silently: fail before that can happen.
        if writer.is_closing():
            raise self._gone(reader.exception())
        try:
            async with deadline(timeout, f"{self.name}: write"):
                writer.write(data)
                await writer.drain()
        except TransportError:
            raise
        except OSError as exc:  # SerialException is an OSError; so is "Connection lost"
            raise self._gone(exc) from exc

    async def read(self, max_bytes: int, timeout: float) -> bytes:  # noqa: ASYNC109
        reader, _ = self._streams()
        try:
            async with deadline(timeout, f"{self.name}: read"):
                data = await reader.read(max_bytes)
        except TransportError:
            raise
        except OSError as exc:
            raise self._gone(exc) from exc
        if not data:
            raise self._gone(None)
        return data

    def _streams(self) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        if self._reader is None or self._writer is None:
            msg = f"{self.name}: not open"
            raise DeviceGone(msg)
        return self._reader, self._writer

    def _gone(self, exc: BaseException | None) -> DeviceGone:
        reason = "port closed" if exc is None else str(exc)
        return DeviceGone(f"{self.name}: {reason}")
