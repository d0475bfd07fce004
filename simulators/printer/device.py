"""The simulated ESC/POS printer with a cash drawer on its kick port, served over TCP, pty, USB.

    sim = PrinterSimulator()
    port = await sim.serve_tcp()              # raw socket, like a :9100 network interface
    path = sim.open_pty()                     # a serial port (pyserial / serial_asyncio_fast)
    dev = sim.usb_device(backend)             # a FakeUsbDevice on simulators.usb_backend
    sim.paper_out(); await sim.wait_receipts(1); await sim.close()

Processing model (device-protocols.md §1). Every link has its own parser; bytes are parsed on
receipt. Real-time commands (DLE EOT, DLE ENQ, DLE DC4) execute at once, even while offline and
(by default) even when they sit inside another command's data. Everything else goes into one
receive queue that is "printed" in order while the printer can print: online, cover closed,
paper not out, no error. Otherwise the queue waits, real-time replies still flow, and printing
resumes when the fault clears. Printing takes no time, so a buffered reply (GS r, GS a, the
GS ( H fn 48 process-ID response ``37 22 d1 d2 d3 d4 00``) is sent exactly when the data before
it has printed.

Drawer: a kick (ESC p or DLE DC4 fn 1) on the pin the drawer is wired to fires the solenoid;
the drawer opens after ``kick_delay`` seconds unless jammed or the pulse is 0 ms. A person
closes it (close_drawer). Pin 3 follows the drawer per its open level unless the sensor is stuck.
As on Epson printers, a DLE DC4 pulse on a pin still pulsing (ON + OFF time) is ignored.

ASB (GS a n): the 4 status bytes go out when enabled and whenever a selected category changes,
to the link that enabled it (or, once it is gone, the newest link). ESC @ turns ASB off
(Bixolon manual; ``asb_reset_by_init=False`` keeps it, as some printers do).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from kassad.simulators.common import Changes
from kassad.simulators.printer.faces import Link, PtyFace, TcpFace, UsbFace
from kassad.simulators.printer.parser import DEFAULT_MAX_DATA, Command, EscPosParser, Kind
from kassad.simulators.printer.render import Receipt, Renderer
from kassad.simulators.printer.state import Level, PrinterState, Stuck, asb_changed

if TYPE_CHECKING:
    from kassad.simulators.usb_backend import FakeUsbBackend, FakeUsbDevice

_LOGGER = logging.getLogger(__name__)

PROCESS_ID_HEADER = b"\x37\x22"
CLEAR_BUFFERS_REPLY = b"\x37\x25\x00"   # DLE DC4 fn 8 acknowledgement (Epson)


@dataclass(frozen=True, slots=True)
class Kick:
    pin: int
    on_ms: int
    off_ms: int
    #: True for DLE DC4 fn 1 (executed on receipt), False for ESC p (executed in sequence).
    realtime: bool
    #: time.monotonic() when the kick's bytes arrived.
    at: float
    #: time.monotonic() when the printer drove the pin (later than ``at`` if the queue waited).
    executed_at: float
    #: It fired the drawer's solenoid (wired pin, pulse > 0 ms, not jammed).
    fired: bool


@dataclass(slots=True)
class _Queued:
    link: Link
    cmd: Command
    at: float


class PrinterSimulator:
    def __init__(self, state: PrinterState | None = None, *, realtime_in_data: bool = True,
                 max_data: int = DEFAULT_MAX_DATA, width_dots: int = 576,
                 kick_delay: float = 0.0, asb_reset_by_init: bool = True,
                 receipts_dir: Path | None = None) -> None:
        self.state = state or PrinterState()
        self.max_data = max_data
        self.kick_delay = kick_delay
        self.asb_reset_by_init = asb_reset_by_init
        self.receipts_dir = receipts_dir
        self.receipts: list[Receipt] = []
        self.kicks: list[Kick] = []
        #: Real-time kicks dropped because their pin was still pulsing.
        self.ignored_kicks = 0
        #: Real-time kicks dropped because of an unrecoverable error (the printer heard them).
        self.refused_kicks = 0
        self.received = bytearray()
        self.sent = bytearray()
        #: Process IDs (d1..d4) whose GS ( H completion response was sent.
        self.confirmed: list[bytes] = []
        self.unknown: list[Command] = []
        self.plugged = True
        self._realtime_in_data = realtime_in_data
        self._renderer = Renderer(width_dots=width_dots)
        self._queue: deque[_Queued] = deque()
        self._pumping = False
        self._links: list[Link] = []
        self._asb_link: Link | None = None
        self._asb_last = self.state.asb()
        self._pin_busy_until: dict[int, float] = {}
        self._timers: set[asyncio.TimerHandle] = set()
        self._changes = Changes("printer simulator")
        self._tcp = TcpFace(self._attach, self._receive, self._detach)
        self._pty = PtyFace(self._attach, self._receive, self._detach)
        self._usb = UsbFace(self._attach, self._receive, self._detach)

    # ----------------------------------------------------------------------------- faces

    async def serve_tcp(self, host: str = "127.0.0.1", port: int = 0) -> int:
        """Listen like a :9100 network printer; returns the port. Several clients may connect."""
        return await self._tcp.start(host, port)

    def open_pty(self) -> str:
        """Create the serial face (a pty, raw mode); returns the slave path for the client."""
        return self._pty.open()

    def usb_device(self, backend: FakeUsbBackend, **identity: Any) -> FakeUsbDevice:
        """Plug a FakeUsbDevice wired to this printer into ``backend``; returns the device.

        ``identity`` goes to FakeUsbDevice (vendor_id, product_id, serial_number, …); the default
        is an Epson TM-T20III in printer class, VID 04B8 PID 0E28.
        """
        return self._usb.plug(backend, identity)

    @property
    def tcp_port(self) -> int | None:
        return self._tcp.port

    @property
    def pty_path(self) -> str | None:
        return self._pty.path

    @property
    def usb(self) -> FakeUsbDevice | None:
        """The FakeUsbDevice wired to this printer (the same one across unplug/replug)."""
        return self._usb.device

    async def unplug(self, *, power_cycle: bool = False) -> None:
        """Vanish from every face: TCP listener and connections reset, pty master closed, USB
        device unplugged. Unprinted data stays queued unless ``power_cycle`` (then the printer
        also forgets buffers, styles and ASB)."""
        self.plugged = False
        await self._tcp.stop()
        self._pty.close()
        self._usb.unplug()
        if power_cycle:
            self._clear_buffers()
            self._renderer.apply(Command(Kind.INIT, b"\x1b@"))
            self._pin_busy_until.clear()
            self.state.asb_mask = 0
        self._changes.changed()

    async def replug(self) -> str | None:
        """Come back on the same faces: the same TCP port, a new pty (its path is returned),
        the same USB device at a new bus address."""
        self.plugged = True
        await self._tcp.restart()
        path = self._pty.reopen()
        self._usb.replug()
        self._changes.changed()
        return path

    async def close(self) -> None:
        for timer in self._timers:
            timer.cancel()
        self._timers.clear()
        await self._tcp.stop()
        self._pty.close()
        self._usb.close()
        await self._changes.close()

    async def __aenter__(self) -> PrinterSimulator:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

    @property
    def realtime_in_data(self) -> bool:
        return self._realtime_in_data

    @realtime_in_data.setter
    def realtime_in_data(self, on: bool) -> None:
        self._realtime_in_data = on
        for link in self._links:
            link.parser.realtime_in_data = on

    # ----------------------------------------------------------------------------- control verbs

    def paper_near_end(self) -> None:
        self._set(paper="near_end")

    def paper_out(self) -> None:
        self._set(paper="out")

    def paper_ok(self) -> None:
        self._set(paper="ok")

    def cover_open(self) -> None:
        self._set(cover_open=True)

    def cover_close(self) -> None:
        self._set(cover_open=False)

    def go_offline(self) -> None:
        self._set(online=False)

    def go_online(self) -> None:
        self._set(online=True)

    def cutter_error(self, on: bool = True) -> None:
        """Autocutter jam; off = cleared by a person (DLE ENQ 1/2 from the host also clears it)."""
        self._set(cutter_error=on)

    def unrecoverable_error(self, on: bool = True) -> None:
        self._set(unrecoverable_error=on)

    def jam_drawer(self, on: bool = True) -> None:
        self._set(drawer_jammed=on)

    def stick_sensor(self, stuck: Stuck | None) -> None:
        self._set(sensor_stuck=stuck)

    def close_drawer(self) -> None:
        """A person pushes the drawer shut."""
        self._set(drawer_open=False)

    def open_drawer_by_hand(self) -> None:
        """Opened with the key or the emergency lever: no kick came first."""
        self._set(drawer_open=True)

    def set_drawer_open_level(self, level: Level) -> None:
        self._set(drawer_open_level=level)

    def wire_drawer(self, pin: int) -> None:
        self._set(drawer_pin=pin)

    def silent_when_cover_open(self, on: bool = True) -> None:
        self._set(silent_when_cover_open=on)

    # ----------------------------------------------------------------------------- observing

    @property
    def current_receipt(self) -> Receipt:
        """What has printed since the last cut."""
        return self._renderer.current

    @property
    def pending(self) -> int:
        """Commands received but not yet printed (waiting for paper, cover, online …)."""
        return len(self._queue)

    async def wait_for(self, predicate: Callable[[], bool], timeout: float = 5.0) -> None:  # noqa: ASYNC109
        """Return once ``predicate()`` holds, re-checked on every change of the simulator."""
        await self._changes.wait_for(
            predicate, timeout,
            lambda: (f"state {self.state.snapshot()}, {len(self.receipts)} receipts, "
                     f"{len(self.kicks)} kicks, {self.pending} queued"))

    async def wait_receipts(self, n: int, timeout: float = 5.0) -> list[Receipt]:  # noqa: ASYNC109
        await self.wait_for(lambda: len(self.receipts) >= n, timeout)
        return self.receipts[:n]

    async def wait_kicks(self, n: int, timeout: float = 5.0) -> list[Kick]:  # noqa: ASYNC109
        await self.wait_for(lambda: len(self.kicks) >= n, timeout)
        return self.kicks[:n]

    async def wait_received(self, n: int, timeout: float = 5.0) -> None:  # noqa: ASYNC109
        """Until ``n`` bytes in total have arrived (all parsed and, if printable, printed)."""
        await self.wait_for(lambda: len(self.received) >= n, timeout)

    # ----------------------------------------------------------------------------- internals

    def _attach(self, link: Link) -> EscPosParser:
        self._links.append(link)
        self._changes.changed()
        return EscPosParser(realtime_in_data=self._realtime_in_data, max_data=self.max_data)

    def _detach(self, link: Link) -> None:
        if link in self._links:
            self._links.remove(link)
        self._changes.changed()

    def _set(self, **changes: Any) -> None:
        for name, value in changes.items():
            setattr(self.state, name, value)
        self.state.validate()
        self._state_changed()

    def _state_changed(self) -> None:
        now = self.state.asb()
        mask = self.state.asb_mask
        if mask & 0x0F and asb_changed(self._asb_last, now, mask):
            self._send_asb(now)
        self._asb_last = now
        self._pump()
        self._changes.changed()

    def _send_asb(self, message: bytes) -> None:
        link = self._asb_link
        if link is None or link.closed:
            link = self._links[-1] if self._links else None
        if link is not None:
            self._reply(link, message)

    def _reply(self, link: Link, data: bytes) -> None:
        if self.state.silent:
            _LOGGER.debug("cover open, silent mode: not sending %s", data.hex(" "))
            return
        if not link.closed:
            link.send(data)
            self.sent += data

    def _receive(self, link: Link, data: bytes) -> None:
        at = time.monotonic()
        self.received += data
        for cmd in link.parser.feed(data):
            if cmd.realtime:
                self._realtime(link, cmd, at)
            else:
                self._queue.append(_Queued(link, cmd, at))
                self._pump()
        self._changes.changed()

    def _pump(self) -> None:
        """Print queued commands while the printer can (re-entrant calls are no-ops)."""
        if self._pumping:
            return
        self._pumping = True
        try:
            while self._queue and self.state.can_print:
                self._execute(self._queue.popleft())
        finally:
            self._pumping = False

    def _execute(self, item: _Queued) -> None:
        cmd, link, k = item.cmd, item.link, item.cmd.kind
        if k is Kind.KICK:
            m, t1, t2 = cmd.params
            pin = {0: 2, 48: 2, 1: 5, 49: 5}.get(m)
            if pin is None:
                self.unknown.append(cmd)
            else:  # "if t2 < t1, OFF time = t1 × 2 ms"
                self._kick(pin, t1 * 2, max(t1, t2) * 2, realtime=False, at=item.at)
        elif k is Kind.TRANSMIT_STATUS:
            reply = self.state.gs_r(cmd.params[0])
            if reply is not None:
                self._reply(link, bytes([reply]))
        elif k is Kind.ASB:
            self.state.asb_mask = cmd.params[0]
            self._asb_link, self._asb_last = link, self.state.asb()
            if self.state.asb_mask & 0x0F:
                self._reply(link, self._asb_last)
        elif k is Kind.PROCESS_ID:
            self._reply(link, PROCESS_ID_HEADER + cmd.data[:4] + b"\x00")
            self.confirmed.append(cmd.data[:4])
        elif k is Kind.UNKNOWN:
            self.unknown.append(cmd)
        else:
            if k is Kind.INIT and self.asb_reset_by_init:
                self.state.asb_mask = 0
            done = self._renderer.apply(cmd)
            if done is not None:
                self._receipt_done(done)

    def _realtime(self, link: Link, cmd: Command, at: float) -> None:
        k, p = cmd.kind, cmd.params
        if k is Kind.RT_STATUS:
            reply = self.state.dle_eot(p[0])
            if reply is not None:
                self._reply(link, bytes([reply]))
        elif k is Kind.RT_RECOVER:
            # Only a recoverable error (the autocutter here) is recovered; 2 drops the buffers.
            if self.state.cutter_error and p[0] in (1, 2):
                if p[0] == 2:
                    self._clear_buffers()
                self._set(cutter_error=False)
        elif k is Kind.RT_KICK:
            if self.state.unrecoverable_error:
                self.refused_kicks += 1
                _LOGGER.info("real-time pulse ignored: unrecoverable error")
            else:
                pin = 2 if p[0] == 0 else 5
                self._kick(pin, p[1] * 100, p[1] * 100, realtime=True, at=at)
        elif k is Kind.RT_CLEAR:
            self._clear_buffers()
            self._reply(link, CLEAR_BUFFERS_REPLY)
        elif k is Kind.RT_TRANSMIT and p[0] == 1:  # m = 1: the basic ASB status
            self._reply(link, self.state.asb())

    def _clear_buffers(self) -> None:
        """Drop unprinted data, pending GS ( H responses included (DLE ENQ 2, DLE DC4 8)."""
        self._queue.clear()
        self._renderer.discard_line()

    def _kick(self, pin: int, on_ms: int, off_ms: int, *, realtime: bool, at: float) -> None:
        now = time.monotonic()
        if realtime and now < self._pin_busy_until.get(pin, 0.0):
            self.ignored_kicks += 1
            _LOGGER.info("real-time pulse on pin %d ignored: the pin is still pulsing", pin)
            return
        self._pin_busy_until[pin] = now + (on_ms + off_ms) / 1000
        fired = pin == self.state.drawer_pin and on_ms > 0 and not self.state.drawer_jammed
        self.kicks.append(Kick(pin, on_ms, off_ms, realtime, at, now, fired))
        if fired and self.kick_delay > 0:
            # The solenoid and the drawer's spring take a moment: open later, unless closed down.
            handle: list[asyncio.TimerHandle] = []

            def release() -> None:
                self._timers.discard(handle[0])
                self._set(drawer_open=True)

            handle.append(asyncio.get_running_loop().call_later(self.kick_delay, release))
            self._timers.add(handle[0])
        elif fired:
            self._set(drawer_open=True)
        self._changes.changed()

    def _receipt_done(self, receipt: Receipt) -> None:
        self.receipts.append(receipt)
        if self.receipts_dir is not None:
            stem = self.receipts_dir / f"receipt-{len(self.receipts):04d}"
            try:
                self.receipts_dir.mkdir(parents=True, exist_ok=True)
                stem.with_suffix(".txt").write_text(receipt.text + "\n", encoding="utf-8")
                receipt.to_png(stem.with_suffix(".png"))
            except OSError:
                _LOGGER.exception("could not save %s", stem)
