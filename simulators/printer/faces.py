"""The printer simulator's three faces: a TCP listener, a pty, a fake USB device.

Each face turns host connections into Links (a parser plus a way to send bytes back) and hands
received bytes to the device, on the event loop. They also implement "unplug": the host must
see what it sees with real hardware.

* TCP (a :9100 network interface): unplug closes the listener and resets every connection
  (SO_LINGER 0: the client reads ECONNRESET, or EOF if the reset raced its read); replug listens
  again on the same port (SO_REUSEADDR, so lingering old sockets do not block the bind).
* pty (a serial port): os.openpty + tty.setraw on the master, as pyserial expects. The face keeps
  its own slave descriptor open while plugged, else the master reads EIO whenever no client has
  the port open. Unplug closes both: the client's next read fails (pyserial raises
  SerialException "device reports readiness to read but returned no data"). Replug makes a new
  pty; its path may differ.
* USB: a FakeUsbDevice from kassad.simulators.usb_backend plugged into the test's backend. Its
  on_write runs in the pyusb caller's thread, so bytes cross to the loop by call_soon_threadsafe;
  replies go back through feed_in (the bulk IN endpoint). Unplug removes it from the backend
  (pyusb calls on old handles fail with ENODEV); replug plugs the same device back in, at a
  new bus address (the host must find() it again).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
import struct
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from kassad.simulators.common import RawPty
from kassad.simulators.printer.parser import EscPosParser

if TYPE_CHECKING:
    from kassad.simulators.usb_backend import FakeUsbBackend, FakeUsbDevice

_LOGGER = logging.getLogger(__name__)

#: Epson TM-T20III, printer class (device-protocols.md §5).
DEFAULT_USB_IDENTITY: dict[str, Any] = {
    "vendor_id": 0x04B8, "product_id": 0x0E28, "serial_number": "KASSADSIM0001",
    "manufacturer": "EPSON", "product": "TM-T20III (kassad simulator)",
}
_READ_SIZE = 65536


class Link:
    """One host connection: its own parser, and how to send it bytes."""

    def __init__(self, name: str, send: Callable[[bytes], None]) -> None:
        self.name = name
        self.closed = False
        self.parser = EscPosParser()
        self._send = send

    def send(self, data: bytes) -> None:
        if not self.closed:
            self._send(data)

    def __repr__(self) -> str:
        return f"<Link {self.name}{' closed' if self.closed else ''}>"


Attach = Callable[[Link], EscPosParser]
Receive = Callable[[Link, bytes], None]
Detach = Callable[[Link], None]


class _Face:
    def __init__(self, attach: Attach, receive: Receive, detach: Detach) -> None:
        self._attach, self._receive, self._detach = attach, receive, detach

    def _link(self, name: str, send: Callable[[bytes], None]) -> Link:
        link = Link(name, send)
        link.parser = self._attach(link)
        return link

    def _drop(self, link: Link) -> None:
        if not link.closed:
            link.closed = True
            self._detach(link)


class TcpFace(_Face):
    def __init__(self, attach: Attach, receive: Receive, detach: Detach) -> None:
        super().__init__(attach, receive, detach)
        self.host = "127.0.0.1"
        self.port: int | None = None
        self._server: asyncio.Server | None = None
        self._writers: dict[Link, asyncio.StreamWriter] = {}
        self._tasks: set[asyncio.Task[Any]] = set()

    async def start(self, host: str, port: int) -> int:
        if self._server is not None:
            raise RuntimeError(f"already listening on {self.host}:{self.port}")
        self._server = await asyncio.start_server(self._serve, host, port, reuse_address=True)
        self.host, self.port = host, int(self._server.sockets[0].getsockname()[1])
        return self.port

    async def restart(self) -> None:
        if self.port is not None and self._server is None:
            await self.start(self.host, self.port)

    async def stop(self) -> None:
        """Close the listener and reset every connection; wait for their handlers to end."""
        if self._server is not None:
            self._server.close()
            self._server = None
        for link, writer in list(self._writers.items()):
            self._drop(link)
            sock = writer.get_extra_info("socket")
            if sock is not None:
                with contextlib.suppress(OSError):  # RST instead of FIN, like a dead printer
                    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            writer.transport.abort()
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        peer = writer.get_extra_info("peername")
        link = self._link(f"tcp:{peer}", writer.write)
        self._writers[link] = writer
        try:
            while not link.closed and (data := await reader.read(_READ_SIZE)):
                self._receive(link, data)
        except ConnectionError:
            pass
        except Exception:
            _LOGGER.exception("printer simulator: failure serving %s", link.name)
        finally:
            self._writers.pop(link, None)
            self._drop(link)
            writer.transport.abort()
            self._tasks.discard(task)


class PtyFace(_Face):
    def __init__(self, attach: Attach, receive: Receive, detach: Detach) -> None:
        super().__init__(attach, receive, detach)
        self.path: str | None = None
        self._wanted = False
        self._pty: RawPty | None = None
        self._link_: Link | None = None

    def open(self) -> str:
        if self.path is not None:
            return self.path
        pty = RawPty(self._readable, self._read_failed, _READ_SIZE)
        master = pty.master
        self.path, self._pty, self._wanted = pty.path, pty, True

        def send(data: bytes) -> None:
            try:
                written = os.write(master, data)
            except BlockingIOError:
                written = 0
            except OSError:
                return
            if written < len(data):  # nobody reads the port: a printer drops status bytes too
                _LOGGER.warning("pty full, %d reply bytes dropped", len(data) - written)

        self._link_ = self._link(f"pty:{self.path}", send)
        return self.path

    def _readable(self, data: bytes) -> None:
        assert self._link_ is not None
        self._receive(self._link_, data)

    def _read_failed(self, error: OSError) -> None:
        _LOGGER.warning("pty master read failed; closing the serial face", exc_info=error)
        self.close()

    def close(self) -> None:
        if self._pty is None:
            return
        self._pty.close()
        if self._link_ is not None:
            self._drop(self._link_)
        self._pty, self._link_, self.path = None, None, None

    def reopen(self) -> str | None:
        return self.open() if self._wanted and self.path is None else self.path


class UsbFace(_Face):
    def __init__(self, attach: Attach, receive: Receive, detach: Detach) -> None:
        super().__init__(attach, receive, detach)
        self.device: FakeUsbDevice | None = None
        self._backend: FakeUsbBackend | None = None
        self._link_: Link | None = None

    def plug(self, backend: FakeUsbBackend, identity: dict[str, Any]) -> FakeUsbDevice:
        if self.device is not None:
            raise RuntimeError("the simulated printer is already plugged into a USB backend")
        # Imported here: the USB face is optional and the backend module pulls in pyusb.
        from kassad.simulators.usb_backend import FakeUsbDevice

        loop = asyncio.get_running_loop()
        ident = {**DEFAULT_USB_IDENTITY, **identity}

        def on_write(data: bytes) -> None:  # pyusb's thread, not the loop's
            with contextlib.suppress(RuntimeError):  # loop closed: the printer is off
                loop.call_soon_threadsafe(self._from_host, bytes(data))

        self.device = FakeUsbDevice(ident.pop("vendor_id"), ident.pop("product_id"),
                                    on_write=on_write, **ident)
        self._backend = backend
        self._connect()
        return self.device

    def _connect(self) -> None:
        assert self.device is not None and self._backend is not None
        device = self.device
        self._link_ = self._link(f"usb:{device.vendor_id:04x}:{device.product_id:04x}",
                                 device.feed_in)
        self._backend.plug(device)  # a fresh bus address each time, as after a real replug

    def _from_host(self, data: bytes) -> None:
        if self._link_ is not None:  # else it was written just before an unplug: lost
            self._receive(self._link_, data)

    def unplug(self) -> None:
        if self._link_ is None or self.device is None or self._backend is None:
            return
        self._backend.unplug(self.device)
        self._drop(self._link_)
        self._link_ = None

    def replug(self) -> None:
        if self.device is not None and self._link_ is None:
            self._connect()

    def close(self) -> None:
        self.unplug()
        self.device = None
