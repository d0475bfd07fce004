"""The simulated ccTalk devices: what each answers to a command, and its control verbs.

Pure state machines (no I/O, no clock): :class:`~kassad.simulators.cctalk.bus.CcTalkSimulator`
puts them on a pty and drives the hopper's payout timer. Payload layouts come from the driver's
codec (kassad.drivers.cctalk.frames): one codec, two roles.

Coin and bill ids follow the ccTalk standard (spec Appendix 3, device-protocols.md §4.1):
coins "CCVVVI" with the value in the currency's minor unit and K/M as a decimal-point
multiplier, bills "CCVVVVI" with the value in major units scaled by 156. The default SEK set::

    coins  1 SE100A 1 kr   2 SE200A 2 kr   3 SE500A 5 kr   4 SE1K0A 10 kr (1000 öre)
    bills  1 SE0020A 20 kr  2 SE0050A 50 kr  3 SE0100A 100 kr  4 SE0200A 200 kr
           5 SE0500A 500 kr  6 SE1000A 1000 kr   (156 "SE" -> factor 100, 2 decimals)

After power-up / reset (as on an Azkoyen X6): event counter 0, buffer empty, every coin or bill
inhibited (``inhibited_after_reset``), master inhibit 1 (accepting); hopper disabled.
"""

from __future__ import annotations

from collections import Counter, deque
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, ClassVar, Literal

from kassad.drivers.cctalk.frames import (
    ADDR_BILL_VALIDATOR,
    ADDR_COIN_ACCEPTOR,
    ADDR_HOPPER,
    EVENT_BUFFER_DEPTH,
    Header,
    HopperStatus,
    buffered_credit_payload,
    inhibit_mask,
    mask_channels,
)

SEK_COINS: Mapping[int, str] = {1: "SE100A", 2: "SE200A", 3: "SE500A", 4: "SE1K0A"}
EUR_COINS: Mapping[int, str] = {1: "EU001A", 2: "EU002A", 3: "EU005A", 4: "EU010A",
                                5: "EU020A", 6: "EU050A", 7: "EU100A", 8: "EU200A"}
SEK_BILLS: Mapping[int, str] = {1: "SE0020A", 2: "SE0050A", 3: "SE0100A", 4: "SE0200A",
                                5: "SE0500A", 6: "SE1000A"}
#: 156 replies: country -> (scaling factor, decimal places).
SCALING: Mapping[str, tuple[int, int]] = {"SE": (100, 2), "EU": (100, 2)}

# Error / event codes the verbs use (drivers/cctalk/events.py has their meaning).
COIN_INHIBITED = 2
BILL_MASTER_INHIBIT = 0
BILL_RETURNED_FROM_ESCROW = 1
BILL_INHIBITED = 4
ROUTE_ESCROW_EMPTY = 254

# 163 status bits.
HOPPER_PAYOUT_TIMEOUT = 1 << 1
HOPPER_OPTO_FRAUD = 1 << 3
HOPPER_BLOCKED = 1 << 5
HOPPER_DISABLED = 1 << 7


@dataclass(frozen=True, slots=True)
class Answer:
    header: int = Header.REPLY
    data: bytes = b""


ACK = Answer()
NAK = Answer(Header.NAK)
BUSY = Answer(Header.BUSY)


class SimDevice:
    """What every simulated device answers: poll, identification, reset."""

    category: ClassVar[str]

    def __init__(self, address: int, *, manufacturer: str = "KSD", product: str = "SIM",
                 serial: int = 0x0AD7DF, software: str = "1.0") -> None:
        self.address = address
        self.manufacturer, self.product, self.software = manufacturer, product, software
        self.serial = serial.to_bytes(3, "little")
        #: Answers nothing at all (powered off, cable cut) while True.
        self.silent = False
        #: Commands received, by header (answered or not).
        self.requests: Counter[int] = Counter()

    def handle(self, header: int, data: bytes) -> Answer:
        self.requests[header] += 1
        if header == Header.SIMPLE_POLL:
            return ACK
        texts = {Header.EQUIPMENT_CATEGORY: self.category,
                 Header.MANUFACTURER: self.manufacturer, Header.PRODUCT_CODE: self.product,
                 Header.SOFTWARE_REVISION: self.software}
        if header in texts:
            return Answer(data=texts[Header(header)].encode("ascii"))
        if header == Header.SERIAL_NUMBER:
            return Answer(data=self.serial)
        if header == Header.COMMS_REVISION:
            return Answer(data=b"\x01\x04\x07")  # level 1, issue 4.7
        if header == Header.RESET_DEVICE:
            self.reset()
            return ACK
        return self._handle(header, data)

    def _handle(self, header: int, data: bytes) -> Answer:
        return NAK  # an unknown command, as the spec allows

    def reset(self) -> None:
        """Power-up state."""

    def snapshot(self) -> dict[str, Any]:
        return {"address": self.address, "category": self.category, "silent": self.silent,
                "requests": {str(header): n for header, n in sorted(self.requests.items())}}


class _Acceptor(SimDevice):
    """Inhibits, master inhibit, ids and the 5-deep event buffer of acceptors/validators."""

    id_header: ClassVar[Header]
    poll_header: ClassVar[Header]

    def __init__(self, address: int, ids: Mapping[int, str], *,
                 inhibited_after_reset: bool = True, **identity: Any) -> None:
        super().__init__(address, **identity)
        self.ids = dict(ids)
        #: After power-up: all inhibited (Azkoyen) or all accepted.
        self.inhibited_after_reset = inhibited_after_reset
        self.counter = 0
        self.events: deque[tuple[int, int]] = deque(maxlen=EVENT_BUFFER_DEPTH)  # newest first
        self.enabled_channels: frozenset[int] = frozenset()
        self.master = True
        self.reset()

    def reset(self) -> None:
        self.counter = 0
        self.events.clear()
        self.enabled_channels = (frozenset() if self.inhibited_after_reset
                                 else frozenset(self.ids))
        self.master = True

    def add_event(self, a: int, b: int) -> None:
        # 1..255 then 1 again: 0 only ever means "just reset".
        self.counter = self.counter % 255 + 1
        self.events.appendleft((a, b))

    def accepts(self, channel: int) -> bool:
        return self.master and channel in self.enabled_channels

    def _handle(self, header: int, data: bytes) -> Answer:
        if header == Header.MODIFY_INHIBIT_STATUS and len(data) == 2:
            self.enabled_channels = mask_channels(data)
            return ACK
        if header == 230:  # request inhibit status
            return Answer(data=inhibit_mask(self.enabled_channels))
        if header == Header.MODIFY_MASTER_INHIBIT and len(data) == 1:
            self.master = bool(data[0] & 1)
            return ACK
        if header == 227:  # request master inhibit status
            return Answer(data=bytes((int(self.master),)))
        if header == self.poll_header:
            return Answer(data=buffered_credit_payload(self.counter, self.events))
        if header == self.id_header and len(data) == 1 and 1 <= data[0] <= 16:
            return Answer(data=self.ids.get(data[0], "").encode("ascii"))
        return NAK

    def snapshot(self) -> dict[str, Any]:
        return {**super().snapshot(), "counter": self.counter, "events": list(self.events),
                "enabled_channels": sorted(self.enabled_channels), "master": self.master}


class SimCoinAcceptor(_Acceptor):
    category = "Coin Acceptor"
    id_header = Header.COIN_ID
    poll_header = Header.READ_BUFFERED_CREDIT

    def __init__(self, address: int = ADDR_COIN_ACCEPTOR, coins: Mapping[int, str] = SEK_COINS,
                 **options: Any) -> None:
        options.setdefault("product", "SIM-COIN")
        options.setdefault("serial", 0x123456)
        super().__init__(address, coins, **options)
        #: Positions credited, in order (what a correct host counts).
        self.credited: list[int] = []

    def position(self, coin: int | str) -> int:
        if isinstance(coin, int):
            return coin
        for position, label in self.ids.items():
            if label == coin:
                return position
        msg = f"no coin {coin!r}; known: {self.ids}"
        raise ValueError(msg)

    def insert(self, coin: int | str) -> bool:
        """A coin goes in: credited (True) or returned as inhibited (False)."""
        position = self.position(coin)
        if not 1 <= position <= 16:
            msg = f"coin position must be 1..16, got {position}"
            raise ValueError(msg)
        if not self.accepts(position):
            self.add_event(0, COIN_INHIBITED)
            return False
        self.add_event(position, 0)
        self.credited.append(position)
        return True


class SimBillValidator(_Acceptor):
    category = "Bill Validator"
    id_header = Header.BILL_ID
    poll_header = Header.READ_BILL_EVENTS

    def __init__(self, address: int = ADDR_BILL_VALIDATOR, bills: Mapping[int, str] = SEK_BILLS,
                 *, scaling: Mapping[str, tuple[int, int]] = SCALING, escrow: bool = False,
                 **options: Any) -> None:
        options.setdefault("product", "SIM-BILL")
        options.setdefault("serial", 0x654321)
        super().__init__(address, bills, **options)
        self.scaling = dict(scaling)
        #: Bills wait in escrow for 154 (route bill) instead of going straight to the stacker.
        self.escrow_mode = escrow
        self.in_escrow: int | None = None
        #: Bill types stacked, in order.
        self.stacked: list[int] = []

    def reset(self) -> None:
        super().reset()
        self.in_escrow = None

    def insert(self, bill_type: int, *, escrow: bool | None = None) -> bool:
        """A bill goes in: stacked or held in escrow (True), or returned (False)."""
        if not self.master:
            self.add_event(0, BILL_MASTER_INHIBIT)
            return False
        if bill_type not in self.enabled_channels:
            self.add_event(0, BILL_INHIBITED)
            return False
        if self.escrow_mode if escrow is None else escrow:
            self.in_escrow = bill_type
            self.add_event(bill_type, 1)
        else:
            self._stack(bill_type)
        return True

    def _stack(self, bill_type: int) -> None:
        self.add_event(bill_type, 0)
        self.stacked.append(bill_type)

    def _handle(self, header: int, data: bytes) -> Answer:
        if header == Header.ROUTE_BILL and len(data) == 1:
            held = self.in_escrow
            if held is None:
                return Answer(data=bytes((ROUTE_ESCROW_EMPTY,)))
            if data[0] == 1:
                self.in_escrow = None
                self._stack(held)
            elif data[0] == 0:
                self.in_escrow = None
                self.add_event(0, BILL_RETURNED_FROM_ESCROW)
            return ACK  # 255: more time, the bill stays
        if header == Header.COUNTRY_SCALING and len(data) == 2:
            factor, decimals = self.scaling.get(data.decode("ascii", "replace"), (0, 0))
            return Answer(data=factor.to_bytes(2, "little") + bytes((decimals,)))
        if header == 153:  # modify bill operating mode: bit 1 = escrow
            if len(data) != 1:
                return NAK
            self.escrow_mode = bool(data[0] & 2)
            return ACK
        return super()._handle(header, data)

    def snapshot(self) -> dict[str, Any]:
        return {**super().snapshot(), "in_escrow": self.in_escrow, "stacked": self.stacked}


class SimHopper(SimDevice):
    """A hopper that pays one coin per tick of the simulator's payout timer."""

    category = "Payout"

    def __init__(self, address: int = ADDR_HOPPER, *, coins: int = 100,
                 security: Literal["serial", "cipher"] = "serial", **options: Any) -> None:
        options.setdefault("product", "SIM-HOPPER")
        # The Flow hopper example of device-protocols.md §4.1: dispense = 03 04 01 A7 DF D7 0A.
        options.setdefault("serial", 0x0AD7DF)
        super().__init__(address, **options)
        #: Coins in the hopper.
        self.coins = coins
        #: "cipher": wants the encrypted 167 form and NAKs the serial-number form.
        self.security = security
        self.jammed = False
        self.fraud = False
        self.enabled = False
        self.counter = 0
        self.remaining = self.paid = self.unpaid = 0
        self.timed_out = False
        #: Coins paid out over the simulator's life.
        self.total_paid = 0

    def reset(self) -> None:
        self.enabled = False
        self.counter = 0
        self.remaining = self.paid = self.unpaid = 0
        self.timed_out = False

    @property
    def status(self) -> HopperStatus:
        return HopperStatus(self.counter, self.remaining, self.paid, self.unpaid)

    @property
    def status_bits(self) -> int:
        bits = HOPPER_DISABLED if not self.enabled else 0
        if self.timed_out:
            bits |= HOPPER_PAYOUT_TIMEOUT
        if self.jammed:
            bits |= HOPPER_BLOCKED
        if self.fraud:
            bits |= HOPPER_OPTO_FRAUD
        return bits

    def step(self) -> bool:
        """One payout tick: pays a coin, or gives up (jammed, empty); True while more to go."""
        if not self.remaining:
            return False
        if self.jammed or not self.coins:
            self.unpaid, self.remaining, self.timed_out = self.remaining, 0, True
            return False
        self.coins -= 1
        self.paid += 1
        self.total_paid += 1
        self.remaining -= 1
        return self.remaining > 0

    def _handle(self, header: int, data: bytes) -> Answer:
        if header == Header.ENABLE_HOPPER and len(data) == 1:
            self.enabled = data[0] == 165
            return ACK
        if header == Header.TEST_HOPPER:
            return Answer(data=bytes((self.status_bits,)))
        if header == Header.HOPPER_STATUS:
            return Answer(data=self.status.payload())
        if header == Header.DISPENSE_HOPPER_COINS:
            if (self.security != "serial" or len(data) != 4 or data[:3] != self.serial
                    or not self.enabled or self.remaining or data[3] == 0):
                return NAK
            self.counter = self.counter % 255 + 1
            self.remaining, self.paid, self.unpaid = data[3], 0, 0
            self.timed_out = False
            return Answer(data=bytes((self.counter,)))
        return NAK

    def snapshot(self) -> dict[str, Any]:
        return {**super().snapshot(), "coins": self.coins, "enabled": self.enabled,
                "counter": self.counter, "remaining": self.remaining, "paid": self.paid,
                "unpaid": self.unpaid, "jammed": self.jammed, "fraud": self.fraud,
                "status_bits": self.status_bits, "total_paid": self.total_paid}
