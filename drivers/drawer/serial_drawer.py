"""A cash drawer on its own serial interface (not on a printer's kick port): driver and codec.

Layer: driver, over a :class:`ReconnectingTransport` (a serial port, a USB-serial drawer
controller, a pty in tests). It kicks the drawer and polls its sensor; the daemon feeds the
readings to the pure :class:`~kassad.drivers.drawer.machine.DrawerMachine`.

Wire layout (every value configurable in :class:`SerialDrawerProtocol`, none vendor-fixed)::

    host -> box   open_command     default 07           BEL
    host -> box   status_command   default 1B 75 00     ESC u 0
    box -> host   1 byte           open  <=>  byte & open_mask == open_value
                                   default mask 0x01, value 0x01 (bit 0 set = open)

Why these defaults: many generic serial drawer boxes fire the solenoid on any BEL (0x07). ESC u 0
is the ESC/POS "transmit peripheral device status" request, whose one-byte reply carries the
drawer connector's pin 3 level in bit 0; a box that emulates ESC/POS answers it, one that does
not needs its own ``status_command`` (hence configurable). Other boxes want, for instance,
``open_command`` ESC p 0 25 250 (1B 70 00 19 FA: pin 2, 50 ms on, 500 ms off) and
``status_command`` DLE EOT 1 (10 04 01; pin 3 in bit 2: ``open_mask`` 0x04). A drawer whose
switch reads the other way (pin 3 low when open) takes ``open_value`` 0x00.

Why the protocol is done like this: the reply carries no tag, so one query must be answered
before the next goes out, and a kick must never split a query from its reply. One lock covers
"discard stale bytes, write the query, read one byte" and every kick. A reply that comes after
``reply_timeout`` would otherwise be read as the answer to the next query (off by one for ever):
before each query the bytes already received are discarded (bounded, so a box that chatters
without end is reported instead of looping). Polls also notice an unplug: the transport only
sees a loss when a read or write fails.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from dataclasses import dataclass

from kassad.drivers.errors import DeviceGone, ProtocolError, TransportError, TransportTimeout
from kassad.drivers.transport.reconnect import ReconnectingTransport

_LOGGER = logging.getLogger(__name__)

#: on_sensor(True/False, "poll") for a reading; on_sensor(None, reason) when it is unknown:
#: "no reply: …", "disconnected: …", "error: …".
SensorCallback = Callable[[bool | None, str], None]

# Commands are a handful of bytes; a longer one is a configuration mistake (hex pasted twice).
MAX_COMMAND_LENGTH = 32
# Stale bytes discarded before a query: a late reply is 1 byte, line noise a few. A box that
# still has more after this many reads is streaming something else; its next byte means nothing.
_DISCARD_READS = 16
_DISCARD_CHUNK = 256


@dataclass(frozen=True, slots=True)
class SerialDrawerProtocol:
    """The bytes one drawer interface speaks (see the module docstring for the defaults)."""

    #: Sent to open the drawer (fires the solenoid).
    open_command: bytes = b"\x07"
    #: Sent to ask for the sensor; the box answers exactly one byte.
    status_command: bytes = b"\x1b\x75\x00"
    #: Bits of the status byte that carry the sensor.
    open_mask: int = 0x01
    #: ``byte & open_mask`` equal to this means open; anything else means closed.
    open_value: int = 0x01

    def __post_init__(self) -> None:
        for field_name, command in (("open_command", self.open_command),
                                    ("status_command", self.status_command)):
            if not isinstance(command, bytes) or not 1 <= len(command) <= MAX_COMMAND_LENGTH:
                msg = f"{field_name} must be 1 to {MAX_COMMAND_LENGTH} bytes, got {command!r}"
                raise ValueError(msg)
        # The box (and the simulator) must tell the two apart as bytes arrive.
        if (self.open_command.startswith(self.status_command)
                or self.status_command.startswith(self.open_command)):
            msg = (f"open_command {self.open_command.hex(' ')} and status_command "
                   f"{self.status_command.hex(' ')}: neither may be a prefix of the other")
            raise ValueError(msg)
        if not 0 < self.open_mask <= 0xFF:
            msg = f"open_mask must be 0x01..0xff, got {self.open_mask:#x}"
            raise ValueError(msg)
        if not 0 <= self.open_value <= 0xFF or self.open_value & ~self.open_mask:
            msg = (f"open_value {self.open_value:#04x} has bits outside open_mask "
                   f"{self.open_mask:#04x}: the drawer could never read as open")
            raise ValueError(msg)

    def is_open(self, byte: int) -> bool:
        """The status byte's verdict: True = open, False = closed."""
        return byte & self.open_mask == self.open_value

    def sensor_byte(self, is_open: bool, *, other_bits: int = 0) -> int:
        """The status byte a box answers (the simulator's side of the codec); ``other_bits``
        fill the bits outside ``open_mask``, which a reader must ignore."""
        value = self.open_value if is_open else self.open_value ^ self.open_mask
        return (other_bits & ~self.open_mask & 0xFF) | value


class SerialDrawer:
    """Kicks and polls one drawer interface; run :meth:`run` in the owner's TaskGroup."""

    def __init__(self, transport: ReconnectingTransport,
                 protocol: SerialDrawerProtocol | None = None, *,
                 poll_interval: float = 0.2, reply_timeout: float = 0.5,
                 write_timeout: float = 2.0, on_sensor: SensorCallback | None = None) -> None:
        if poll_interval < 0 or reply_timeout <= 0 or write_timeout <= 0:
            msg = (f"need poll_interval >= 0 and positive timeouts, got {poll_interval}, "
                   f"{reply_timeout}, {write_timeout}")
            raise ValueError(msg)
        self.transport = transport
        self.protocol = protocol if protocol is not None else SerialDrawerProtocol()
        #: Pause between the end of one poll and the next query.
        self.poll_interval = poll_interval
        #: How long a query waits for its byte; a kick may wait this long for the lock too.
        self.reply_timeout = reply_timeout
        self.write_timeout = write_timeout
        self.on_sensor = on_sensor
        #: The last reading: True open, False closed, None unknown (no reply, disconnected).
        self.sensor: bool | None = None
        #: Bytes nobody asked for, discarded before queries (late replies, line noise).
        self.stray_bytes = 0
        self._lock = asyncio.Lock()
        self._online = False  # a loss is reported once per connection

    @property
    def name(self) -> str:
        return self.transport.name

    @property
    def is_connected(self) -> bool:
        return self.transport.connected.is_set()

    async def run(self) -> None:
        """Keep the port open and poll the sensor until cancelled."""
        async with asyncio.TaskGroup() as group:
            group.create_task(self.transport.run(), name=f"{self.name}-transport")
            group.create_task(self._poll_loop(), name=f"{self.name}-sensor")

    async def kick(self) -> None:
        """Send ``open_command`` once; returns when the bytes are handed to the port.

        Raises DeviceGone (not connected, or lost now) or TransportTimeout (write stuck, e.g.
        on flow control). Only the sensor says whether the drawer opened.
        """
        async with self._lock:
            await self._write(self.protocol.open_command)

    async def read_sensor(self) -> bool:
        """One query: True open, False closed.

        Raises TransportTimeout (no reply within ``reply_timeout``), DeviceGone, or
        ProtocolError (the box keeps sending bytes nobody asked for).
        """
        async with self._lock:
            await self._discard_stale()
            await self._write(self.protocol.status_command)
            try:
                reply = await self._read(1, self.reply_timeout)
            except TransportTimeout:
                msg = f"{self.name}: status query unanswered within {self.reply_timeout:g} s"
                raise TransportTimeout(msg) from None
            return self.protocol.is_open(reply[0])

    # -- internals --------------------------------------------------------------------------

    async def _poll_loop(self) -> None:
        while True:
            await self.transport.connected.wait()
            self._online = True
            try:
                is_open = await self.read_sensor()
            except TransportTimeout as e:
                self._report(None, f"no reply: {e}")
            except DeviceGone:
                pass  # _read/_write reported it; wait for the reconnect
            except (TransportError, ProtocolError) as e:
                self._report(None, f"error: {e}")
            else:
                self._report(is_open, "poll")
            await asyncio.sleep(self.poll_interval)

    async def _discard_stale(self) -> None:
        for _ in range(_DISCARD_READS):
            try:
                stale = await self._read(_DISCARD_CHUNK, 0)
            except TransportTimeout:
                return
            self.stray_bytes += len(stale)
            _LOGGER.info("%s: %d stale byte(s) discarded before a query: %s", self.name,
                         len(stale), stale[:16].hex(" "))
        msg = f"{self.name}: the box keeps sending bytes nobody asked for"
        raise ProtocolError(msg)

    async def _write(self, data: bytes) -> None:
        try:
            await self.transport.write(data, self.write_timeout)
        except DeviceGone as e:
            self._lost(str(e))
            raise

    async def _read(self, max_bytes: int, timeout: float) -> bytes:  # noqa: ASYNC109
        try:
            return await self.transport.read(max_bytes, timeout)
        except DeviceGone as e:
            self._lost(str(e))
            raise

    def _lost(self, reason: str) -> None:
        if self._online:
            self._online = False
            self._report(None, f"disconnected: {reason}")

    def _report(self, sensor: bool | None, reason: str) -> None:
        self.sensor = sensor
        if self.on_sensor is not None:
            self.on_sensor(sensor, reason)
