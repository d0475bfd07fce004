"""An asyncio TCP proxy that injects network faults between an MQTT client and the broker.

    proxy = TcpProxy(broker.host, broker.port)
    await proxy.start()          # listens on 127.0.0.1:proxy.port
    proxy.cut()                  # RST every connection, refuse new ones (listener closed)
    proxy.reset()                # RST every connection, accept new ones at once
    proxy.restore()              # listen again on the same port, forward again
    proxy.stall()                # keep connections open, forward nothing either way
    await proxy.close()

``cut()`` closes the listening socket, so new connections get ECONNREFUSED. Accepting and
then resetting them would be a worse fault model: aiomqtt 2.5.1 ignores a disconnect that
comes before CONNACK, and ``Client.__aenter__`` then waits for its full ``timeout``
(10 s by default) before it raises.

``stall()`` holds the bytes it has read (at most one 64 KiB chunk per direction) and stops
reading, so TCP back-pressure builds up as on a black-holed link. ``restore()`` delivers
the held bytes; nothing is lost. EOF is also held back while stalled.

The listener is driven with ``loop.add_reader`` so that ``cut()``, ``restore()`` and
``stall()`` are plain synchronous calls.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import struct
from dataclasses import dataclass, field

LISTEN_HOST = "127.0.0.1"
CHUNK = 65536
CLOSE_TIMEOUT = 1.0


def _reset(writer: asyncio.StreamWriter) -> None:
    """Close with RST (SO_LINGER 0) instead of FIN."""
    sock = writer.get_extra_info("socket")
    if sock is not None:
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    writer.transport.abort()


@dataclass(eq=False)
class _Link:
    client: asyncio.StreamWriter
    upstream: asyncio.StreamWriter | None = None
    pumps: list[asyncio.Task[None]] = field(default_factory=list)
    was_reset: bool = False

    def reset(self) -> None:
        self.was_reset = True
        for writer in (self.client, self.upstream):
            if writer is not None:
                _reset(writer)
        for pump in self.pumps:
            pump.cancel()

    def close_now(self) -> None:
        """Start closing both sides (FIN after flushing) unless they were reset. Synchronous,
        so a cancellation arriving later cannot leave a transport open."""
        for writer in (self.client, self.upstream):
            if writer is not None and not writer.transport.is_closing():
                writer.close()

    async def wait_closed(self) -> None:
        for writer in (self.client, self.upstream):
            if writer is None:
                continue
            try:
                async with asyncio.timeout(CLOSE_TIMEOUT):
                    await writer.wait_closed()
            except (TimeoutError, OSError):
                writer.transport.abort()


class TcpProxy:
    """Forward 127.0.0.1:<port> to target_host:target_port, with fault controls."""

    def __init__(self, target_host: str, target_port: int) -> None:
        self.target_host = target_host
        self.target_port = target_port
        self.connections_accepted = 0
        self._port: int | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._listener: socket.socket | None = None
        self._flowing = asyncio.Event()
        self._flowing.set()
        self._cut = False
        self._closed = False
        self._links: set[_Link] = set()
        self._tasks: set[asyncio.Task[None]] = set()

    # -- state -------------------------------------------------------------------------------

    @property
    def port(self) -> int:
        if self._port is None:
            msg = "TcpProxy not started"
            raise RuntimeError(msg)
        return self._port

    @property
    def host(self) -> str:
        return LISTEN_HOST

    @property
    def active_connections(self) -> int:
        return len(self._links)

    @property
    def is_cut(self) -> bool:
        return self._cut

    @property
    def is_stalled(self) -> bool:
        return not self._flowing.is_set()

    # -- lifecycle ---------------------------------------------------------------------------

    async def start(self) -> None:
        if self._loop is not None:
            msg = "TcpProxy already started"
            raise RuntimeError(msg)
        self._loop = asyncio.get_running_loop()
        self._listen(0)

    async def close(self) -> None:
        """Stop listening, close every connection and wait for all tasks."""
        self._closed = True
        self._unlisten()
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    async def __aenter__(self) -> TcpProxy:
        await self.start()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

    # -- faults ------------------------------------------------------------------------------

    def cut(self) -> None:
        """Reset all current connections and refuse new ones until restore()."""
        self._cut = True
        self._unlisten()
        for link in list(self._links):
            link.reset()

    def reset(self) -> None:
        """Reset (RST) every current connection; new ones are accepted as before."""
        for link in list(self._links):
            link.reset()

    def stall(self) -> None:
        """Keep connections open but forward no bytes (either way) until restore()."""
        self._flowing.clear()

    def restore(self) -> None:
        """Undo cut() and stall(): listen again on the same port and forward again."""
        self._flowing.set()
        if self._cut and not self._closed:
            self._cut = False
            self._listen(self.port)

    # -- internals ---------------------------------------------------------------------------

    def _listen(self, port: int) -> None:
        assert self._loop is not None
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.bind((LISTEN_HOST, port))
            sock.listen(64)
            sock.setblocking(False)
            self._loop.add_reader(sock.fileno(), self._accept_ready, sock)
        except BaseException:
            sock.close()
            raise
        self._listener = sock
        self._port = sock.getsockname()[1]

    def _unlisten(self) -> None:
        sock, self._listener = self._listener, None
        if sock is not None and self._loop is not None:
            self._loop.remove_reader(sock.fileno())
            sock.close()

    def _accept_ready(self, sock: socket.socket) -> None:
        assert self._loop is not None
        while True:
            try:
                conn, _ = sock.accept()
            except (BlockingIOError, InterruptedError):
                return
            except ConnectionAbortedError:
                continue
            conn.setblocking(False)
            self.connections_accepted += 1
            task = self._loop.create_task(self._handle(conn))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    async def _handle(self, conn: socket.socket) -> None:
        try:
            c_reader, c_writer = await asyncio.open_connection(sock=conn)
        except BaseException:
            conn.close()
            raise
        link = _Link(c_writer)
        self._links.add(link)
        try:
            if self._cut:
                link.reset()
                return
            try:
                u_reader, u_writer = await asyncio.open_connection(
                    self.target_host, self.target_port
                )
            except OSError:
                link.reset()  # target down: the client sees a reset
                return
            link.upstream = u_writer
            if link.was_reset:  # cut() while we were connecting upstream
                _reset(u_writer)
                return
            link.pumps = [
                asyncio.create_task(self._pump(c_reader, u_writer)),
                asyncio.create_task(self._pump(u_reader, c_writer)),
            ]
            await asyncio.wait(link.pumps, return_when=asyncio.FIRST_COMPLETED)
        finally:
            self._links.discard(link)
            for pump in link.pumps:
                pump.cancel()
            link.close_now()
            await asyncio.gather(*link.pumps, return_exceptions=True)
            await link.wait_closed()

    async def _pump(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        with contextlib.suppress(OSError):
            while True:
                data = await reader.read(CHUNK)
                await self._flowing.wait()
                if not data:
                    return
                writer.write(data)
                await writer.drain()
