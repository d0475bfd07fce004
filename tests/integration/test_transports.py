"""The byte transports against real loopback sockets, real ptys and the fake pyusb backend.

No sleeps as synchronisation: every wait is on an event, a queue or a condition, bounded by
``asyncio.timeout``.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
import threading
import time
import tty
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager

import pytest

from kassad.drivers.errors import DeviceGone, DeviceNotFound, TransportError, TransportTimeout
from kassad.drivers.transport.reconnect import ReconnectingTransport
from kassad.drivers.transport.serial import SerialTransport
from kassad.drivers.transport.tcp import TcpTransport
from kassad.drivers.transport.usb import UsbTransport
from kassad.simulators.usb_backend import FakeUsbBackend, FakeUsbDevice

HOST = "127.0.0.1"
VID, PID = 0x04B8, 0x0E28
KICK = b"\x10\x14\x01\x00\x05"  # DLE DC4 1 0 5: real-time drawer kick


@pytest.fixture(autouse=True)
def no_leaked_usb_threads() -> Iterator[None]:
    yield
    left = [t.name for t in threading.enumerate() if t.name.startswith("usb:")]
    assert not left, f"USB executor threads still running: {left}"


# ---- TCP -----------------------------------------------------------------------------------


Streams = tuple[asyncio.StreamReader, asyncio.StreamWriter]


class Peer:
    """An asyncio server on 127.0.0.1 that hands each accepted connection to the test."""

    def __init__(self) -> None:
        self.accepted: asyncio.Queue[Streams] = asyncio.Queue()
        self.writers: list[asyncio.StreamWriter] = []
        self.server: asyncio.Server | None = None

    async def start(self, port: int = 0) -> int:
        self.server = await asyncio.start_server(self._accept, HOST, port)
        bound: int = self.server.sockets[0].getsockname()[1]
        return bound

    async def stop(self) -> None:
        assert self.server is not None
        self.server.close()
        for writer in self.writers:  # Server.close() leaves accepted connections open
            writer.close()
        await self.server.wait_closed()
        self.writers.clear()

    async def next(self) -> Streams:
        async with asyncio.timeout(2):
            return await self.accepted.get()

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.writers.append(writer)
        await self.accepted.put((reader, writer))


@asynccontextmanager
async def tcp_pair() -> AsyncIterator[tuple[TcpTransport, *Streams]]:
    peer = Peer()
    port = await peer.start()
    transport = TcpTransport(HOST, port)
    await transport.open(1.0)
    reader, writer = await peer.next()
    try:
        yield transport, reader, writer
    finally:
        await transport.close()
        await peer.stop()


async def test_tcp_write_and_read() -> None:
    async with tcp_pair() as (transport, reader, writer):
        assert transport.is_open
        await transport.write(b"\x1b@hello" + KICK, 1.0)
        async with asyncio.timeout(2):
            assert await reader.readexactly(12) == b"\x1b@hello" + KICK
        writer.write(b"\x12\x00\xff")
        assert await transport.read(100, 1.0) == b"\x12\x00\xff"
        sock = transport._writer.get_extra_info("socket") if transport._writer else None
        assert sock is not None and sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY)


async def test_tcp_read_timeout() -> None:
    async with tcp_pair() as (transport, _, _):
        with pytest.raises(TransportTimeout) as caught:
            await transport.read(10, 0.05)
        assert isinstance(caught.value, TimeoutError)
        assert transport.is_open  # a quiet device is not a gone device


async def test_tcp_server_closes_gives_device_gone() -> None:
    async with tcp_pair() as (transport, _, writer):
        writer.close()
        with pytest.raises(DeviceGone):
            await transport.read(10, 1.0)
        with pytest.raises(DeviceGone):
            await transport.write(b"x", 1.0)


async def test_tcp_refused_gives_device_not_found() -> None:
    with socket.socket() as probe:  # a port that nobody listens on
        probe.bind((HOST, 0))
        port = probe.getsockname()[1]
    transport = TcpTransport(HOST, port)
    with pytest.raises(DeviceNotFound):
        await transport.open(1.0)
    assert not transport.is_open
    await transport.close()  # closing a never-opened transport is fine


# ---- serial over a pty ---------------------------------------------------------------------


@pytest.fixture
def pty() -> Iterator[tuple[int, str]]:
    master, slave = os.openpty()
    tty.setraw(master)  # one termios for the pair: no echo, no CR/LF mangling
    os.set_blocking(master, False)
    path = os.ttyname(slave)
    os.close(slave)  # pyserial opens its own descriptor on the path
    yield master, path
    with contextlib.suppress(OSError):  # the test may have closed it to "unplug" the port
        os.close(master)


async def read_master(master: int, count: int) -> bytes:
    loop = asyncio.get_running_loop()
    got = bytearray()
    readable = asyncio.Event()
    loop.add_reader(master, readable.set)
    try:
        async with asyncio.timeout(2):
            while len(got) < count:
                await readable.wait()
                readable.clear()
                with contextlib.suppress(BlockingIOError):
                    got += os.read(master, 4096)
    finally:
        loop.remove_reader(master)
    return bytes(got)


async def test_serial_bytes_unchanged_both_ways(pty: tuple[int, str]) -> None:
    master, path = pty
    transport = SerialTransport(path, 19200)
    await transport.open(1.0)
    try:
        every_byte = bytes(range(256))
        await transport.write(every_byte, 1.0)
        assert await read_master(master, 256) == every_byte
        os.write(master, every_byte)
        got = b""
        while len(got) < 256:
            got += await transport.read(256 - len(got), 1.0)
        assert got == every_byte
    finally:
        await transport.close()


async def test_serial_read_timeout(pty: tuple[int, str]) -> None:
    _, path = pty
    transport = SerialTransport(path)
    await transport.open(1.0)
    try:
        with pytest.raises(TransportTimeout):
            await transport.read(10, 0.05)
        assert transport.is_open
    finally:
        await transport.close()


async def test_serial_master_closed_gives_device_gone(pty: tuple[int, str]) -> None:
    master, path = pty
    transport = SerialTransport(path)
    await transport.open(1.0)
    os.close(master)
    started = time.monotonic()
    with pytest.raises(DeviceGone):
        await transport.read(10, 2.0)
    assert time.monotonic() - started < 1.0
    with pytest.raises(DeviceGone):
        await transport.write(b"x", 1.0)
    assert not transport.is_open
    await transport.close()  # never raises


async def test_serial_no_such_port() -> None:
    with pytest.raises(DeviceNotFound):
        await SerialTransport("/dev/kassad-no-such-tty").open(1.0)


# ---- USB over the fake backend -------------------------------------------------------------


@pytest.fixture
def backend() -> FakeUsbBackend:
    return FakeUsbBackend()


@pytest.fixture
def printer(backend: FakeUsbBackend) -> FakeUsbDevice:
    device = FakeUsbDevice(VID, PID, serial_number="A1", manufacturer="EPSON", product="TM-T20")
    backend.plug(device)
    return device


@asynccontextmanager
async def opened(transport: UsbTransport) -> AsyncIterator[UsbTransport]:
    await transport.open(1.0)
    try:
        yield transport
    finally:
        await transport.close()


async def wait_read_pending(device: FakeUsbDevice) -> None:
    assert await asyncio.to_thread(device.wait_read_pending, 2.0)


async def test_usb_find_by_vid_pid_write_read(
    backend: FakeUsbBackend, printer: FakeUsbDevice
) -> None:
    replies: list[bytes] = []
    printer.on_write = replies.append
    async with opened(UsbTransport(VID, PID, backend=backend)) as transport:
        assert transport.is_open
        await transport.write(b"\x1b@" + KICK, 1.0)
        assert printer.writes == [b"\x1b@" + KICK]
        assert replies == [b"\x1b@" + KICK]  # on_write saw the same transfer
        printer.feed_in(b"\x12\x16")
        assert await transport.read(1, 1.0) == b"\x12"
        assert await transport.read(10, 1.0) == b"\x16"  # the rest of the same transfer


async def test_usb_on_write_reply_reaches_read(
    backend: FakeUsbBackend, printer: FakeUsbDevice
) -> None:
    printer.on_write = lambda data: printer.feed_in(b"\x16" if data == b"\x10\x04\x01" else b"")
    async with opened(UsbTransport(VID, PID, backend=backend)) as transport:
        await transport.write(b"\x10\x04\x01", 1.0)  # DLE EOT 1: printer status
        assert await transport.read(1, 1.0) == b"\x16"


async def test_usb_find_by_serial_number(backend: FakeUsbBackend) -> None:
    first = FakeUsbDevice(VID, PID, serial_number="A1")
    second = FakeUsbDevice(VID, PID, serial_number="B2")
    backend.plug(first)
    backend.plug(second)
    transport = UsbTransport(VID, PID, serial_number="B2", backend=backend)
    assert transport.name == "usb:04b8:0e28:B2"
    async with opened(transport):
        await transport.write(b"to B2", 1.0)
    assert second.writes == [b"to B2"] and first.writes == []
    with pytest.raises(DeviceNotFound):
        await UsbTransport(VID, PID, serial_number="C3", backend=backend).open(1.0)


async def test_usb_kernel_driver_detached_then_reattached(
    backend: FakeUsbBackend, printer: FakeUsbDevice
) -> None:
    assert printer.kernel_driver_active
    async with opened(UsbTransport(VID, PID, backend=backend)):
        assert not printer.kernel_driver_active
        assert printer.claimed == {0}
    assert printer.kernel_driver_active
    assert (printer.detach_count, printer.attach_count) == (1, 1)
    assert printer.claimed == set()


async def test_usb_no_kernel_driver_is_left_alone(backend: FakeUsbBackend) -> None:
    device = FakeUsbDevice(VID, PID, kernel_driver_active=False)
    backend.plug(device)
    async with opened(UsbTransport(VID, PID, backend=backend)):
        pass
    assert (device.detach_count, device.attach_count) == (0, 0)
    assert not device.kernel_driver_active


async def test_usb_read_timeout(backend: FakeUsbBackend, printer: FakeUsbDevice) -> None:
    async with opened(UsbTransport(VID, PID, backend=backend)) as transport:
        with pytest.raises(TransportTimeout):
            await transport.read(10, 0.05)
        assert transport.is_open
        printer.feed_in(b"late")  # the abandoned transfer, if still pending, must not eat it
        assert await transport.read(10, 1.0) == b"late"


async def test_usb_cancelled_read_loses_no_bytes(
    backend: FakeUsbBackend, printer: FakeUsbDevice
) -> None:
    async with opened(UsbTransport(VID, PID, backend=backend)) as transport:
        pending = asyncio.create_task(transport.read(10, 2.0))
        await wait_read_pending(printer)
        pending.cancel()
        with pytest.raises(asyncio.CancelledError):
            await pending
        printer.feed_in(b"\x14")  # lands in the transfer the cancelled caller started
        assert await transport.read(10, 1.0) == b"\x14"


async def test_usb_unplug_during_blocked_read(
    backend: FakeUsbBackend, printer: FakeUsbDevice
) -> None:
    async with opened(UsbTransport(VID, PID, backend=backend)) as transport:
        pending = asyncio.create_task(transport.read(10, 5.0))
        await wait_read_pending(printer)
        started = time.monotonic()
        backend.unplug(printer)
        with pytest.raises(DeviceGone):
            async with asyncio.timeout(1):
                await pending
        assert time.monotonic() - started < 0.5
        assert not transport.is_open
        with pytest.raises(DeviceGone):
            await transport.write(b"x", 1.0)


async def test_usb_write_not_delayed_by_pending_read(
    backend: FakeUsbBackend, printer: FakeUsbDevice
) -> None:
    async with opened(UsbTransport(VID, PID, backend=backend)) as transport:
        pending = asyncio.create_task(transport.read(10, 2.0))
        await wait_read_pending(printer)
        started = time.monotonic()
        await transport.write(KICK, 1.0)
        assert time.monotonic() - started < 0.5  # not behind the 2 s read
        assert not pending.done()
        assert printer.writes == [KICK]
        printer.feed_in(b"\x00")
        assert await pending == b"\x00"


async def test_usb_wrong_vid_gives_device_not_found(
    backend: FakeUsbBackend, printer: FakeUsbDevice
) -> None:
    transport = UsbTransport(0x0519, PID, backend=backend)
    with pytest.raises(DeviceNotFound):
        await transport.open(1.0)
    assert not transport.is_open
    with pytest.raises(DeviceGone):
        await transport.write(b"x", 1.0)


async def test_usb_busy_names_the_other_driver(
    backend: FakeUsbBackend, printer: FakeUsbDevice
) -> None:
    printer.claimed_elsewhere = True
    with pytest.raises(TransportError, match="usblp") as caught:
        await UsbTransport(VID, PID, backend=backend).open(1.0)
    assert not isinstance(caught.value, DeviceGone | DeviceNotFound)
    assert printer.kernel_driver_active  # the failed open gave usblp its printer back


# ---- ReconnectingTransport -----------------------------------------------------------------


class States:
    """on_state callback that queues (state, detail) for the test to await."""

    def __init__(self) -> None:
        self.queue: asyncio.Queue[tuple[str, str]] = asyncio.Queue()

    def __call__(self, state: str, detail: str) -> None:
        self.queue.put_nowait((state, detail))

    async def next(self) -> str:
        async with asyncio.timeout(2):
            state, _ = await self.queue.get()
        return state


async def test_reconnect_over_tcp() -> None:
    peer = Peer()
    port = await peer.start()
    states = States()
    auto = ReconnectingTransport(
        lambda: TcpTransport(HOST, port),
        open_timeout=1.0,
        backoff_min=0.01,
        backoff_max=0.05,
        on_state=states,
    )
    async with asyncio.TaskGroup() as tg:
        tg.create_task(auto.run(), name="reconnect tcp")
        assert await states.next() == "connected"
        await auto.wait_connected(1.0)
        await peer.next()

        await peer.stop()  # printer switched off
        with pytest.raises(DeviceGone):
            await auto.read(10, 1.0)
        assert await states.next() == "disconnected"
        with pytest.raises(DeviceGone, match="not connected"):
            await auto.write(b"x", 1.0)  # immediately, no hang

        await peer.start(port)  # back on the same port
        assert await states.next() == "connected"
        server_reader, _ = await peer.next()
        await auto.write(b"again", 1.0)
        async with asyncio.timeout(2):
            assert await server_reader.readexactly(5) == b"again"
        await auto.close()
    assert states.queue.get_nowait()[0] == "disconnected"
    assert states.queue.empty()  # one report per change, none for the refused retries
    await peer.stop()


async def test_reconnect_over_usb(backend: FakeUsbBackend, printer: FakeUsbDevice) -> None:
    states = States()
    auto = ReconnectingTransport(
        lambda: UsbTransport(VID, PID, serial_number="A1", backend=backend),
        open_timeout=1.0,
        backoff_min=0.01,
        backoff_max=0.05,
        on_state=states,
    )
    async with asyncio.TaskGroup() as tg:
        tg.create_task(auto.run(), name="reconnect usb")
        assert await states.next() == "connected"
        first_address = printer.address

        pending = asyncio.create_task(auto.read(10, 5.0))
        await wait_read_pending(printer)
        backend.unplug(printer)
        with pytest.raises(DeviceGone):
            await pending
        assert await states.next() == "disconnected"
        assert not auto.connected.is_set()

        backend.plug(printer)
        assert await states.next() == "connected"
        assert printer.address != first_address
        await auto.write(KICK, 1.0)
        assert printer.writes == [KICK]
        await auto.close()
    assert printer.kernel_driver_active  # reattached on the final close


async def test_reconnect_cancel_while_down_releases_everything(backend: FakeUsbBackend) -> None:
    states = States()
    auto = ReconnectingTransport(
        lambda: UsbTransport(VID, PID, backend=backend),
        backoff_min=0.01,
        backoff_max=0.02,
        on_state=states,
    )
    runner = asyncio.create_task(auto.run())
    assert await states.next() == "disconnected"
    with pytest.raises(TransportTimeout):
        await auto.wait_connected(0.05)
    runner.cancel()
    with pytest.raises(asyncio.CancelledError):
        await runner
