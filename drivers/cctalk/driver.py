"""ccTalk coin acceptor and bill validator as :class:`CounterDevice`s (the hopper: hopper.py).

Layer: driver, over a shared :class:`CcTalkBus`. device-protocols.md §4.1.

Identification (each start and reconnection): 254, 245 (must be "Coin Acceptor" / "Bill
Validator"), 246, 244, 242, 241, then the id of positions 1–16 (184 coins, 157 bills; blank
ids are unused positions) -> :class:`ChannelInfo`, channel = position. Bills also ask 156 for
the country's scaling factor to turn "SE0020A" into 2000 öre.

Enable / disable::

    enable(channels)   231 [mask 1–8][mask 9–16] (bit = 1: accepted), then 228 [1]
    disable()          228 [0] (everything stops at once), then 231 [0][0]

Polling: 229 (coins) / 159 (bills) every poll_interval; exactly-once accounting with the event
counter (events.py). Results (newest first in the reply, reported oldest first)::

    coins  A != 0            Accepted(channel A)                      (B = sorter path)
           A == 0            B = error code: Rejected, Fault or a log line (events.COIN_ERRORS)
    bills  A != 0, B == 0    Accepted(channel A)                      (stacked)
           A != 0, B == 1    held in escrow: 154 [1] stack if channel A is wanted, else [0]
           A == 0            B = event code (events.BILL_EVENTS)
    more than 5 new events   Fault("events_lost", code = how many are lost), the 5 known counted
    counter back to 0        Connection(False, "device reset …"), re-identified, inhibits restored
"""

from __future__ import annotations

import logging
from abc import abstractmethod
from collections.abc import Mapping
from typing import ClassVar, Literal

from kassad.drivers.cctalk.device import CcTalkDevice, DeviceReset
from kassad.drivers.cctalk.events import (
    EventTracker,
    Meaning,
    bill_event,
    coin_error,
)
from kassad.drivers.cctalk.frames import (
    ADDR_BILL_VALIDATOR,
    ADDR_COIN_ACCEPTOR,
    DEFAULT_CURRENCIES,
    EVENT_BUFFER_DEPTH,
    CoinId,
    Header,
    inhibit_mask,
    is_empty_id,
    parse_ascii,
    parse_bill_id,
    parse_buffered_credit,
    parse_coin_id,
    parse_scaling,
)
from kassad.drivers.cctalk.hopper import Hopper
from kassad.drivers.cctalk.protocol import CcTalkBus
from kassad.drivers.counter import Accepted, ChannelInfo, EventCallback, Fault, Rejected
from kassad.drivers.errors import ProtocolError, TransportError

__all__ = ["BillValidator", "CoinAcceptor", "Hopper"]

_LOGGER = logging.getLogger(__name__)

_POSITIONS = range(1, 17)


class _BufferedAcceptor(CcTalkDevice):
    """What coin acceptors and bill validators share: ids, inhibits, the event counter."""

    kind: ClassVar[Literal["coin", "note"]]
    poll_header: ClassVar[Header]
    id_header: ClassVar[Header]

    def __init__(self, bus: CcTalkBus, name: str, *, address: int,
                 on_event: EventCallback | None = None, poll_interval: float = 0.1,
                 reconnect_interval: float = 1.0,
                 currencies: Mapping[str, str] = DEFAULT_CURRENCIES,
                 event_counter: int | None = None) -> None:
        super().__init__(bus, name, address=address, on_event=on_event,
                         poll_interval=poll_interval, reconnect_interval=reconnect_interval,
                         currencies=currencies)
        self._tracker = EventTracker(event_counter)
        self._first: tuple[int, list[tuple[int, int]]] | None = None

    @property
    def event_counter(self) -> int | None:
        """The counter accounted up to: persist it and pass it back as ``event_counter`` to
        count what arrived while the daemon was down (None: nothing read yet)."""
        return self._tracker.last

    # -- identification ---------------------------------------------------------------------

    async def _channels_info(self) -> tuple[ChannelInfo, ...]:
        channels: list[ChannelInfo] = []
        for position in _POSITIONS:
            raw = await self._optional(self.id_header, bytes((position,)))
            text = "" if raw is None else parse_ascii(raw)
            if is_empty_id(text):
                continue
            parsed = await self._parse_id(text)
            channels.append(ChannelInfo(position, self.kind, parsed.currency,
                                        parsed.value_minor, parsed.label))
        return tuple(channels)

    @abstractmethod
    async def _parse_id(self, text: str) -> CoinId: ...

    # -- state ------------------------------------------------------------------------------

    async def _write_state(self, enabled: bool, channels: frozenset[int] | None) -> None:
        if enabled:
            if channels is None:
                identity = self.identity
                known = [info.channel for info in identity.channels] if identity else []
                channels = frozenset(known or _POSITIONS)
            await self.request(Header.MODIFY_INHIBIT_STATUS, inhibit_mask(channels))
            await self.request(Header.MODIFY_MASTER_INHIBIT, b"\x01")
        else:
            await self.request(Header.MODIFY_MASTER_INHIBIT, b"\x00")
            await self.request(Header.MODIFY_INHIBIT_STATUS, inhibit_mask(()))

    # -- polling ----------------------------------------------------------------------------

    async def _read_events(self) -> tuple[int, list[tuple[int, int]]]:
        return parse_buffered_credit(await self.request(self.poll_header))

    async def _resume(self) -> str:
        self._first = await self._read_events()
        last = self._tracker.last
        await self._apply()
        if self._first[0] == 0 and last not in (None, 0):
            return ("identified; it was reset or power-cycled while away (event counter "
                    f"{last} -> 0): inhibits restored, pieces before the reset are unknown")
        return "identified"

    async def _resumed(self) -> None:
        first, self._first = self._first, None
        if first is not None:
            await self._account(*first, resumed=True)

    async def _poll(self) -> None:
        await self._account(*await self._read_events(), resumed=False)

    async def _account(self, counter: int, results: list[tuple[int, int]], *,
                       resumed: bool) -> None:
        last = self._tracker.last
        update = self._tracker.update(counter, results)
        if update.reset and not resumed:
            msg = (f"device reset or power-cycled: event counter {last} -> 0; pieces "
                   "inserted since the previous poll are unknown")
            raise DeviceReset(msg)
        if update.lost:
            self.emit(Fault(
                self.name, "events_lost",
                f"{update.lost + len(update.new)} events since the last poll (counter {last} "
                f"-> {counter}) but the device keeps {EVENT_BUFFER_DEPTH}: {update.lost} "
                "lost, not counted; count the cash by hand", code=update.lost))
        # Committed above: report the whole batch without an await in between, so that not
        # even a cancellation can separate the counter from the events it stands for.
        for a, b in update.new:
            self._event(a, b)
        await self._after_events()

    @abstractmethod
    def _event(self, a: int, b: int) -> None: ...

    async def _after_events(self) -> None:
        """Commands a batch of events calls for (bills in escrow)."""

    def _report(self, meaning: Meaning, code: int) -> None:
        if meaning.outcome == "rejected":
            self.emit(Rejected(self.name, meaning.name, code))
        elif meaning.outcome == "fault":
            assert meaning.fault is not None
            self.emit(Fault(self.name, meaning.fault, f"{meaning.name} (code {code})", code,
                            meaning.active))
        else:
            _LOGGER.info("%s: %s (code %d)", self.name, meaning.name, code)


class CoinAcceptor(_BufferedAcceptor):
    """A ccTalk coin acceptor (address 2 by default). Channel = coin position 1–16."""

    category = "Coin Acceptor"
    kind = "coin"
    poll_header = Header.READ_BUFFERED_CREDIT
    id_header = Header.COIN_ID

    def __init__(self, bus: CcTalkBus, name: str, *, address: int = ADDR_COIN_ACCEPTOR,
                 on_event: EventCallback | None = None, poll_interval: float = 0.1,
                 reconnect_interval: float = 1.0,
                 currencies: Mapping[str, str] = DEFAULT_CURRENCIES,
                 event_counter: int | None = None) -> None:
        super().__init__(bus, name, address=address, on_event=on_event,
                         poll_interval=poll_interval, reconnect_interval=reconnect_interval,
                         currencies=currencies, event_counter=event_counter)

    async def _parse_id(self, text: str) -> CoinId:
        return parse_coin_id(text, self.currencies)

    def _event(self, a: int, b: int) -> None:
        if a:
            self.emit(Accepted(self.name, a))
        else:
            self._report(coin_error(b), b)


class BillValidator(_BufferedAcceptor):
    """A ccTalk bill validator (address 40 by default). Channel = bill type 1–16."""

    category = "Bill Validator"
    kind = "note"
    poll_header = Header.READ_BILL_EVENTS
    id_header = Header.BILL_ID

    def __init__(self, bus: CcTalkBus, name: str, *, address: int = ADDR_BILL_VALIDATOR,
                 on_event: EventCallback | None = None, poll_interval: float = 0.2,
                 reconnect_interval: float = 1.0,
                 currencies: Mapping[str, str] = DEFAULT_CURRENCIES,
                 event_counter: int | None = None) -> None:
        super().__init__(bus, name, address=address, on_event=on_event,
                         poll_interval=poll_interval, reconnect_interval=reconnect_interval,
                         currencies=currencies, event_counter=event_counter)
        self._scaling: dict[str, tuple[int, int] | None] = {}
        self._escrow: list[int] = []

    async def _channels_info(self) -> tuple[ChannelInfo, ...]:
        self._scaling.clear()  # asked again: the device may have been reprogrammed
        return await super()._channels_info()

    async def _parse_id(self, text: str) -> CoinId:
        country = text[:2]
        if len(text) == 7 and country.isalpha() and country not in self._scaling:
            raw = await self._optional(Header.COUNTRY_SCALING, country.encode("ascii"))
            self._scaling[country] = None if raw is None else parse_scaling(raw)
        return parse_bill_id(text, self._scaling.get(country), self.currencies)

    def _event(self, a: int, b: int) -> None:
        if a == 0:
            self._report(bill_event(b), b)
        elif b == 0:
            self.emit(Accepted(self.name, a))
        elif b == 1:
            self._escrow.append(a)
        else:
            self.emit(Fault(self.name, "unknown_bill_event",
                            f"bill type {a} with result {b} (0 stacked / 1 escrow known)", b))

    async def _after_events(self) -> None:
        escrow, self._escrow = self._escrow, []
        for bill_type in escrow:
            await self._route(bill_type)

    async def _route(self, bill_type: int) -> None:
        """A bill waits in escrow: stack it if its channel is wanted, else give it back. The
        credit comes later as its own (A, 0) event; nothing is counted here."""
        wanted = self.wanted_channels
        stack = self.enabled and (wanted is None or bill_type in wanted)
        try:
            reply = await self.request(Header.ROUTE_BILL, b"\x01" if stack else b"\x00")
        except (TransportError, ProtocolError) as exc:
            # The validator returns an unrouted bill after its escrow timeout (reported then
            # as "returned from escrow"); the next poll notices a device that went away.
            _LOGGER.warning("%s: routing bill type %d failed: %s", self.name, bill_type, exc)
            return
        if reply:
            problem = {254: "escrow empty", 255: "failed to route"}.get(reply[0], "error")
            _LOGGER.warning("%s: route bill type %d: %s (%d)", self.name, bill_type, problem,
                            reply[0])
