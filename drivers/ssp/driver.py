"""An ITL SSP note validator (NV9/NV10/NV200 …, unencrypted) as a :class:`CounterDevice`.

Layer: driver, over an :class:`SspLink` on a :class:`ReconnectingTransport` (9600 8N2).

Start-up, and again after every slave reset or loss (device-protocols.md §4.2, ITL practice)::

    [retransmit an unanswered POLL]  SYNC  HOST PROTOCOL VERSION 8 (FAIL -> 7 -> 6)
    SETUP REQUEST  GET SERIAL NUMBER  SET INHIBITS + ENABLE | DISABLE   then POLL every
    poll_interval

What each POLL event becomes:

* 0xEE credit(channel) -> Accepted, exactly once: each command's reply is handed up once by
  the link, and a repeated reply (the slave re-sends its last one to a retransmission) is
  matched by sequence bit, so a copy is never read as the next POLL's reply. A POLL that got
  no reply before the device went silent is retransmitted with its own bit when it answers
  again, before SYNC: a credit in a lost reply is recovered, not dropped.
* 0xEC rejected -> Rejected with LAST REJECT CODE's reason; 0xE1 note cleared from the front
  at reset -> Rejected.
* 0xEA/0xE9 jam, 0xE7 stacker full, 0xE3 cashbox removed -> Fault(active=True) when first
  reported; the unit repeats them in every POLL while they last, so one missing from a reply
  (or 0xE4 cashbox replaced) -> Fault(active=False). [U: repetition as the ITL manual
  describes conditions; a unit that reports them once would show them cleared at once.]
* 0xE6 fraud(channel), 0xE2 note cleared into the cashbox at reset -> Fault, one-shot (the
  device never says they cleared; the latter is a note in the cashbox that was not counted).
* 0xF1 slave reset -> the whole start-up again; 0xE8 disabled while we want it enabled -> ENABLE.
* No reply after the link's retries, or the port gone -> Connection(False) once, then retried
  with exponential back-off until it answers, then identified again -> Connection(True).

Note values: SETUP REQUEST gives them in major units (protocol >= 6: the expanded 4-byte
values; before: channel byte x value multiplier). ``minor_units(currency)`` gives the number
of minor-unit digits (default 2 for every currency) to turn them into ``value_minor``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from kassad.drivers.counter import (
    Accepted,
    ChannelInfo,
    Connection,
    CounterDevice,
    CounterEvent,
    EventCallback,
    Fault,
    Identity,
    Rejected,
)
from kassad.drivers.errors import DeviceGone, DriverError, ProtocolError, TransportError
from kassad.drivers.ssp.frames import (
    REJECT_REASONS,
    Command,
    Event,
    EventCode,
    SetupInfo,
    parse_poll,
    parse_serial,
    parse_setup_request,
)
from kassad.drivers.ssp.protocol import CommandFailed, SspError, SspLink
from kassad.drivers.transport.reconnect import ReconnectingTransport

_LOGGER = logging.getLogger(__name__)

UNIT_TYPES = {0x00: "validator", 0x03: "smart_hopper", 0x06: "smart_payout", 0x07: "nv11"}

#: Conditions the unit repeats in every POLL while they last: code -> (fault, detail).
_CONDITIONS: dict[int, tuple[str, str]] = {
    EventCode.SAFE_JAM: ("jam", "note jammed inside the validator (safe jam)"),
    EventCode.UNSAFE_JAM: ("jam", "note jammed where it can be pulled out (unsafe jam)"),
    EventCode.STACKER_FULL: ("stacker_full", "the stacker is full"),
    EventCode.CASHBOX_REMOVED: ("cashbox_removed", "the cashbox is removed"),
}


def two_decimals(currency: str) -> int:
    """Default ``minor_units``: every currency has 2 minor-unit digits."""
    return 2


@dataclass(frozen=True, slots=True)
class ValidatorTimings:
    #: Pause between POLLs (ITL practice 100-500 ms; units disable themselves if not polled).
    poll_interval: float = 0.2
    #: Per-attempt reply timeout and retransmissions (ITL SDK: 1 s, 3).
    reply_timeout: float = 1.0
    retries: int = 3
    write_timeout: float = 1.0
    #: Pause before trying a silent device again, doubling up to backoff_max.
    backoff_min: float = 0.5
    backoff_max: float = 10.0

    def __post_init__(self) -> None:
        if self.poll_interval < 0 or not 0 < self.backoff_min <= self.backoff_max:
            raise ValueError(f"bad timings: {self}")


class _SlaveReset(DriverError):
    """The unit reported 0xF1: it lost its configuration; start over."""


class NoteValidator(CounterDevice):
    """One SSP note validator; run :meth:`run` in the owner's TaskGroup."""

    def __init__(self, name: str, transport: ReconnectingTransport, *, on_event: EventCallback,
                 address: int = 0, timings: ValidatorTimings | None = None,
                 protocol_versions: Sequence[int] = (8, 7, 6),
                 minor_units: Callable[[str], int] = two_decimals) -> None:
        self.name = name
        self.transport = transport
        self.on_event = on_event
        self.timings = timings if timings is not None else ValidatorTimings()
        self.protocol_versions = tuple(protocol_versions)
        self.minor_units = minor_units
        t = self.timings
        self.link = SspLink(transport, address=address, timeout=t.reply_timeout,
                            retries=t.retries, write_timeout=t.write_timeout)
        #: The last SETUP REQUEST reply; None until the unit answered it.
        self.setup: SetupInfo | None = None
        self._identity: Identity | None = None
        self._online: bool | None = None  # the last Connection event's state
        self._ready = False  # set up: enable()/disable() wait for the poll loop to apply
        self._faults: set[int] = set()  # condition codes reported active
        self._want_enabled = False
        self._want_channels: frozenset[int] | None = None
        self._want_gen = 0
        self._done_gen = -1
        self._waiters: list[tuple[int, asyncio.Future[None]]] = []
        self._wake = asyncio.Event()

    @property
    def identity(self) -> Identity | None:
        return self._identity

    async def run(self) -> None:
        try:
            async with asyncio.TaskGroup() as group:
                group.create_task(self.transport.run(), name=f"{self.name}-transport")
                group.create_task(self._main(), name=f"{self.name}-ssp")
        finally:  # nobody is left to apply what enable()/disable() callers wait for
            self._ready = False
            self._fail_waiters(DeviceGone(f"{self.name}: driver stopped"))

    async def enable(self, channels: frozenset[int] | None = None) -> None:
        """Accept ``channels`` (1-based; None: all). Returns once the unit confirmed, or at
        once while it is offline (applied when it is back)."""
        self._want_enabled, self._want_channels = True, channels
        await self._changed()

    async def disable(self) -> None:
        self._want_enabled = False
        await self._changed()

    # -- the loop ---------------------------------------------------------------------------

    async def _main(self) -> None:
        delay = self.timings.backoff_min
        why = "identified"
        while True:
            await self.transport.connected.wait()
            try:
                await self._start(why)
                delay = self.timings.backoff_min
                why = "identified"
                await self._poll_loop()
            except _SlaveReset:
                _LOGGER.info("%s: slave reset reported: setting it up again", self.name)
                self._ready = False
                why = "set up again after a slave reset"
            except DeviceGone as exc:
                self._lost(exc)
            except (TransportError, ProtocolError) as exc:
                self._lost(exc)
                # Jitter: several units (or registers) must not retry in lockstep.
                await asyncio.sleep(delay * (0.5 + random.random() / 2))  # noqa: S311
                delay = min(delay * 2, self.timings.backoff_max)

    async def _start(self, why: str) -> None:
        self._ready = False
        if self.link.unanswered == Command.POLL:
            # Before SYNC, which would make the unit forget a reply we never got.
            payload = await self.link.resume()
            if payload is not None:
                await self._handle(parse_poll(payload, self.setup.protocol if self.setup else 6),
                                   starting=True)
        await self.link.sync()
        version = await self._negotiate()
        setup = parse_setup_request(await self.link.command(Command.SETUP_REQUEST))
        try:
            serial: str | None = str(parse_serial(
                await self.link.command(Command.GET_SERIAL_NUMBER)))
        except SspError:
            serial = None
        self.setup = setup
        self._identity = Identity(
            device=self.name, protocol="ssp", address=self.link.address,
            category=UNIT_TYPES.get(setup.unit_type, f"unit_type_{setup.unit_type:#04x}"),
            manufacturer="Innovative Technology", serial=serial, firmware=setup.firmware,
            channels=tuple(self._channel(c.channel, c.value, c.currency) for c in setup.channels))
        await self._apply()
        self._ready = True
        self._online = True
        _LOGGER.info("%s: set up: protocol %d, %s, serial %s, %d channel(s)", self.name,
                     version, setup.country, serial, len(setup.channels))
        self._emit(Connection(self.name, True, why, self._identity))

    async def _negotiate(self) -> int:
        for version in self.protocol_versions:
            try:
                await self.link.command(Command.HOST_PROTOCOL_VERSION, bytes([version]))
            except CommandFailed:
                continue
            return version
        raise ProtocolError(f"{self.name}: the unit supports none of protocol versions "
                            f"{self.protocol_versions}")

    def _channel(self, channel: int, value: int, currency: str) -> ChannelInfo:
        minor = value * 10 ** self.minor_units(currency) if value else None
        return ChannelInfo(channel, "note", currency, minor, f"{currency} {value}")

    async def _poll_loop(self) -> None:
        while True:
            self._wake.clear()  # before the POLL: an enable() during it cuts the pause short
            if self._done_gen != self._want_gen:
                await self._apply()
            assert self.setup is not None
            payload = await self.link.command(Command.POLL)
            await self._handle(parse_poll(payload, self.setup.protocol))
            with contextlib.suppress(TimeoutError):  # only our own timer: a cancel still raises
                async with asyncio.timeout(self.timings.poll_interval):
                    await self._wake.wait()

    async def _apply(self) -> None:
        """Send the wanted state (enable()/disable()) and release those waiting for it."""
        gen = self._want_gen
        try:
            if self._want_enabled:
                await self.link.command(Command.SET_INHIBITS, self._inhibit_mask())
                await self.link.command(Command.ENABLE)
            else:
                await self.link.command(Command.DISABLE)
        except DriverError as exc:
            self._fail_waiters(exc)
            raise
        self._done_gen = gen
        waiting, self._waiters = self._waiters, []
        for wanted, future in waiting:
            if wanted > gen:
                self._waiters.append((wanted, future))
            elif not future.done():
                future.set_result(None)

    def _inhibit_mask(self) -> bytes:
        count = len(self.setup.channels) if self.setup is not None else 16
        wanted = self._want_channels
        mask = sum(1 << (ch - 1) for ch in range(1, count + 1) if wanted is None or ch in wanted)
        return mask.to_bytes(max(2, (count + 7) // 8), "little")

    async def _changed(self) -> None:
        self._want_gen += 1
        self._wake.set()
        if not self._ready:
            return  # applied by the next start-up
        future = asyncio.get_running_loop().create_future()
        self._waiters.append((self._want_gen, future))
        await future

    # -- events -----------------------------------------------------------------------------

    async def _handle(self, events: list[Event], *, starting: bool = False) -> None:
        seen: set[int] = set()
        rejected = reset = disabled = False
        for event in events:
            code = event.code
            if code == EventCode.CREDIT and event.channel:
                self._emit(Accepted(self.name, event.channel))
            elif code == EventCode.REJECTED:
                rejected = True
            elif code == EventCode.SLAVE_RESET:
                reset = True
            elif code == EventCode.DISABLED:
                disabled = True
            elif code in _CONDITIONS:
                seen.add(code)
            elif code == EventCode.CASHBOX_REPLACED:
                seen.discard(EventCode.CASHBOX_REMOVED)
            elif code == EventCode.FRAUD_ATTEMPT:
                self._emit(Fault(self.name, "fraud_attempt",
                                 f"fraud attempt on channel {event.channel}", code))
            elif code == EventCode.NOTE_CLEARED_INTO_CASHBOX:
                self._emit(Fault(self.name, "note_cleared_into_cashbox",
                                 f"a channel {event.channel} note was moved into the cashbox at "
                                 "reset and not counted: count it by hand", code))
            elif code == EventCode.NOTE_CLEARED_FROM_FRONT:
                self._emit(Rejected(self.name, "note_cleared_from_front", code))
            elif event.raw:
                _LOGGER.warning("%s: unknown event %s, rest of the reply ignored: %s",
                                self.name, event.name, event.raw.hex(" "))
            else:
                _LOGGER.debug("%s: %s %s", self.name, event.name, event.channel or "")
        self._conditions(seen)
        if rejected:
            await self._rejected()
        if reset and not starting:
            raise _SlaveReset("slave reset")
        if disabled and self._want_enabled and not starting:
            _LOGGER.info("%s: disabled by itself while wanted enabled: enabling", self.name)
            await self.link.command(Command.ENABLE)

    def _conditions(self, seen: set[int]) -> None:
        for code in sorted(seen - self._faults):
            fault, detail = _CONDITIONS[code]
            self._emit(Fault(self.name, fault, detail, code, active=True))
        for code in sorted(self._faults - seen):
            fault, detail = _CONDITIONS[code]
            self._emit(Fault(self.name, fault, f"cleared: {detail}", code, active=False))
        self._faults = seen

    async def _rejected(self) -> None:
        try:
            payload = await self.link.command(Command.LAST_REJECT_CODE)
        except SspError as exc:
            _LOGGER.info("%s: no reject code: %s", self.name, exc)
            self._emit(Rejected(self.name, "rejected"))
            return
        code = payload[0] if payload else None
        reason = REJECT_REASONS.get(code, "rejected") if code is not None else "rejected"
        self._emit(Rejected(self.name, reason, code))

    # -- plumbing ---------------------------------------------------------------------------

    def _lost(self, exc: DriverError) -> None:
        self._ready = False
        self._fail_waiters(exc)
        if self._online is not False:  # once per loss; also when it never answered
            self._online = False
            self._emit(Connection(self.name, False, str(exc)))
        else:
            _LOGGER.debug("%s: still not answering: %s", self.name, exc)

    def _fail_waiters(self, exc: DriverError) -> None:
        waiting, self._waiters = self._waiters, []
        for _, future in waiting:
            if not future.done():
                future.set_exception(exc)

    def _emit(self, event: CounterEvent) -> None:
        _LOGGER.debug("%s: %s", self.name, event)
        self.on_event(event)
