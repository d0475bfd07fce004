"""A ccTalk payout hopper as a :class:`CounterDevice`: enable, dispense, payout progress, faults.

Layer: driver, over a shared :class:`CcTalkBus`. device-protocols.md §4.1::

    164 enable hopper        [165] = enable, [0] = disable       (enable() / disable())
    167 dispense coins       [serial LSB][serial][serial MSB][N]  "ITA serial" form; the
                             serial is the 242 reply, byte for byte. Reply [event counter].
    166 hopper status        [event counter][remaining][last payout paid][last payout unpaid]
    163 test hopper          [status bits]  b0 max current, b1 payout timeout, b2 motor
                             reversed, b3/b4 opto fraud, b5 opto blocked in payout, b7 disabled

Polling: 166 every poll_interval while a payout runs, every idle_poll_interval otherwise (a
ccTalk bus at 9600 baud is shared: an idle hopper need not take a tenth of it); each change
of (counter, remaining, paid, unpaid) is one Dispensed(paid, unpaid, remaining) event. 163
every test_interval; each status bit that sets is Fault(name, active=True), each that clears
Fault(active=False).

Why dispense is careful: 167 is not idempotent. The bus retries it only after NAK / BUSY
(the hopper did nothing). After a lost reply or a garbled echo the 166 event counter says
whether the command was taken: if it moved the payout runs; if not, DispenseNotStarted
(safe to call again). Hoppers that want the encrypted form (8-byte cipher after 160/161)
NAK the serial form: DispenseRefused says so rather than retrying for ever.
"""

from __future__ import annotations

import asyncio
import logging
import math

from kassad.drivers.cctalk.device import CcTalkDevice, DeviceReset
from kassad.drivers.cctalk.events import hopper_faults
from kassad.drivers.cctalk.frames import (
    ADDR_HOPPER,
    DEFAULT_CURRENCIES,
    Header,
    HopperStatus,
    parse_hopper_status,
    parse_hopper_test,
)
from kassad.drivers.cctalk.protocol import (
    BusCollision,
    CcTalkBus,
    CcTalkError,
    CcTalkNak,
    CcTalkTimeout,
)
from kassad.drivers.counter import Dispensed, EventCallback, Fault
from kassad.drivers.errors import DeviceGone

_LOGGER = logging.getLogger(__name__)

_ENABLE = b"\xa5"  # 165: any other value disables


class DispenseRefused(CcTalkError):
    """The hopper NAKed the dispense: nothing was paid."""


class DispenseNotStarted(CcTalkError):
    """No reply to the dispense, and the hopper's event counter did not move: nothing was
    paid; calling dispense() again is safe."""


class Hopper(CcTalkDevice):
    """A ccTalk hopper (address 3 by default); it has no channels."""

    category = "Payout"

    def __init__(self, bus: CcTalkBus, name: str, *, address: int = ADDR_HOPPER,
                 on_event: EventCallback | None = None, poll_interval: float = 0.1,
                 idle_poll_interval: float = 1.0, reconnect_interval: float = 1.0,
                 test_interval: float = 1.0) -> None:
        super().__init__(bus, name, address=address, on_event=on_event,
                         poll_interval=poll_interval, reconnect_interval=reconnect_interval,
                         currencies=DEFAULT_CURRENCIES)
        #: Seconds between 166 polls while no payout runs.
        self.idle_poll_interval = idle_poll_interval
        #: Seconds between 163 status tests.
        self.test_interval = test_interval
        #: The last 166 reading.
        self.status: HopperStatus | None = None
        #: Status bits set at the last 163 test, by fault name.
        self.faults: frozenset[str] = frozenset()
        self._tested_at = -math.inf
        self._dispense_lock = asyncio.Lock()  # one "is it idle? then pay" at a time

    async def dispense(self, coins: int) -> None:
        """Start paying out ``coins`` (1–255); returns once the hopper took the command.
        Progress comes as Dispensed events. Needs enable() first.

        Raises DispenseRefused (NAK), DispenseNotStarted (no reply, nothing paid),
        CcTalkTimeout (no reply and the outcome unknown: do not repeat blindly), DeviceGone.
        """
        if not 1 <= coins <= 255:
            msg = f"coins must be 1..255, got {coins}"
            raise ValueError(msg)
        header = Header.DISPENSE_HOPPER_COINS
        if not self.online:
            msg = f"{self.name}: not connected"
            raise DeviceGone(msg)
        if not self.enabled:
            raise CcTalkError(self.address, header, "the hopper is disabled: enable() first")
        if self.serial_bytes is None or len(self.serial_bytes) != 3:
            raise CcTalkError(self.address, header,
                              "the hopper gave no 3-byte serial number (242), which the "
                              "serial-number dispense form needs")
        async with self._dispense_lock:
            await self._dispense(coins, self.serial_bytes)
        self.poll_now()  # progress from now on, at poll_interval
        _LOGGER.info("%s: dispensing %d coin(s)", self.name, coins)

    async def _dispense(self, coins: int, serial: bytes) -> None:
        header = Header.DISPENSE_HOPPER_COINS
        before = await self._read_status()
        if before.remaining:
            raise CcTalkError(self.address, header,
                              f"a payout is still running ({before.remaining} coins to go)")
        try:
            await self.request(header, serial + bytes((coins,)), idempotent=False)
        except CcTalkNak as exc:
            raise DispenseRefused(
                self.address, header,
                "NAK to the serial-number form [serial][N]: the hopper may want the "
                "encrypted form (160/161 cipher), which kassad does not implement, or it "
                "refuses payouts now (empty, fault)") from exc
        except (CcTalkTimeout, BusCollision) as exc:
            after = await self._read_status()  # raises CcTalkTimeout if still silent
            if after.counter == before.counter:
                raise DispenseNotStarted(
                    self.address, header,
                    f"no valid reply ({exc}) and the event counter did not move") from exc
            _LOGGER.info("%s: dispense reply lost, but the event counter moved %d -> %d: "
                         "it runs", self.name, before.counter, after.counter)

    # -- CcTalkDevice -----------------------------------------------------------------------

    async def _resume(self) -> str:
        # The first reading is the baseline: the last payout before us is not reported.
        status = await self._read_status()
        note = "identified"
        if self.status is not None and self.status.counter and status.counter == 0:
            note = "identified; it was reset or power-cycled while away"
        self.status = status
        await self._apply()
        return note

    async def _resumed(self) -> None:
        await self._test()

    async def _poll(self) -> None:
        status = await self._read_status()
        previous, self.status = self.status, status
        if previous is not None and previous.counter and status.counter == 0:
            msg = f"device reset or power-cycled: hopper event counter {previous.counter} -> 0"
            raise DeviceReset(msg)
        if status != previous:
            self.emit(Dispensed(self.name, paid=status.paid, unpaid=status.unpaid,
                                remaining=status.remaining))
        if self._now() - self._tested_at >= self.test_interval:
            await self._test()

    def _poll_delay(self) -> float:
        paying = self.status is not None and self.status.remaining > 0
        return self.poll_interval if paying else self.idle_poll_interval

    async def _write_state(self, enabled: bool, channels: frozenset[int] | None) -> None:
        await self.request(Header.ENABLE_HOPPER, _ENABLE if enabled else b"\x00")

    # -- internals --------------------------------------------------------------------------

    async def _read_status(self) -> HopperStatus:
        return parse_hopper_status(await self.request(Header.HOPPER_STATUS))

    async def _test(self) -> None:
        bits = parse_hopper_test(await self.request(Header.TEST_HOPPER))
        self._tested_at = self._now()
        faults = hopper_faults(bits)
        if not self.enabled:
            faults -= {"payout_disabled"}  # as we asked
        for fault in sorted(faults - self.faults):
            self.emit(Fault(self.name, fault, f"test hopper: {fault} (status {bits:#04x})",
                            bits, True))
        for fault in sorted(self.faults - faults):
            self.emit(Fault(self.name, fault, f"test hopper: {fault} cleared", bits, False))
        self.faults = faults

    @staticmethod
    def _now() -> float:
        return asyncio.get_running_loop().time()
