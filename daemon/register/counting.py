"""Counting runs: the cashier feeds the till's cash through a counter; kassad counts it by
denomination, exactly once per piece the device accepted.

``counter.count start`` enables the device and starts a run; the run ends on ``stop`` or after
``quiet_time`` without a piece, disables the device, and its counts become the start command's
result and a ``counter.counted`` event (which the session keeps: ``session.close`` can then say
``from_counter``). A device's faults and connection changes are journaled as they come. A run
interrupted by a daemon restart is not resumed: the cash is still in hand, count it again.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from functools import partial
from typing import Any

from kassad.drivers.counter import (
    Accepted,
    ChannelInfo,
    Connection,
    CounterDevice,
    CounterEvent,
    Dispensed,
    Fault,
    Rejected,
)

from ..contract.errors import CommandRefused, ErrorCode
from ..contract.events import utc_timestamp
from ..journal.journal import until_written
from ..journal.store import EventDraft
from ..ledger.denominations import Count, count_total, counts_to_json

_LOGGER = logging.getLogger(__name__)

Emit = Callable[[list[EventDraft]], Awaitable[None]]


@dataclass(frozen=True, slots=True)
class Denominated:
    currency: str
    value: int


@dataclass
class Run:
    run_id: str
    device: str
    cause: dict[str, Any]
    started: float
    last_piece: float
    counts: dict[str, Count] = field(default_factory=dict)
    unknown_channels: dict[int, int] = field(default_factory=dict)
    rejected: int = 0
    done: asyncio.Event = field(default_factory=asyncio.Event)

    def add(self, piece: Denominated | None, channel: int, now: float) -> None:
        self.last_piece = now
        if piece is None:
            self.unknown_channels[channel] = self.unknown_channels.get(channel, 0) + 1
            return
        counts = self.counts.setdefault(piece.currency, {})
        counts[piece.value] = counts.get(piece.value, 0) + 1

    def result(self) -> dict[str, Any]:
        return {
            "run_id": self.run_id, "device": self.device,
            "counts": {c: counts_to_json(n) for c, n in sorted(self.counts.items())},
            "totals": {c: count_total(n) for c, n in sorted(self.counts.items())},
            "pieces": sum(sum(n.values()) for n in self.counts.values()),
            "rejected": self.rejected,
            "unknown_channels": {str(k): v for k, v in sorted(self.unknown_channels.items())},
        }


#: Faults that last until the device says they cleared (``active`` false): the register's
#: state lists them per counter while they last, so the store shows them. A jam also clears
#: when the device takes a piece again (a ccTalk coin acceptor never reports a jam cleared),
#: and every one when the device comes back after a reset (it reports again what still is).
#: The others (a fraud attempt, a sensor timeout) are events only.
LASTING_FAULTS = frozenset({"jam", "stacker_full", "stacker_removed", "cashbox_removed"})


class Counters:
    """The configured counters, their events, and at most one counting run per counter."""

    def __init__(self, devices: dict[str, CounterDevice],
                 channel_maps: dict[str, dict[int, Denominated]], quiet_time: dict[str, float],
                 emit: Emit, session_id: Callable[[], str | None],
                 clock: Callable[[], float] = time.monotonic) -> None:
        self._session_id = session_id
        self.devices = devices
        self._maps = channel_maps
        self._quiet = quiet_time
        self._emit = emit
        self._clock = clock
        self._runs: dict[str, Run] = {}
        self._connected: dict[str, bool] = dict.fromkeys(devices, False)
        self._faults: dict[str, set[str]] = {name: set() for name in devices}
        self._pending: asyncio.Queue[list[EventDraft]] = asyncio.Queue()
        self._wake = asyncio.Event()
        #: Called with a counter's name on each connected/disconnected report (start-up probe).
        self.on_connection: Callable[[str], None] | None = None

    def reset_connections(self) -> None:
        self._connected = dict.fromkeys(self.devices, False)

    # -- events from the drivers (callbacks, on the loop) -----------------------------------

    def on_event(self, event: CounterEvent) -> None:
        now = self._clock()
        if isinstance(event, Accepted):
            lasting = self._faults.setdefault(event.device, set())
            if "jam" in lasting:
                lasting.discard("jam")
                self._queue("counter.fault", {"device": event.device, "fault": "jam",
                                              "detail": "cleared: it took a piece again",
                                              "code": None, "active": False})
            run = self._runs.get(event.device)
            if run is None:
                _LOGGER.warning("%s accepted a piece with no counting run: not counted",
                                event.device)
                self._queue("counter.fault", {"device": event.device, "fault": "unexpected_credit",
                                              "detail": f"channel {event.channel} outside a run"})
                return
            run.add(self.denomination(event.device, event.channel), event.channel, now)
            self._wake.set()
        elif isinstance(event, Rejected):
            run = self._runs.get(event.device)
            if run is not None:
                run.rejected += 1
                run.last_piece = now
        elif isinstance(event, Fault):
            if event.fault in LASTING_FAULTS:
                lasting = self._faults.setdefault(event.device, set())
                if event.active:
                    lasting.add(event.fault)
                else:
                    lasting.discard(event.fault)
            self._queue("counter.fault", {"device": event.device, "fault": event.fault,
                                          "detail": event.detail, "code": event.code,
                                          "active": event.active})
        elif isinstance(event, Connection):
            if event.connected and not self._connected.get(event.device, False):
                self._faults[event.device] = set()  # back after a reset: it says again
            self._connected[event.device] = event.connected
            if self.on_connection is not None:
                self.on_connection(event.device)
            data: dict[str, Any] = {"device": event.device, "connected": event.connected,
                                    "reason": event.reason}
            if event.identity is not None:
                i = event.identity
                data["identity"] = {"protocol": i.protocol, "address": i.address,
                                    "category": i.category, "manufacturer": i.manufacturer,
                                    "product": i.product, "serial": i.serial,
                                    "firmware": i.firmware}
            self._queue("counter.status", data)
        elif isinstance(event, Dispensed):
            self._queue("counter.dispensed", {"device": event.device, "paid": event.paid,
                                              "unpaid": event.unpaid,
                                              "remaining": event.remaining})

    def _queue(self, kind: str, data: dict[str, Any]) -> None:
        self._pending.put_nowait([EventDraft(kind, utc_timestamp(), data=data)])

    def denomination(self, device: str, channel: int) -> Denominated | None:
        """The configured mapping first; then what the device itself says of the channel."""
        configured = self._maps.get(device, {}).get(channel)
        if configured is not None:
            return configured
        identity = self.devices[device].identity
        info: ChannelInfo | None = None
        if identity is not None:
            info = next((c for c in identity.channels if c.channel == channel), None)
        if info is None or info.currency is None or info.value_minor is None:
            return None
        return Denominated(info.currency, info.value_minor)

    # -- running ----------------------------------------------------------------------------

    async def run(self) -> None:
        async with asyncio.TaskGroup() as group:
            group.create_task(self._pump(), name="counter-events")
            group.create_task(self._quiet_timer(), name="counter-quiet")
            for name, device in self.devices.items():
                group.create_task(device.run(), name=f"counter-{name}")

    async def _pump(self) -> None:
        while True:
            drafts = await self._pending.get()
            # Coins and notes counted: they wait for a full disk, in order, never dropped.
            try:
                await until_written(partial(self._emit, drafts), "counter events")
            except Exception:  # a bug: the counter goes on, the log says so
                _LOGGER.exception("counter events could not be journaled")

    async def _quiet_timer(self) -> None:
        while True:
            self._wake.clear()
            deadlines = [run.last_piece + self._quiet[run.device] for run in self._runs.values()]
            timeout = None if not deadlines else max(0.0, min(deadlines) - self._clock())
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(timeout):
                    await self._wake.wait()
            now = self._clock()
            for run in list(self._runs.values()):
                if now - run.last_piece >= self._quiet[run.device]:
                    await self._end(run, "quiet")

    # -- commands ---------------------------------------------------------------------------

    def check_start(self, device: str) -> None:
        if device not in self.devices:
            known = ", ".join(sorted(self.devices)) or "none"
            raise CommandRefused(ErrorCode.DEVICE_UNAVAILABLE,
                                 f"no counter named {device!r} is configured (configured: "
                                 f"{known})", {"device": device})
        if not self._connected.get(device):
            raise CommandRefused(ErrorCode.DEVICE_UNAVAILABLE,
                                 f"counter {device} is not connected", {"device": device})
        if device in self._runs:
            raise CommandRefused(ErrorCode.INVALID_PAYLOAD,
                                 f"counter {device} is already counting (run "
                                 f"{self._runs[device].run_id}); stop it first",
                                 {"device": device})

    def check_stop(self, device: str) -> None:
        if device not in self._runs:
            raise CommandRefused(ErrorCode.INVALID_PAYLOAD,
                                 f"counter {device} has no counting run to stop",
                                 {"device": device})

    async def start(self, device: str, cause: dict[str, Any]) -> Run:
        now = self._clock()
        run = Run(uuid.uuid4().hex, device, cause, now, now)
        self._runs[device] = run
        self._wake.set()
        try:
            await self.devices[device].enable()
        except Exception as e:
            self._runs.pop(device, None)
            raise CommandRefused(ErrorCode.DEVICE_UNAVAILABLE,
                                 f"counter {device} could not be enabled: {e}",
                                 {"device": device}) from e
        return run

    async def stop(self, device: str) -> dict[str, Any]:
        run = self._runs[device]
        await self._end(run, "stopped")
        return run.result()

    async def _end(self, run: Run, why: str) -> None:
        if self._runs.get(run.device) is not run:
            return
        del self._runs[run.device]
        try:
            await self.devices[run.device].disable()
        except Exception as e:  # the device is gone: the run's counts stand
            _LOGGER.warning("counter %s could not be disabled after its run: %s", run.device, e)
        _LOGGER.info("counting run %s on %s ended (%s): %s", run.run_id, run.device, why,
                     run.result()["totals"])
        # Journaled before anyone hears the run ended: a session.close from_counter sent right
        # after the stop finds it.
        try:
            await self._emit([EventDraft("counter.counted", utc_timestamp(), self._session_id(),
                                         {**run.result(), "ended": why}, run.cause)])
        finally:
            run.done.set()

    def snapshot(self) -> dict[str, Any]:
        """Per counter: connected, its lasting faults, counting, and the run's live count."""
        out: dict[str, Any] = {}
        for name in self.devices:
            run = self._runs.get(name)
            out[name] = {"connected": self._connected.get(name, False),
                         "faults": sorted(self._faults.get(name, ())),
                         "counting": run is not None,
                         "run": run.result() if run is not None else None}
        return out
