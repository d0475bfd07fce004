"""The register's devices as the service sees them: printer status, the drawer, print jobs.

Everything a device says becomes a journaled event (``printer.status`` on change, the drawer's
``drawer.*`` events, ``print.job`` state changes), pumped through one queue so the journal
gets them in the order they happened. Drawer kicks go out between job chunks, never behind a
whole receipt; print jobs run one at a time, durable in the journal, and wait (until they
expire) while the printer cannot print.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import replace
from functools import partial
from typing import Any

from kassad.drivers.drawer.machine import (
    DrawerEvent,
    DrawerMachine,
    DrawerState,
    DrawerTimings,
    sensor_is_open,
)
from kassad.drivers.drawer.serial_drawer import SerialDrawer, SerialDrawerProtocol
from kassad.drivers.errors import TransportError
from kassad.drivers.escpos.printer import JobStopped, Printer, PrinterTimings
from kassad.drivers.escpos.status import PrinterStatus
from kassad.drivers.transport.reconnect import ReconnectingTransport
from kassad.drivers.transport.serial import SerialTransport

from ..config import DevicesConfig, PrinterConfig, SerialDrawerConfig, SerialTransportConfig
from ..contract.errors import CommandRefused, ErrorCode
from ..contract.events import utc_timestamp
from ..journal.journal import until_written
from ..journal.store import EventDraft, PrintJobRecord
from .counter_devices import channel_map, make_counters
from .counting import Counters
from .transports import make_transport

_LOGGER = logging.getLogger(__name__)

Emit = Callable[[list[EventDraft]], Awaitable[None]]
SaveJob = Callable[[PrintJobRecord, list[EventDraft]], Awaitable[None]]
FINAL_JOB_STATES = frozenset({"printed", "failed", "expired", "indeterminate"})


def printer_summary(status: PrinterStatus | None, connected: bool) -> dict[str, Any]:
    if status is None:
        return {"connected": connected, "online": False, "state": "unknown" if connected
                else "disconnected"}
    return {"connected": connected, "online": status.online, "cover_open": status.cover_open,
            "paper": status.paper, "cutter_error": status.cutter_error, "error": status.error,
            "state": "ready" if status.can_print else "not_ready"}


def chunk_bytes(config: PrinterConfig) -> int:
    """Job bytes written (and flushed) at a time: about 10 ms on a serial line (115 bytes at
    115200 baud, 19 at 19200), so a drawer kick never waits longer behind a receipt."""
    if isinstance(config.transport, SerialTransportConfig):
        return max(16, config.transport.baudrate // 1000)
    return 512


def not_ready_reason(status: PrinterStatus | None, connected: bool) -> str | None:
    """Why the printer cannot print now (the reason a job waits), or None if it can."""
    if not connected:
        return "offline"
    if status is None:
        return "no_status"
    if status.paper == "out":
        return "paper_out"
    if status.cover_open:
        return "cover_open"
    if status.error:
        return "printer_error"
    if not status.online:
        return "offline"
    return None


class Devices:
    def __init__(self, config: DevicesConfig, *, emit: Emit, save_job: SaveJob,
                 usb_backend: Any = None, clock: Callable[[], float] = time.monotonic,
                 crash_point: Callable[[str], None] = lambda point: None,
                 session_id: Callable[[], str | None] = lambda: None) -> None:
        self.config = config
        self._emit = emit
        self._save_job = save_job
        self._clock = clock
        self._usb_backend = usb_backend
        self._crash = crash_point
        self._pending: asyncio.Queue[list[EventDraft]] = asyncio.Queue()
        self._published: dict[str, Any] | None = None
        self._drawer_wake = asyncio.Event()
        self._drawer_changed = asyncio.Event()
        # Devices not yet heard from since start (connected or not): READY waits for them.
        self._unprobed: set[str] = set()
        self._probed = asyncio.Event()
        self.printer: Printer | None = None
        self.drawer: DrawerMachine | None = None
        self.jobs: PrintJobs | None = None
        if config.printer is not None:
            self.printer = self._make_printer(config.printer)
            self.jobs = PrintJobs(self.printer, config.printer, save_job, crash_point)
        self.serial_drawer: SerialDrawer | None = None
        self._box_reachable: bool | None = None  # unknown until the box's first answer
        self.counters: Counters | None = None
        if config.counters:
            self.counters = self._make_counters(config, session_id)
        if config.drawer is not None:
            d = config.drawer
            self.drawer = DrawerMachine(DrawerTimings(d.open_timeout, d.kick_retries,
                                                      d.left_open_after))
            if d.via == "serial" and d.serial is not None:
                self.serial_drawer = self._make_serial_drawer(d.serial)
        self._unprobed = {*(["printer"] if self.printer else []),
                          *(["drawer"] if self.serial_drawer else []),
                          *(self.counters.devices if self.counters else [])}
        if self.counters is not None:
            self.counters.on_connection = self._mark_probed
        self._mark_probed(None)

    # -- start-up probe, status words, reload -----------------------------------------------

    def _mark_probed(self, name: str | None) -> None:
        self._unprobed.discard(name or "")
        if not self._unprobed:
            self._probed.set()

    def probe_timeout(self) -> float:
        """The longest a first answer may take: the slowest open plus a status round."""
        c = self.config
        waits = [0.0]
        if c.printer is not None:
            waits.append(c.printer.open_timeout + c.printer.status_timeout)
        if c.drawer is not None and c.drawer.serial is not None:
            waits.append(5.0 + c.drawer.serial.reply_timeout)
        waits += [5.0 + 3 * counter.response_timeout for counter in c.counters]
        return max(waits) + 1.0

    async def wait_probed(self) -> None:
        """Return once every device has said connected or not, or after probe_timeout()."""
        try:
            async with asyncio.timeout(self.probe_timeout()):
                await self._probed.wait()
        except TimeoutError:
            _LOGGER.warning("no first answer yet from %s; starting without it",
                            ", ".join(sorted(self._unprobed)))

    def describe(self) -> str:
        names = [n for n, present in (("the printer", self.printer), ("the drawer", self.drawer))
                 if present]
        names += [f"counter {name}" for name in (self.counters.devices if self.counters else ())]
        return ", ".join(names)

    def status_words(self) -> list[str]:
        """Each device in a few words, for the STATUS= line."""
        words: list[str] = []
        snap = self.snapshot()
        if self.printer is not None:
            printer = snap["printer"]
            reason = not_ready_reason(self.printer.status, self.printer.transport.is_open)
            words.append(f"printer {'ready' if reason is None else reason.replace('_', ' ')}"
                         if printer.get("connected") else "printer disconnected")
        if self.drawer is not None:
            words.append(f"drawer {self.drawer.state.value.replace('_', ' ')}")
        for name, counter in snap["counters"].items():
            words.append(f"{name} {'counting' if counter['counting'] else 'connected'}"
                         if counter["connected"] else f"{name} disconnected")
        return words

    def reconfigure(self, config: DevicesConfig) -> None:
        """A reload: drawer pulse, sensor level and timings, receipt expiry. Which devices
        exist and how they are reached stay (``kassad.daemon.config.RELOADABLE``)."""
        self.config = config
        if self.drawer is not None and config.drawer is not None:
            d = config.drawer
            self.drawer.timings = DrawerTimings(d.open_timeout, d.kick_retries,
                                                d.left_open_after)
            self._drawer_wake.set()  # deadlines move with the timings
        if self.jobs is not None and config.printer is not None:
            self.jobs.reconfigure(config.printer)

    def _make_printer(self, config: PrinterConfig) -> Printer:
        transport = ReconnectingTransport(
            lambda: make_transport(config.transport, self._usb_backend),
            open_timeout=config.open_timeout,
            backoff_min=config.reconnect_min, backoff_max=config.reconnect_max,
            on_state=self._on_transport_state)
        timings = PrinterTimings(config.write_timeout, config.status_interval,
                                 config.status_timeout, config.completion_timeout,
                                 chunk_size=chunk_bytes(config))
        return Printer(transport, timings=timings, asb=config.asb, completion=True,
                       on_status=self._on_status)

    def _make_serial_drawer(self, config: SerialDrawerConfig) -> SerialDrawer:
        path, baud = str(config.path), config.baudrate
        transport = ReconnectingTransport(
            lambda: SerialTransport(path, baud), open_timeout=5.0,
            backoff_min=config.reconnect_min, backoff_max=config.reconnect_max,
            name=f"serial:{path}")
        protocol = SerialDrawerProtocol(config.open_command, config.status_command,
                                        config.open_mask, config.open_value)
        return SerialDrawer(transport, protocol, poll_interval=config.poll_interval,
                            reply_timeout=config.reply_timeout,
                            write_timeout=config.write_timeout, on_sensor=self._on_drawer_sensor)

    def _make_counters(self, config: DevicesConfig,
                       session_id: Callable[[], str | None]) -> Counters:
        # The devices call back into the Counters that owns them: build it, then them.
        counters = Counters({}, {c.name: channel_map(c) for c in config.counters},
                            {c.name: c.quiet_time for c in config.counters}, self._emit,
                            session_id, self._clock)
        counters.devices.update(make_counters(config.counters, counters.on_event))
        counters.reset_connections()
        return counters

    @property
    def kicker_connected(self) -> bool:
        """Whether whatever kicks the drawer (the printer, or its own interface) is there."""
        if self.serial_drawer is not None:
            return self.serial_drawer.is_connected
        return self.printer is not None and self.printer.transport.is_open

    # -- running ----------------------------------------------------------------------------

    async def run(self) -> None:
        async with asyncio.TaskGroup() as group:
            group.create_task(self._pump(), name="device-events")
            if self.printer is not None:
                group.create_task(self.printer.run(), name="printer")
            if self.drawer is not None:
                group.create_task(self._drawer_timer(), name="drawer")
            if self.serial_drawer is not None:
                group.create_task(self.serial_drawer.run(), name="serial-drawer")
            if self.counters is not None:
                group.create_task(self.counters.run(), name="counters")
            if self.jobs is not None:
                group.create_task(self.jobs.run(), name="print-jobs")

    async def _pump(self) -> None:
        while True:
            drafts = await self._pending.get()
            # What a device said happened: it waits for a full disk (those after it queue up
            # behind it, in order) rather than be dropped.
            try:
                await until_written(partial(self._emit, drafts),
                                    f"device events {[d.type for d in drafts]}")
            except Exception:  # a bug: the device goes on, the log says so
                _LOGGER.exception("device events could not be journaled: %s",
                                  [d.type for d in drafts])

    def _queue(self, events: list[DrawerEvent] | list[tuple[str, dict[str, Any]]],
               session_id: str | None = None) -> None:
        now = utc_timestamp()
        drafts = [EventDraft(e.type, now, data=e.data) if isinstance(e, DrawerEvent)
                  else EventDraft(e[0], now, data=e[1]) for e in events]
        if drafts:
            self._pending.put_nowait(drafts)

    def snapshot(self) -> dict[str, Any]:
        printer = None
        if self.printer is not None:
            printer = {"configured": True, "name": self.printer.name,
                       **printer_summary(self.printer.status, self.printer.transport.is_open)}
        drawer = None
        if self.drawer is not None:
            drawer = {"configured": True, "state": self.drawer.state.value,
                      "connected": self.kicker_connected}
        return {"printer": printer or {"configured": False, "state": "unavailable"},
                "drawer": drawer or {"configured": False, "state": "unavailable"},
                "counters": self.counters.snapshot() if self.counters is not None else {}}

    # -- status -----------------------------------------------------------------------------

    def _on_transport_state(self, state: str, detail: str) -> None:
        if state != "connected":
            self._mark_probed("printer")  # it answered with a failure: probed
        _LOGGER.info("printer %s: %s", state, detail)
        self._publish_printer(reason=f"{state}: {detail}")

    def _on_status(self, status: PrinterStatus | None, why: str) -> None:
        self._mark_probed("printer")
        self._publish_printer(reason=why)
        if self.config.drawer is None or self.config.drawer.via != "printer":
            return
        is_open = (None if status is None
                   else sensor_is_open(status.drawer_pin3_high, self.config.drawer.open_level))
        self._on_drawer_sensor(is_open, why)

    def _on_drawer_sensor(self, is_open: bool | None, why: str) -> None:
        if self.serial_drawer is not None:
            self._mark_probed("drawer")
            self._drawer_box_reachable(is_open is not None, why)
        if self.drawer is None:
            return
        if is_open is None:
            self.drawer.sensor_lost()
        else:
            self._queue(self.drawer.sensor(self._clock(), is_open))
        self._drawer_wake.set()
        self._drawer_changed.set()

    def _drawer_box_reachable(self, reachable: bool, why: str) -> None:
        """A drawer on its own box: journal when it stops answering (unplugged, silent) and
        when it answers again; its reading arrives every poll, the event only on a change."""
        if reachable == self._box_reachable or (reachable and self._box_reachable is None):
            self._box_reachable = reachable
            return
        self._box_reachable = reachable
        assert self.serial_drawer is not None
        data: dict[str, Any] = {"connected": reachable, "interface": self.serial_drawer.name}
        if not reachable:
            data["reason"] = why
        self._queue([("drawer.status", data)])

    def _publish_printer(self, reason: str) -> None:
        if self.printer is None:
            return
        summary = printer_summary(self.printer.status, self.printer.transport.is_open)
        if summary != self._published:
            self._published = summary
            self._queue([("printer.status", {**summary, "reason": reason})])

    # -- drawer -----------------------------------------------------------------------------

    async def _drawer_timer(self) -> None:
        assert self.drawer is not None
        while True:
            deadline = self.drawer.next_deadline()
            self._drawer_wake.clear()
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(None if deadline is None
                                           else max(0.0, deadline - self._clock())):
                    await self._drawer_wake.wait()
            events, again = self.drawer.tick(self._clock())
            self._queue(events)
            if events:
                self._drawer_changed.set()
            if again is not None:
                try:
                    await self._send_kick()
                except TransportError as e:
                    _LOGGER.warning("drawer kick %d not sent: %s", again.attempt, e)
                self._queue(self.drawer.kicked_again(self._clock(), again.attempt))

    def _kick_bytes(self) -> bytes:
        from kassad.drivers.escpos.encoder import kick, kick_realtime

        d = self.config.drawer
        assert d is not None
        if d.realtime_kick:
            return kick_realtime(d.pin, max(1, min(8, round(d.pulse_on_ms / 100))))
        return kick(d.pin, d.pulse_on_ms, d.pulse_off_ms)

    async def _send_kick(self) -> None:
        if self.serial_drawer is not None:
            await self.serial_drawer.kick()
            return
        assert self.printer is not None
        await self.printer.send(self._kick_bytes())

    async def quiesce(self, timeout: float) -> bool:  # noqa: ASYNC109
        """Start no new receipt, then wait until none is being sent and no kick awaits its
        sensor (a safe stop)."""
        if self.jobs is not None:
            self.jobs.hold()
        try:
            async with asyncio.timeout(timeout):
                if self.jobs is not None:
                    await self.jobs.idle.wait()
                while self.drawer is not None and self.drawer.state is DrawerState.KICKED:
                    self._drawer_changed.clear()
                    await self._drawer_changed.wait()
        except TimeoutError:
            return False
        return True

    def check_kick(self) -> None:
        """Refuse a kick that cannot be done now (before its intent is journaled)."""
        if self.drawer is None:
            raise CommandRefused(ErrorCode.DEVICE_UNAVAILABLE,
                                 "no cash drawer is configured on this register (devices.drawer)",
                                 {"device": "drawer"})
        if not self.kicker_connected:
            what = (f"the drawer interface {self.serial_drawer.name}" if self.serial_drawer
                    else f"the printer the drawer hangs on ({self.printer.name})" if self.printer
                    else "the drawer's interface")
            raise CommandRefused(ErrorCode.DEVICE_UNAVAILABLE, f"{what} is not connected",
                                 {"device": "drawer"})
        if self.drawer.state is DrawerState.OPEN:
            raise CommandRefused(ErrorCode.DRAWER_OPEN, "the drawer is already open",
                                 {"device": "drawer"})
        if self.drawer.state is DrawerState.KICKED:
            raise CommandRefused(ErrorCode.DRAWER_OPEN,
                                 "the drawer is being opened by another command",
                                 {"device": "drawer"})

    async def kick(self, cause: str, reference: dict[str, Any]) -> dict[str, Any]:
        """Kick once (retries by the timer), wait for the sensor; the result data or refusal."""
        assert self.drawer is not None and self.config.drawer is not None
        try:
            await self._send_kick()
        except TransportError as e:
            raise CommandRefused(ErrorCode.DEVICE_UNAVAILABLE,
                                 f"the kick could not be sent: {e}",
                                 {"device": "drawer"}) from e
        self._crash("after_kick")
        self._queue(self.drawer.kicked(self._clock(), cause, reference))
        self._drawer_wake.set()
        d = self.config.drawer
        poll = (d.serial.poll_interval if d.serial is not None and d.via == "serial"
                else self.config.printer.status_interval if self.config.printer else 1.0)
        limit = d.open_timeout * (d.kick_retries + 1) + 2 * poll + 1.0
        try:
            async with asyncio.timeout(limit):
                while self.drawer.state is DrawerState.KICKED:
                    self._drawer_changed.clear()
                    await self._drawer_changed.wait()
        except TimeoutError:
            pass
        if self.drawer.state is DrawerState.OPEN:
            return {"drawer": "open"}
        raise CommandRefused(ErrorCode.KICK_FAILED,
                             f"the drawer did not open after {d.kick_retries + 1} kick(s); "
                             "check that it is not locked or jammed",
                             {"device": "drawer", "drawer": self.drawer.state.value})


class PrintJobs:
    """Durable print jobs, one at a time: accepted → (waiting) → printing → printed, or
    failed, or expired. A job is never sent twice by itself."""

    def __init__(self, printer: Printer, config: PrinterConfig, save: SaveJob,
                 crash_point: Callable[[str], None]) -> None:
        self._printer = printer
        self._config = config
        self._save = save
        self._crash = crash_point
        self.idle = asyncio.Event()  # no job is being sent (safe to stop)
        self.idle.set()
        self._queue: deque[PrintJobRecord] = deque()
        self._wake = asyncio.Event()
        self._final: dict[str, asyncio.Future[PrintJobRecord]] = {}
        self._counter = 0
        self._held = False  # stopping: no job starts; queued ones wait for the next start

    def reconfigure(self, config: PrinterConfig) -> None:
        self._config = config  # receipt_expiry applies to jobs accepted from now on

    def expiry_ms(self) -> int:
        """When a receipt accepted now expires: Unix time in milliseconds."""
        return int((time.time() + self._config.receipt_expiry) * 1000)

    async def submit(self, job: PrintJobRecord, cause: dict[str, Any]) -> None:
        await self._transition(job, "accepted", None, cause)
        self.requeue(job)

    def requeue(self, job: PrintJobRecord) -> None:
        """A journaled job (also one found at start-up) joins the queue."""
        self._final.setdefault(job.job_id, asyncio.get_running_loop().create_future())
        self._queue.append(job)
        self._wake.set()

    async def final(self, job_id: str) -> PrintJobRecord:
        return await asyncio.shield(self._final[job_id])

    async def _transition(self, job: PrintJobRecord, state: str, reason: str | None,
                          cause: dict[str, Any] | None = None) -> PrintJobRecord:
        job = replace(job, state=state, reason=reason)
        data = {"job_id": job.job_id, "state": state, "reason": reason,
                "printer": self._printer.name, **({"cause": cause} if cause else {})}
        await self._save(job, [EventDraft("print.job", utc_timestamp(), data=data)])
        if state in FINAL_JOB_STATES:
            future = self._final.get(job.job_id)
            if future is not None and not future.done():
                future.set_result(job)
        return job

    def hold(self) -> None:
        """Start no further job (the daemon is stopping); the one being sent goes on."""
        self._held = True

    async def run(self) -> None:
        while True:
            while not self._queue or self._held:
                self._wake.clear()
                await self._wake.wait()
            await self._run(self._queue.popleft())

    async def _follow(self, job: PrintJobRecord, sending: asyncio.Task[None]) -> PrintJobRecord:
        """While a job is sent: the printer stopping (paper out mid-receipt …) makes it
        ``waiting`` with the reason, and ``printing`` again when it goes on."""
        printer = self._printer
        try:
            while not sending.done():
                reason = not_ready_reason(printer.status, printer.transport.is_open)
                state = "printing" if reason is None else "waiting"
                if (job.state, job.reason) != (state, reason):
                    job = await self._transition(job, state, reason)
                watch = asyncio.ensure_future(
                    printer.wait_for(self._changed_from(reason), timeout=None))
                try:
                    await asyncio.wait({sending, watch}, return_when=asyncio.FIRST_COMPLETED)
                finally:
                    watch.cancel()
        except BaseException:
            sending.cancel()
            raise
        return job

    def _changed_from(self, reason: str | None) -> Callable[[PrinterStatus | None], bool]:
        printer = self._printer
        return lambda status: not_ready_reason(status, printer.transport.is_open) != reason

    async def _run(self, job: PrintJobRecord) -> None:
        printer = self._printer
        while True:
            if time.time() * 1000 >= job.expires_at_ms:
                await self._transition(job, "expired", "not printed before its expiry")
                return
            reason = not_ready_reason(printer.status, printer.transport.is_open)
            if reason is None:
                break
            if (job.state, job.reason) != ("waiting", reason):
                job = await self._transition(job, "waiting", reason)
            with contextlib.suppress(TimeoutError):
                await printer.wait_for(self._changed_from(reason),
                                       timeout=max(0.0, job.expires_at_ms / 1000 - time.time()))
        if self._held:  # stopping: it stays accepted/waiting and prints after the restart
            self._queue.appendleft(job)
            return
        self.idle.clear()
        try:
            job = await self._transition(job, "printing", None)
            self._crash("job_printing")
            self._counter = (self._counter + 1) % 10000
            sending = asyncio.create_task(
                printer.print_job(job.data, f"{self._counter:04d}".encode()))
            try:
                job = await self._follow(job, sending)
                await sending
            except JobStopped as e:
                await self._transition(job, "failed", str(e))
            except TransportError as e:
                await self._transition(job, "failed", f"not sent: {e}")
            else:
                await self._transition(job, "printed", None)
        finally:
            self.idle.set()
