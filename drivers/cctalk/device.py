"""What the three ccTalk devices share: life cycle, identification, wanted state, events.

Layer: driver. A device is one address on a shared :class:`CcTalkBus`. Its ``run()``::

    attach to the bus (the first device starts the line, the last one stops it)
    loop:  wait for the line
           simple poll (254) -> identify (245 category, 246, 244, 242 serial, 241, ids)
           resume (subclass): first reading, restore the wanted inhibits / enable
           Connection(True, identity), then the first reading is accounted
           poll every poll_interval until something fails
           failure -> Connection(False, why) once; try again after reconnect_interval
           (a reset seen in the event counter: again at once, to restore inhibits)

The wanted state (enable()/disable()) is kept by the driver and written again after every
(re)identification: a power-cycled acceptor comes back with everything inhibited (Azkoyen,
device-protocols.md §4.1), and it must accept again without the daemon asking twice.
The first reading of a session is only accounted (its credits reported) once the session is
up: a session that fails before that leaves the counter uncommitted, so the next one reads the
same events again instead of losing them.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from abc import abstractmethod
from collections.abc import Mapping
from typing import ClassVar

from kassad.drivers.cctalk.frames import (
    DEFAULT_CURRENCIES,
    Header,
    parse_ascii,
    parse_serial,
)
from kassad.drivers.cctalk.protocol import CcTalkBus, CcTalkError, CcTalkNak
from kassad.drivers.counter import (
    ChannelInfo,
    Connection,
    CounterDevice,
    CounterEvent,
    EventCallback,
    Identity,
)
from kassad.drivers.errors import DeviceGone, ProtocolError, TransportError

_LOGGER = logging.getLogger(__name__)


class DeviceReset(ProtocolError):
    """The device's event counter went back to 0: it was reset or lost power."""


class CcTalkDevice(CounterDevice):
    """Base of CoinAcceptor, BillValidator and Hopper (not used directly)."""

    #: What the device must answer to 245 (compared without case, "_" read as a space).
    category: ClassVar[str]

    def __init__(self, bus: CcTalkBus, name: str, *, address: int,
                 on_event: EventCallback | None = None, poll_interval: float = 0.1,
                 reconnect_interval: float = 1.0,
                 currencies: Mapping[str, str] = DEFAULT_CURRENCIES) -> None:
        if not 2 <= address <= 255:
            msg = f"a device address is 2..255, got {address}"
            raise ValueError(msg)
        if poll_interval < 0 or reconnect_interval < 0:
            msg = f"intervals must be >= 0, got {poll_interval}, {reconnect_interval}"
            raise ValueError(msg)
        self.bus = bus
        self.name = name
        self.address = address
        self.on_event = on_event
        #: Pause between polls. Coin acceptors buffer 5 events: poll well within 5 coins.
        self.poll_interval = poll_interval
        #: Pause between attempts to reach a device that stopped answering.
        self.reconnect_interval = reconnect_interval
        #: Country code of coin / bill ids -> ISO currency (values in its minor unit).
        self.currencies = currencies
        #: Raw 242 reply (the hopper's dispense command repeats it).
        self.serial_bytes: bytes | None = None
        self._identity: Identity | None = None
        self._online: bool | None = None  # None: nothing reported yet
        self._enabled = False
        self._channels: frozenset[int] | None = None  # None: every channel
        self._apply_lock = asyncio.Lock()
        self._wake = asyncio.Event()  # cuts the pause before the next poll short

    @property
    def identity(self) -> Identity | None:
        return self._identity

    @property
    def online(self) -> bool:
        """Identified and answering polls."""
        return self._online is True

    # -- life cycle -------------------------------------------------------------------------

    async def run(self) -> None:
        async with self.bus.attached():
            while True:
                await self.bus.transport.connected.wait()
                try:
                    await self._session()
                except DeviceReset as exc:
                    self._set_offline(str(exc))
                    continue  # at once: the device sits inhibited until we restore it
                except DeviceGone as exc:
                    self._set_offline(f"line down: {exc}")
                except (TransportError, ProtocolError) as exc:
                    self._set_offline(str(exc))
                await asyncio.sleep(self.reconnect_interval)

    async def _session(self) -> None:
        # While offline one quick probe (no retries) per reconnect_interval: a dead device
        # must not hold the shared bus away from the others for the full retry budget.
        await self.request(Header.SIMPLE_POLL, retries=0 if self._online is False else None)
        self._identity = await self._identify()
        note = await self._resume()
        self._set_online(note)
        await self._resumed()
        while True:
            with contextlib.suppress(TimeoutError):  # only our own timer: a cancel still raises
                async with asyncio.timeout(self._poll_delay()):
                    await self._wake.wait()
            self._wake.clear()
            await self._poll()

    def _poll_delay(self) -> float:
        return self.poll_interval

    def poll_now(self) -> None:
        """Poll without waiting for the rest of the interval (after a command)."""
        self._wake.set()

    # -- what subclasses add ----------------------------------------------------------------

    async def _channels_info(self) -> tuple[ChannelInfo, ...]:
        """Channel ids (184 / 157); none by default."""
        return ()

    @abstractmethod
    async def _resume(self) -> str:
        """After identification: take the first reading (without accounting it) and write
        the wanted state; returns the reason for Connection(True)."""

    async def _resumed(self) -> None:
        """After Connection(True): account the first reading."""

    @abstractmethod
    async def _poll(self) -> None:
        """One poll; raises to end the session (DeviceReset, TransportError, ProtocolError)."""

    @abstractmethod
    async def _write_state(self, enabled: bool, channels: frozenset[int] | None) -> None:
        """Write the wanted state to the device (inhibits, master inhibit, hopper enable)."""

    # -- enable / disable -------------------------------------------------------------------

    async def enable(self, channels: frozenset[int] | None = None) -> None:
        """Accept ``channels`` (None: all). Written now if the device is online (errors
        raise), and again after every reconnection or reset."""
        self._enabled, self._channels = True, channels
        await self._apply_if_online()

    async def disable(self) -> None:
        self._enabled = False
        await self._apply_if_online()

    @property
    def enabled(self) -> bool:
        return self._enabled

    @property
    def wanted_channels(self) -> frozenset[int] | None:
        return self._channels

    async def _apply_if_online(self) -> None:
        if self._online is True:
            await self._apply()

    async def _apply(self) -> None:
        # One writer at a time, reading the wish inside the lock: a reconnection restoring
        # the state and an enable() from the daemon must not interleave their commands.
        async with self._apply_lock:
            await self._write_state(self._enabled, self._channels)

    # -- requests and identification --------------------------------------------------------

    async def request(self, header: int, data: bytes = b"", *, idempotent: bool = True,
                      retries: int | None = None) -> bytes:
        return await self.bus.request(self.address, header, data, idempotent=idempotent,
                                      retries=retries)

    async def _optional(self, header: int, data: bytes = b"") -> bytes | None:
        """A command not every device supports: NAK means None."""
        try:
            return await self.request(header, data)
        except CcTalkNak:
            return None

    async def _identify(self) -> Identity:
        category = parse_ascii(await self.request(Header.EQUIPMENT_CATEGORY))
        if _norm(category) != _norm(self.category):
            raise CcTalkError(self.address, Header.EQUIPMENT_CATEGORY,
                              f"the device is a {category!r}, not a {self.category!r}: "
                              "wrong device at this address")
        manufacturer = await self._optional(Header.MANUFACTURER)
        product = await self._optional(Header.PRODUCT_CODE)
        self.serial_bytes = await self._optional(Header.SERIAL_NUMBER)
        firmware = await self._optional(Header.SOFTWARE_REVISION)
        return Identity(
            device=self.name, protocol="cctalk", address=self.address, category=category,
            manufacturer=None if manufacturer is None else parse_ascii(manufacturer),
            product=None if product is None else parse_ascii(product),
            serial=(None if self.serial_bytes is None
                    else str(parse_serial(self.serial_bytes))),
            firmware=None if firmware is None else parse_ascii(firmware),
            channels=await self._channels_info())

    # -- events -----------------------------------------------------------------------------

    def emit(self, event: CounterEvent) -> None:
        if self.on_event is not None:
            self.on_event(event)

    def _set_online(self, reason: str) -> None:
        self._online = True
        _LOGGER.info("%s: %s (address %d): %s", self.name, self.category, self.address,
                     reason)
        self.emit(Connection(self.name, True, reason, self._identity))

    def _set_offline(self, reason: str) -> None:
        if self._online is False:
            _LOGGER.debug("%s: still offline: %s", self.name, reason)
            return
        self._online = False
        _LOGGER.warning("%s: offline: %s", self.name, reason)
        self.emit(Connection(self.name, False, reason))


def _norm(text: str) -> str:
    return text.replace("_", " ").strip().casefold()
