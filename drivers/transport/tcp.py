"""TCP byte transport (ESC/POS printers on :9100, serial-over-LAN adaptors).

Layer: transport. Bytes in, bytes out, each operation under its own deadline; no framing.
asyncio streams instead of python-escpos's blocking socket (60 s timeouts, silent data loss
when the printer is switched off mid-job: device-protocols.md §2.7 #253).

Error mapping: refused / unreachable / unresolvable on open -> DeviceNotFound; EOF, reset,
broken pipe, or any other socket error once open -> DeviceGone; deadline -> TransportTimeout.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket

from kassad.drivers.errors import DeviceGone, DeviceNotFound, TransportError
from kassad.drivers.transport.base import Transport, deadline


class TcpTransport(Transport):
    """One TCP connection to ``host:port``; a new instance per connection attempt is fine."""

    def __init__(self, host: str, port: int, *, close_timeout: float = 1.0) -> None:
        self.host = host
        self.port = port
        self.name = f"tcp:{host}:{port}"
        #: How long close() lets unsent bytes drain before it aborts the connection.
        self.close_timeout = close_timeout
        self._reader: asyncio.StreamReader | None = None
        self._writer: asyncio.StreamWriter | None = None

    @property
    def is_open(self) -> bool:
        return self._writer is not None and not self._writer.is_closing()

    async def open(self, timeout: float) -> None:  # noqa: ASYNC109
        if self.is_open:
            return
        await self.close()  # a connection the peer dropped
        try:
            async with deadline(timeout, f"{self.name}: connect"):
                reader, writer = await asyncio.open_connection(self.host, self.port)
        except TransportError:
            raise
        except OSError as exc:  # refused, unreachable, gaierror, "Multiple exceptions"
            msg = f"{self.name}: cannot connect: {exc}"
            raise DeviceNotFound(msg) from exc
        sock: socket.socket | None = writer.get_extra_info("socket")
        if sock is not None:
            _tune(sock)
        self._reader, self._writer = reader, writer

    async def close(self) -> None:
        writer, self._writer, self._reader = self._writer, None, None
        if writer is None:
            return
        writer.close()
        try:
            async with asyncio.timeout(self.close_timeout):
                await writer.wait_closed()
        except (OSError, TimeoutError):
            # Peer gone or not reading: drop whatever is still buffered.
            writer.transport.abort()

    async def write(self, data: bytes, timeout: float) -> None:  # noqa: ASYNC109
        reader, writer = self._streams()
        # After the peer closed, asyncio would buffer writes until a RST arrives: fail now.
        if reader.at_eof() or writer.is_closing():
            msg = f"{self.name}: connection closed by the device"
            raise DeviceGone(msg)
        try:
            async with deadline(timeout, f"{self.name}: write"):
                writer.write(data)
                await writer.drain()
        except TransportError:
            raise
        except OSError as exc:  # ConnectionResetError, BrokenPipeError, ETIMEDOUT (keepalive)
            msg = f"{self.name}: write failed: {exc!r}"
            raise DeviceGone(msg) from exc

    async def read(self, max_bytes: int, timeout: float) -> bytes:  # noqa: ASYNC109
        reader, _ = self._streams()
        try:
            async with deadline(timeout, f"{self.name}: read"):
                data = await reader.read(max_bytes)
        except TransportError:
            raise
        except OSError as exc:
            msg = f"{self.name}: read failed: {exc!r}"
            raise DeviceGone(msg) from exc
        if not data:
            msg = f"{self.name}: connection closed by the device"
            raise DeviceGone(msg)
        return data

    def _streams(self) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        if self._reader is None or self._writer is None:
            msg = f"{self.name}: not open"
            raise DeviceGone(msg)
        return self._reader, self._writer


def _tune(sock: socket.socket) -> None:
    # asyncio already sets TCP_NODELAY; we say it here because small commands (a drawer kick,
    # a status query) must leave at once. Keepalive notices a printer that was switched off
    # while idle (no FIN, no RST) within ~25 s instead of the kernel's 2 h default.
    with contextlib.suppress(OSError):
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
        if hasattr(socket, "TCP_KEEPIDLE"):  # Linux
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPIDLE, 10)
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPINTVL, 5)
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPCNT, 3)
