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

from kassad.drivers.errors import DeviceNotFound, TransportError
from kassad.drivers.transport.base import deadline
from kassad.drivers.transport.stream import StreamTransport


class TcpTransport(StreamTransport):
    """One TCP connection to ``host:port``; a new instance per connection attempt is fine."""

    def __init__(self, host: str, port: int, *, close_timeout: float = 1.0) -> None:
        super().__init__(f"tcp:{host}:{port}", close_timeout)
        self.host = host
        self.port = port

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
        # Let drain() wait for the kernel too: with TCP_NOTSENT_LOWAT the socket only turns
        # writable when little is left unsent, so flush() means "nearly on the wire".
        writer.transport.set_write_buffer_limits(high=0)
        self._opened(reader, writer)

    def _give_up(self, writer: asyncio.StreamWriter) -> None:
        writer.transport.abort()  # peer gone or not reading: drop what is still buffered


def _tune(sock: socket.socket) -> None:
    # asyncio already sets TCP_NODELAY; we say it here because small commands (a drawer kick,
    # a status query) must leave at once. Keepalive notices a printer that was switched off
    # while idle (no FIN, no RST) within ~25 s instead of the kernel's 2 h default.
    with contextlib.suppress(OSError):
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        if hasattr(socket, "TCP_NOTSENT_LOWAT"):
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NOTSENT_LOWAT, 512)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
        if hasattr(socket, "TCP_KEEPIDLE"):  # Linux
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPIDLE, 10)
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPINTVL, 5)
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPCNT, 3)
