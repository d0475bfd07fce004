"""The standalone serial drawer driver against its simulator over a real pty.

The driver runs as in the daemon: SerialDrawer.run() over a ReconnectingTransport whose factory
builds a SerialTransport on the simulator's *current* pty path, so a replug (a new pty) is found
again. Nothing waits on a sleep: readings are awaited as they are reported, the simulator is
awaited on its condition, and "after a kick" is made certain by a query sent after it (both go
the same way down the same pty, so the box sees the kick first).

One property cannot be shown deterministically over a pty: whether a late reply has reached the
driver before its next query (the kernel pushes pty bytes from a worker). The discarding of
stale bytes is therefore checked over a small in-memory port at the end.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest

from kassad.drivers.drawer.serial_drawer import SerialDrawer, SerialDrawerProtocol
from kassad.drivers.errors import DeviceGone, ProtocolError, TransportTimeout
from kassad.drivers.transport.base import Transport, deadline
from kassad.drivers.transport.reconnect import ReconnectingTransport
from kassad.drivers.transport.serial import SerialTransport
from kassad.simulators.serial_drawer import SerialDrawerSimulator

pytestmark = pytest.mark.timeout(10)

#: The generic box: BEL opens, ESC u 0 asks, bit 0 set = open.
GENERIC = SerialDrawerProtocol()
#: A box speaking ESC/POS: ESC p 0 25 250 opens, DLE EOT 1 asks, bit 2 clear = open.
ESCPOS_LIKE = SerialDrawerProtocol(open_command=b"\x1b\x70\x00\x19\xfa",
                                   status_command=b"\x10\x04\x01",
                                   open_mask=0x04, open_value=0x00)
UNPLUGGED = "/dev/kassad-serial-drawer-unplugged"

Reading = tuple[bool | None, str]


class Readings:
    """The driver's on_sensor: every reading kept; wait() re-checks on each new one."""

    def __init__(self) -> None:
        self.items: list[Reading] = []
        self._new = asyncio.Event()

    def __call__(self, sensor: bool | None, reason: str) -> None:
        self.items.append((sensor, reason))
        new, self._new = self._new, asyncio.Event()
        new.set()

    def mark(self) -> int:
        return len(self.items)

    async def wait(self, predicate: Callable[[bool | None, str], bool], *, after: int = 0,
                   timeout: float = 2.0) -> Reading:  # noqa: ASYNC109
        """The first reading from index ``after`` on that satisfies ``predicate``."""
        index = after
        try:
            async with asyncio.timeout(timeout):
                while True:
                    while index < len(self.items):
                        if predicate(*self.items[index]):
                            return self.items[index]
                        index += 1
                    await self._new.wait()
        except TimeoutError:
            raise AssertionError(f"no such reading; got {self.items[after:][-10:]}") from None

    async def poll(self, value: bool | None, *, after: int = 0) -> Reading:
        return await self.wait(lambda s, why: s is value and why == "poll", after=after)

    def since(self, mark: int) -> list[Reading]:
        return self.items[mark:]


@contextlib.asynccontextmanager
async def running(sim: SerialDrawerSimulator, protocol: SerialDrawerProtocol = GENERIC, *,
                  poll_interval: float = 0.01, reply_timeout: float = 0.1,
                  ) -> AsyncIterator[tuple[SerialDrawer, Readings, list[tuple[str, str]]]]:
    sim.open_pty()
    readings = Readings()
    states: list[tuple[str, str]] = []

    def factory() -> Transport:
        # Asked on every (re)connect attempt: after a replug the box is on a new pty.
        return SerialTransport(sim.pty_path or UNPLUGGED, 9600)

    transport = ReconnectingTransport(factory, open_timeout=1.0, backoff_min=0.01,
                                      backoff_max=0.05, name="serial-drawer",
                                      on_state=lambda state, detail: states.append((state, detail)))
    drawer = SerialDrawer(transport, protocol, poll_interval=poll_interval,
                          reply_timeout=reply_timeout, write_timeout=1.0, on_sensor=readings)
    async with asyncio.TaskGroup() as group:
        task = group.create_task(drawer.run(), name="serial drawer")
        try:
            yield drawer, readings, states
        finally:
            task.cancel()


# ---- kicks and the sensor ------------------------------------------------------------------


@pytest.mark.parametrize(("protocol", "other_bits"), [(GENERIC, 0xFE), (ESCPOS_LIKE, 0x12)],
                         ids=["bel-esc-u", "esc-p-dle-eot"])
async def test_closed_then_open_after_a_kick_then_closed_by_hand(
        protocol: SerialDrawerProtocol, other_bits: int) -> None:
    async with SerialDrawerSimulator(protocol, kick_delay=0.05, other_bits=other_bits) as sim, \
            running(sim, protocol) as (drawer, readings, _):
        await readings.poll(False)
        assert drawer.sensor is False and drawer.is_connected
        mark = readings.mark()
        await drawer.kick()
        await readings.poll(True, after=mark)
        # Closed until the solenoid had done its work, then open: nothing else in between.
        seen = [sensor for sensor, _ in readings.since(mark)]
        assert set(seen[:seen.index(True)]) <= {False}
        assert len(sim.kicks) == 1 and sim.drawer_open
        mark = readings.mark()
        sim.close_drawer()
        await readings.poll(False, after=mark)
        assert protocol.open_command in sim.commands
        assert sim.unknown == b""


async def test_opened_by_hand_reads_open() -> None:
    async with SerialDrawerSimulator() as sim, running(sim) as (drawer, readings, _):
        await readings.poll(False)
        mark = readings.mark()
        sim.open_by_hand()
        await readings.poll(True, after=mark)
        assert sim.kicks == []
        assert drawer.sensor is True


async def test_jammed_drawer_takes_the_kick_and_stays_closed() -> None:
    async with SerialDrawerSimulator() as sim, running(sim) as (drawer, readings, _):
        await readings.poll(False)
        sim.jam()
        mark = readings.mark()
        await drawer.kick()
        assert await drawer.read_sensor() is False  # the query went after the kick
        await sim.wait_for(lambda: len(sim.kicks) == 1)
        assert not sim.drawer_open
        await readings.poll(False, after=mark)
        assert all(sensor is False for sensor, _ in readings.since(mark))
        sim.jam(False)
        await drawer.kick()
        assert await drawer.read_sensor() is True


async def test_stuck_sensor_is_believed() -> None:
    async with SerialDrawerSimulator() as sim, running(sim) as (drawer, readings, _):
        await readings.poll(False)
        sim.stick_sensor("closed")
        await drawer.kick()
        assert await drawer.read_sensor() is False
        assert sim.drawer_open  # open in fact; the sensor says otherwise
        sim.close_drawer()
        sim.stick_sensor("open")
        assert await drawer.read_sensor() is True
        mark = readings.mark()
        await readings.poll(True, after=mark)
        sim.stick_sensor(None)
        assert await drawer.read_sensor() is False


async def test_no_reply_makes_the_sensor_unknown() -> None:
    async with SerialDrawerSimulator() as sim, running(sim) as (drawer, readings, _):
        await readings.poll(False)
        mark = readings.mark()
        sim.silence()
        _, reason = await readings.wait(lambda s, _: s is None, after=mark)
        assert reason.startswith("no reply")
        assert drawer.sensor is None
        assert drawer.is_connected  # a silent box is not an unplugged one
        with pytest.raises(TransportTimeout):
            await drawer.read_sensor()
        await drawer.kick()  # kicks still go out
        sim.silence(False)
        mark = readings.mark()
        await readings.poll(True, after=mark)
        assert len(sim.kicks) == 1


async def test_unplug_is_reported_and_replug_on_a_new_pty_polls_again() -> None:
    async with SerialDrawerSimulator() as sim, running(sim) as (drawer, readings, states):
        await readings.poll(False)
        first = sim.pty_path
        assert states[-1] == ("connected", f"serial:{first}")
        mark = readings.mark()
        sim.unplug()
        _, reason = await readings.wait(lambda s, _: s is None, after=mark)
        assert reason.startswith("disconnected")
        assert not drawer.is_connected and drawer.sensor is None
        assert [r for r in readings.since(mark) if r[1].startswith("disconnected")] == [
            (None, reason)]  # reported once
        with pytest.raises(DeviceGone):
            await drawer.kick()
        sim.open_by_hand()  # someone opened it while the box was away
        mark = readings.mark()
        path = sim.replug()
        await readings.poll(True, after=mark)
        assert drawer.is_connected
        assert states[-1] == ("connected", f"serial:{path}")
        sim.close_drawer()
        await drawer.kick()
        assert await drawer.read_sensor() is True
        assert len(sim.kicks) == 1


async def test_kicks_and_polls_never_interleave() -> None:
    # Multi-byte commands both ways, so that interleaved bytes could not pass for whole ones.
    # A slow box (2 ms per reply) shows a kick sent between a query and its reply.
    protocol = ESCPOS_LIKE
    async with SerialDrawerSimulator(protocol, reply_delay=0.002) as sim, \
            running(sim, protocol, poll_interval=0, reply_timeout=2.0) as (drawer, readings, _):
        await readings.poll(False)
        calls: list[Callable[[], Any]] = [drawer.kick] * 40 + [drawer.read_sensor] * 40
        random.Random(7).shuffle(calls)

        async def worker(share: list[Callable[[], Any]]) -> list[Any]:
            results = []
            for call in share:
                # Yield first: a kick that does not wait for the lock would go out while a
                # query is waiting for its reply (writes that fit the buffer never yield).
                await asyncio.sleep(0)
                results.append(await call())
            return results

        results = await asyncio.gather(*(worker(calls[i::8]) for i in range(8)))
        assert all(r is None or isinstance(r, bool) for share in results for r in share)
        await sim.wait_for(lambda: len(sim.kicks) == 40)
        mark = readings.mark()
        await readings.poll(True, after=mark)  # the poll loop ran alongside throughout
        assert sim.unknown == b""
        assert bytes(sim.received) == b"".join(sim.commands)  # only whole commands, in order
        assert set(sim.commands) == {protocol.open_command, protocol.status_command}
        assert sim.commands.count(protocol.open_command) == 40
        assert sim.overlapped == 0  # nothing sent while a reply was due
        assert sim.queries == sim.replies  # every query answered ...
        assert drawer.stray_bytes == 0  # ... and each reply read by the query that asked


# ---- stale bytes (in memory: the order of arrival is exact) --------------------------------


class MemoryPort(Transport):
    """A drawer box in memory: ``answer`` is the reply to each status query (None: silent)."""

    name = "memory"

    def __init__(self, protocol: SerialDrawerProtocol) -> None:
        self.protocol = protocol
        self.answer: bytes | None = bytes([protocol.sensor_byte(False)])
        self._inbox = bytearray()
        self._arrived = asyncio.Event()
        self._open = False

    @property
    def is_open(self) -> bool:
        return self._open

    async def open(self, timeout: float) -> None:  # noqa: ASYNC109
        self._open = True

    async def close(self) -> None:
        self._open = False

    async def write(self, data: bytes, timeout: float) -> None:  # noqa: ASYNC109
        if data == self.protocol.status_command and self.answer is not None:
            self.push(self.answer)

    async def read(self, max_bytes: int, timeout: float) -> bytes:  # noqa: ASYNC109
        async with deadline(timeout, "memory: read"):
            while not self._inbox:
                self._arrived.clear()
                await self._arrived.wait()
        data = bytes(self._inbox[:max_bytes])
        del self._inbox[:max_bytes]
        return data

    def push(self, data: bytes) -> None:
        self._inbox += data
        self._arrived.set()


@contextlib.asynccontextmanager
async def in_memory() -> AsyncIterator[tuple[SerialDrawer, MemoryPort]]:
    port = MemoryPort(GENERIC)
    transport = ReconnectingTransport(lambda: port, backoff_min=0.01, backoff_max=0.05,
                                      name="memory")
    # One poll at connect, then only the test's own queries.
    readings = Readings()
    drawer = SerialDrawer(transport, GENERIC, poll_interval=60, reply_timeout=0.05,
                          on_sensor=readings)
    async with asyncio.TaskGroup() as group:
        task = group.create_task(drawer.run())
        try:
            await readings.poll(False)
            yield drawer, port
        finally:
            task.cancel()


async def test_a_late_reply_is_not_taken_for_the_next_one() -> None:
    async with in_memory() as (drawer, port):
        port.answer = None
        with pytest.raises(TransportTimeout):
            await drawer.read_sensor()
        port.push(bytes([GENERIC.sensor_byte(False)]))  # the late "closed"
        port.answer = bytes([GENERIC.sensor_byte(True)])  # opened meanwhile
        assert await drawer.read_sensor() is True
        assert drawer.stray_bytes == 1


async def test_a_box_that_never_stops_talking_is_a_protocol_error() -> None:
    async with in_memory() as (drawer, port):
        port.push(b"\x55" * 10_000)
        with pytest.raises(ProtocolError):
            await drawer.read_sensor()


# ---- the protocol's own checks -------------------------------------------------------------


@pytest.mark.parametrize("fields", [
    {"open_command": b""},
    {"status_command": b"\x00" * 33},
    {"open_command": b"\x1b", "status_command": b"\x1b\x75\x00"},  # a prefix of the other
    {"open_command": b"\x07", "status_command": b"\x07"},
    {"open_mask": 0},
    {"open_mask": 0x100},
    {"open_mask": 0x01, "open_value": 0x02},  # could never read as open
])
def test_protocol_rejects_what_cannot_work(fields: dict[str, Any]) -> None:
    with pytest.raises(ValueError):
        SerialDrawerProtocol(**fields)


@pytest.mark.parametrize("protocol", [GENERIC, ESCPOS_LIKE])
def test_sensor_byte_round_trips_whatever_the_other_bits(protocol: SerialDrawerProtocol) -> None:
    for other in range(256):
        for is_open in (False, True):
            assert protocol.is_open(protocol.sensor_byte(is_open, other_bits=other)) is is_open
