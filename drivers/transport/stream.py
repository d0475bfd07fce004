"""What the TCP and serial transports share: asyncio streams under deadlines.

Once open, a stream that ends (EOF), resets, or raises any OSError means the device is gone
(DeviceGone); each operation has its own deadline (TransportTimeout). Subclasses only open
the streams and say how to give up on a close that does not finish.
"""

from __future__ import annotations

import asyncio

from kassad.drivers.errors import DeviceGone, TransportError
from kassad.drivers.transport.base import Transport, deadline


class StreamTransport(Transport):
    def __init__(self, name: str, close_timeout: float) -> None:
        self.name = name
        #: How long close() waits for the stream to close (unsent bytes, a pending flush).
        self.close_timeout = close_timeout
        self._reader: asyncio.StreamReader | None = None
        self._writer: asyncio.StreamWriter | None = None

    @property
    def is_open(self) -> bool:
        return self._writer is not None and not self._writer.is_closing()

    def _opened(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._reader, self._writer = reader, writer

    async def close(self) -> None:
        writer, self._writer, self._reader = self._writer, None, None
        if writer is None:
            return
        writer.close()  # a no-op when the stream already closed itself (unplug)
        try:
            async with asyncio.timeout(self.close_timeout):
                await writer.wait_closed()
        except (OSError, TimeoutError):
            self._give_up(writer)

    def _give_up(self, writer: asyncio.StreamWriter) -> None:
        """A close that did not finish in time (peer gone, flow control holding a flush)."""

    async def write(self, data: bytes, timeout: float) -> None:  # noqa: ASYNC109
        reader, writer = self._streams()
        # After the device closed, asyncio would buffer (TCP) or drop (serial) the bytes.
        if reader.at_eof() or writer.is_closing():
            raise self._gone(reader.exception())
        try:
            async with deadline(timeout, f"{self.name}: write"):
                writer.write(data)
                await writer.drain()
        except TransportError:  # our own deadline: a TimeoutError, and so an OSError too
            raise
        except OSError as exc:  # reset, broken pipe, SerialException, keepalive ETIMEDOUT
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

    async def flush(self, timeout: float) -> None:  # noqa: ASYNC109
        _, writer = self._streams()
        try:
            async with deadline(timeout, f"{self.name}: flush"):
                await writer.drain()
        except TransportError:
            raise
        except OSError as exc:
            raise self._gone(exc) from exc

    def _streams(self) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        if self._reader is None or self._writer is None:
            raise DeviceGone(f"{self.name}: not open")
        return self._reader, self._writer

    def _gone(self, exc: BaseException | None) -> DeviceGone:
        reason = "closed by the device" if exc is None else repr(exc)
        return DeviceGone(f"{self.name}: {reason}")
