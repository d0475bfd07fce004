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
import termios
from typing import Any

import serial
import serial_asyncio_fast

from kassad.drivers.errors import DeviceNotFound, TransportError
from kassad.drivers.transport.base import deadline
from kassad.drivers.transport.stream import StreamTransport

# errno of a failed open that means "no such port" (rather than busy or misconfigured).
_ABSENT = frozenset({errno.ENOENT, errno.ENODEV, errno.ENXIO})
_LOCKED = frozenset({errno.EAGAIN, errno.EWOULDBLOCK, errno.EBUSY})


class SerialTransport(StreamTransport):
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
        super().__init__(f"serial:{path}", close_timeout)
        self.path = path
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
        # Seconds one byte takes on the wire: start bit, data bits, parity, stop bits.
        bits = 1 + bytesize + (parity != serial.PARITY_NONE) + stopbits
        self._byte_time = bits / baudrate
        self._wire_free_at = 0.0

    async def write(self, data: bytes, timeout: float) -> None:  # noqa: ASYNC109
        await super().write(data, timeout)
        now = asyncio.get_running_loop().time()
        self._wire_free_at = max(now, self._wire_free_at) + len(data) * self._byte_time

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
        self._opened(reader, writer)

    async def flush(self, timeout: float) -> None:  # noqa: ASYNC109
        _, writer = self._streams()
        fd = _fileno(writer)
        loop = asyncio.get_running_loop()
        try:
            async with deadline(timeout, f"{self.name}: flush"):
                await writer.drain()
                if fd is not None:
                    # tcdrain blocks until the UART has sent the bytes: in a thread.
                    await loop.run_in_executor(None, termios.tcdrain, fd)
                # A pty (or a USB-serial adaptor with a deep FIFO) says "sent" at once: wait
                # for the wire time at the configured speed too, so the queue stays short.
                await asyncio.sleep(max(0.0, self._wire_free_at - loop.time()))
        except TransportError:
            raise
        except (OSError, termios.error) as exc:
            raise self._gone(exc) from exc


def _fileno(writer: asyncio.StreamWriter) -> int | None:
    port = getattr(writer.transport, "serial", None)
    fd = getattr(port, "fd", None)
    return fd if isinstance(fd, int) else None
