"""A ccTalk bus on a pty: coin acceptor (2), hopper (3), bill validator (40), and line faults.

    sim = CcTalkSimulator()                    # or devices=[…], crc=True, echo=False
    path = sim.open_pty()                      # the serial port for the driver
    sim.insert_coin(1); sim.insert_coin("SE500A"); sim.insert_bill(2)
    sim.jam(); sim.reject(); sim.fraud_attempt(); sim.power_cycle(); sim.silence(2)
    sim.lose_reply(); sim.corrupt_byte(); sim.repeat_reply(); sim.garbage(b"\\x01\\xc8")
    await sim.wait_for(lambda: len(sim.coin_acceptor.credited) == 2); await sim.close()

Wire (device-protocols.md §4.1, frames from the driver's codec: one codec, two roles): every
byte the host sends is written straight back (the single-wire bus echo; ``echo=False`` for an
adaptor that strips it). Each whole frame addressed to a device that is not silenced is
answered at once with ``[host][N][device][0 | 5 NAK | 6 BUSY][data][check]``; frames to
unknown addresses get no answer, as on a real bus. Bytes that start no valid frame are dropped
one at a time by the shared FrameReader (resync).

Line faults, each for the next reply (of any device, or of ``address``): ``lose_reply`` (the
command is carried out, the reply is not sent), ``corrupt_byte`` (one bit of the header byte
flipped: bad checksum/CRC), ``repeat_reply`` (sent twice), ``nak_next`` / ``busy_next`` (the
command is not carried out); ``garbage(data)`` writes bytes now, or just before the next reply.
"""

from __future__ import annotations

import asyncio
import logging
import os
from collections import Counter
from collections.abc import Callable, Iterable
from typing import Any, TypeVar

from kassad.drivers.cctalk.frames import (
    ADDR_HOST,
    Frame,
    FrameReader,
    encode,
)
from kassad.simulators.cctalk.devices import (
    BUSY,
    NAK,
    SimBillValidator,
    SimCoinAcceptor,
    SimDevice,
    SimHopper,
)
from kassad.simulators.common import Changes, RawPty

_LOGGER = logging.getLogger(__name__)

_READ_SIZE = 4096
_D = TypeVar("_D", bound=SimDevice)
_T = TypeVar("_T")
# Coin acceptor error codes the verbs use by default (drivers/cctalk/events.py).
JAM_CODE = 14  # credit sensor blocked
REJECT_CODE = 1  # reject coin
FRAUD_CODE = 20  # coin-on-string mechanism activated


class CcTalkSimulator:
    def __init__(self, devices: Iterable[SimDevice] | None = None, *, crc: bool = False,
                 echo: bool = True, payout_interval: float = 0.01,
                 host_address: int = ADDR_HOST) -> None:
        if payout_interval < 0:
            msg = f"payout_interval must be >= 0, got {payout_interval}"
            raise ValueError(msg)
        chosen = list(devices) if devices is not None else [
            SimCoinAcceptor(), SimHopper(), SimBillValidator()]
        self.devices: dict[int, SimDevice] = {device.address: device for device in chosen}
        if len(self.devices) != len(chosen):
            msg = "two simulated devices share an address"
            raise ValueError(msg)
        self.crc = crc
        self.echo = echo
        #: Seconds per coin a hopper pays out.
        self.payout_interval = payout_interval
        self.host_address = host_address
        #: Every byte received from the host.
        self.received = bytearray()
        #: Every frame received, in order.
        self.frames: list[Frame] = []
        self.replies = 0
        self.lost_replies = 0
        #: Line faults applied so far, by kind ("lose", "corrupt", "repeat", "nak", "busy").
        self.injected: Counter[str] = Counter()
        # Pending line faults by (kind, address); address None: the next reply of anyone.
        self._faults: Counter[tuple[str, int | None]] = Counter()
        self._garbage_before_reply = bytearray()
        self._reader = FrameReader(crc=crc, host=host_address)
        self._pty: RawPty | None = None
        self._payouts: dict[int, asyncio.TimerHandle] = {}
        self._changes = Changes("ccTalk simulator")

    # -- devices ----------------------------------------------------------------------------

    def _first(self, kind: type[_D], address: int | None) -> _D:
        if address is not None:
            device = self.devices.get(address)
            if not isinstance(device, kind):
                msg = f"no {kind.__name__} at address {address}"
                raise ValueError(msg)
            return device
        for device in self.devices.values():
            if isinstance(device, kind):
                return device
        msg = f"no {kind.__name__} on this bus"
        raise ValueError(msg)

    @property
    def coin_acceptor(self) -> SimCoinAcceptor:
        return self._first(SimCoinAcceptor, None)

    @property
    def bill_validator(self) -> SimBillValidator:
        return self._first(SimBillValidator, None)

    @property
    def hopper(self) -> SimHopper:
        return self._first(SimHopper, None)

    # -- the port ---------------------------------------------------------------------------

    def open_pty(self) -> str:
        """Create the serial port (a raw pty); returns the path for the driver."""
        if self._pty is None:
            self._pty = RawPty(self._on_data, self._read_failed, _READ_SIZE)
            self._reader.reset()
        return self._pty.path

    @property
    def pty_path(self) -> str | None:
        return self._pty.path if self._pty is not None else None

    async def close(self) -> None:
        for timer in self._payouts.values():
            timer.cancel()
        self._payouts.clear()
        if self._pty is not None:
            self._pty.close()
            self._pty = None
        await self._changes.close()

    async def __aenter__(self) -> CcTalkSimulator:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

    # -- control verbs: money -----------------------------------------------------------------

    def insert_coin(self, coin: int | str, *, address: int | None = None) -> bool:
        """A coin by position (1–16) or id ("SE500A"); False if it was returned (inhibited)."""
        acceptor = self._first(SimCoinAcceptor, address)
        return self._changed(acceptor.insert(coin))

    def insert_bill(self, bill_type: int, *, escrow: bool | None = None,
                    address: int | None = None) -> bool:
        validator = self._first(SimBillValidator, address)
        return self._changed(validator.insert(bill_type, escrow=escrow))

    def coin_error(self, code: int, *, address: int | None = None) -> None:
        """A coin acceptor error event (A = 0, B = code)."""
        acceptor = self._first(SimCoinAcceptor, address)
        acceptor.add_event(0, code)
        self._changed(None)

    def jam(self, code: int = JAM_CODE, *, address: int | None = None) -> None:
        self.coin_error(code, address=address)

    def reject(self, code: int = REJECT_CODE, *, address: int | None = None) -> None:
        self.coin_error(code, address=address)

    def fraud_attempt(self, code: int = FRAUD_CODE, *, address: int | None = None) -> None:
        self.coin_error(code, address=address)

    def bill_event(self, code: int, *, address: int | None = None) -> None:
        """A bill validator event (A = 0, B = code): 14 stacker full, 6 jam, 9 tamper …"""
        validator = self._first(SimBillValidator, address)
        validator.add_event(0, code)
        self._changed(None)

    def set_hopper_coins(self, coins: int, *, address: int | None = None) -> None:
        hopper = self._first(SimHopper, address)
        hopper.coins = coins
        self._changed(None)

    def jam_hopper(self, on: bool = True, *, address: int | None = None) -> None:
        hopper = self._first(SimHopper, address)
        hopper.jammed = on
        self._changed(None)

    def hopper_fraud(self, on: bool = True, *, address: int | None = None) -> None:
        hopper = self._first(SimHopper, address)
        hopper.fraud = on
        self._changed(None)

    # -- control verbs: devices and the line --------------------------------------------------

    def power_cycle(self, address: int | None = None) -> None:
        """Power-up state (counter 0, all inhibited, hopper disabled); None: every device."""
        for device in self.devices.values():
            if address is None or device.address == address:
                device.reset()
                timer = self._payouts.pop(device.address, None)
                if timer is not None:
                    timer.cancel()
        self._changed(None)

    def silence(self, address: int, on: bool = True) -> None:
        """The device stops answering (on) or answers again."""
        self.devices[address].silent = on
        self._changed(None)

    def lose_reply(self, count: int = 1, *, address: int | None = None) -> None:
        self._faults["lose", address] += count

    def corrupt_byte(self, count: int = 1, *, address: int | None = None) -> None:
        self._faults["corrupt", address] += count

    def repeat_reply(self, count: int = 1, *, address: int | None = None) -> None:
        self._faults["repeat", address] += count

    def nak_next(self, count: int = 1, *, address: int | None = None) -> None:
        self._faults["nak", address] += count

    def busy_next(self, count: int = 1, *, address: int | None = None) -> None:
        self._faults["busy", address] += count

    def garbage(self, data: bytes, *, before_reply: bool = False) -> None:
        """Noise on the line: now, or just before the next reply (after the echo)."""
        if before_reply:
            self._garbage_before_reply += data
        else:
            self._write(data)

    async def wait_for(self, predicate: Callable[[], bool],
                       timeout: float = 5.0) -> None:  # noqa: ASYNC109
        """Return once ``predicate()`` holds, re-checked after every frame and verb."""
        await self._changes.wait_for(predicate, timeout, lambda: repr(self.state()))

    def requests(self, address: int, header: int) -> int:
        """How many ``header`` commands the device at ``address`` received."""
        return self.devices[address].requests[header]

    def state(self) -> dict[str, Any]:
        return {"pty": self.pty_path, "crc": self.crc, "echo": self.echo,
                "replies": self.replies, "lost_replies": self.lost_replies,
                "injected": dict(self.injected),
                "garbage_from_host": self._reader.garbage,
                "devices": {str(a): d.snapshot() for a, d in self.devices.items()}}

    # -- internals --------------------------------------------------------------------------

    def _changed(self, result: _T) -> _T:
        self._changes.changed()
        return result

    def _read_failed(self, error: OSError) -> None:
        _LOGGER.warning("ccTalk simulator: pty read failed: %s", error)

    def _on_data(self, data: bytes) -> None:
        self.received += data
        if self.echo:
            self._write(data)  # the host hears its own bytes first, as on the wire
        for frame in self._reader.feed(data):
            self.frames.append(frame)
            self._answer(frame)
        self._changes.changed()

    def _fault(self, kind: str, address: int) -> bool:
        """Consume one pending fault of ``kind`` for this device (its own ones first)."""
        for key in ((kind, address), (kind, None)):
            if self._faults[key]:
                self._faults[key] -= 1
                self.injected[kind] += 1
                return True
        return False

    def _answer(self, frame: Frame) -> None:
        device = self.devices.get(frame.dest)
        if device is None or device.silent:
            return
        address = device.address
        if self._fault("nak", address):
            answer = NAK
        elif self._fault("busy", address):
            answer = BUSY
        else:
            answer = device.handle(frame.header, frame.data)
        if isinstance(device, SimHopper) and device.remaining:
            self._schedule_payout(device)
        reply = encode(Frame(frame.src, device.address, answer.header, answer.data), self.crc)
        if self._fault("lose", address):
            self.lost_replies += 1
            return
        if self._fault("corrupt", address):
            reply = reply[:3] + bytes((reply[3] ^ 0x01,)) + reply[4:]
        if self._garbage_before_reply:
            self._write(bytes(self._garbage_before_reply))
            self._garbage_before_reply.clear()
        self._write(reply)
        self.replies += 1
        if self._fault("repeat", address):
            self._write(reply)

    def _schedule_payout(self, hopper: SimHopper) -> None:
        if hopper.address not in self._payouts:
            loop = asyncio.get_running_loop()
            self._payouts[hopper.address] = loop.call_later(self.payout_interval,
                                                           self._payout_tick, hopper)

    def _payout_tick(self, hopper: SimHopper) -> None:
        del self._payouts[hopper.address]
        if hopper.step():
            self._schedule_payout(hopper)
        self._changes.changed()

    def _write(self, data: bytes) -> None:
        if self._pty is None:
            return
        try:
            os.write(self._pty.master, data)
        except OSError as error:  # BlockingIOError: nobody drains the port, as on a real bus
            _LOGGER.warning("ccTalk simulator: %d byte(s) not written: %s", len(data), error)
