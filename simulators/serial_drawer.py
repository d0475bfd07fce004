"""A standalone serial cash-drawer interface on a pty: the box the SerialDrawer driver talks to.

    sim = SerialDrawerSimulator(kick_delay=0.05)     # reply_delay=, other_bits= too
    path = sim.open_pty()                   # the serial port for the driver (pyserial path)
    sim.jam(); sim.stick_sensor("closed"); sim.silence(); sim.open_by_hand(); sim.close_drawer()
    sim.unplug(); path = sim.replug()       # a new pty
    await sim.wait_for(lambda: len(sim.kicks) == 1); await sim.close()

Wire (the driver's :class:`SerialDrawerProtocol`, one codec for both roles)::

    host -> box   open_command     fires the solenoid: the drawer opens after kick_delay s
                                   (not when jammed; a kick of an open drawer changes nothing)
    host -> box   status_command   answered after reply_delay s (default at once) with one byte,
                                   protocol.sensor_byte(sensor), ``other_bits`` filling the bits
                                   outside open_mask; nothing at all while silenced
    anything else                  dropped byte by byte (logged, kept in ``unknown``) until the
                                   buffer is again the start of a command: resync on garbage

The parser matches whole commands as bytes arrive (they may come split or back to back);
protocol validation guarantees neither command is a prefix of the other. ``commands`` keeps every
whole command in arrival order, so a test can check that kicks and queries never interleave.

The pty is opened as in the printer simulator (recipes.md §3; both use simulators/common.py):
raw mode on the master, and the simulator keeps its own slave descriptor while plugged, else the
master reads EIO whenever no client has the port open. unplug() closes both: the client's next
read fails as with a pulled USB-serial adaptor. replug() makes a new pty; its path may differ.

Runnable: ``python -m kassad.simulators.serial_drawer`` prints the port path and takes verbs on
stdin (close, open, jam, unjam, stick open|closed|none, silent, talk, unplug, replug, state).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import os
import sys
import time
from collections.abc import Callable
from typing import Literal

from kassad.drivers.drawer.serial_drawer import SerialDrawerProtocol
from kassad.simulators.common import Changes, RawPty

_LOGGER = logging.getLogger(__name__)

Stuck = Literal["open", "closed"]

DEFAULT_PROTOCOL = SerialDrawerProtocol()
_READ_SIZE = 4096


class SerialDrawerSimulator:
    def __init__(self, protocol: SerialDrawerProtocol = DEFAULT_PROTOCOL, *,
                 kick_delay: float = 0.0, reply_delay: float = 0.0,
                 other_bits: int = 0) -> None:
        if kick_delay < 0 or reply_delay < 0:
            msg = f"delays must be >= 0, got {kick_delay}, {reply_delay}"
            raise ValueError(msg)
        self.protocol = protocol
        #: Seconds from a kick's arrival to the drawer being open (the solenoid and the spring).
        self.kick_delay = kick_delay
        #: Seconds from a status query to its reply (a slow box; longer than the driver's
        #: reply timeout makes the reply arrive late).
        self.reply_delay = reply_delay
        #: Bits outside open_mask in every status byte (a reader must ignore them).
        self.other_bits = other_bits
        self.drawer_open = False
        self.jammed = False
        self.stuck: Stuck | None = None
        self.silent = False
        self.plugged = False
        #: time.monotonic() of each open_command's arrival (jammed or not).
        self.kicks: list[float] = []
        self.queries = 0
        self.replies = 0
        #: Every whole command, in arrival order.
        self.commands: list[bytes] = []
        #: Bytes that were not part of any command.
        self.unknown = bytearray()
        #: Commands that arrived while a status reply was still due (reply_delay > 0): a host
        #: that waits for each reply before sending anything else never causes one.
        self.overlapped = 0
        self.received = bytearray()
        self._replying = 0
        self._pending = bytearray()
        self._pty: RawPty | None = None
        self._timers: set[asyncio.TimerHandle] = set()
        self._changes = Changes("serial drawer simulator")

    # -- the port ---------------------------------------------------------------------------

    def open_pty(self) -> str:
        """Create the serial port (a pty in raw mode); returns the path for the driver."""
        if self._pty is not None:
            return self._pty.path
        self._pty, self.plugged = RawPty(self._feed, self._read_failed, _READ_SIZE), True
        self._pending.clear()
        self._changes.changed()
        return self._pty.path

    @property
    def pty_path(self) -> str | None:
        """The current port's path; None while unplugged."""
        return self._pty.path if self._pty is not None else None

    def unplug(self) -> None:
        """Pull the cable: close the pty; the driver's next read or write fails."""
        self.plugged = False
        self._close_pty()
        self._changes.changed()

    def replug(self) -> str:
        """Plug in again: a new pty, whose path is returned (it may differ from the old one)."""
        return self.open_pty()

    async def close(self) -> None:
        for timer in self._timers:
            timer.cancel()
        self._timers.clear()
        self.plugged = False
        self._close_pty()
        await self._changes.close()

    async def __aenter__(self) -> SerialDrawerSimulator:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

    # -- control verbs ----------------------------------------------------------------------

    def close_drawer(self) -> None:
        """A person pushes the drawer shut."""
        self._set_open(False)

    def open_by_hand(self) -> None:
        """Opened with the key or the emergency lever: no kick came first."""
        self._set_open(True)

    def jam(self, on: bool = True) -> None:
        """A jammed drawer takes kicks but does not open."""
        self.jammed = on
        self._changes.changed()

    def stick_sensor(self, stuck: Stuck | None) -> None:
        """The sensor reads ``stuck`` whatever the drawer does; None repairs it."""
        if stuck not in (None, "open", "closed"):
            msg = f"stuck must be None, 'open' or 'closed', not {stuck!r}"
            raise ValueError(msg)
        self.stuck = stuck
        self._changes.changed()

    def silence(self, on: bool = True) -> None:
        """Stop answering status queries (kicks still work): the driver sees no reply."""
        self.silent = on
        self._changes.changed()

    @property
    def sensor(self) -> bool:
        """What the sensor reports: True open."""
        return self.drawer_open if self.stuck is None else self.stuck == "open"

    async def wait_for(self, predicate: Callable[[], bool], timeout: float = 5.0) -> None:  # noqa: ASYNC109
        """Return once ``predicate()`` holds, re-checked on every change of the simulator."""
        await self._changes.wait_for(predicate, timeout, self.state)

    def state(self) -> str:
        return (f"open={self.drawer_open} jammed={self.jammed} stuck={self.stuck} "
                f"silent={self.silent} plugged={self.plugged} kicks={len(self.kicks)} "
                f"queries={self.queries} replies={self.replies} unknown={len(self.unknown)} "
                f"overlapped={self.overlapped}")

    # -- internals --------------------------------------------------------------------------

    def _read_failed(self, error: OSError) -> None:
        _LOGGER.warning("serial drawer simulator: pty read failed; unplugging", exc_info=error)
        self.unplug()

    def _feed(self, data: bytes) -> None:
        self.received += data
        dropped = bytearray()
        for byte in data:
            self._pending.append(byte)
            dropped += self._match()
        if dropped:
            _LOGGER.warning("serial drawer simulator: %d unknown byte(s) ignored: %s",
                            len(dropped), dropped[:16].hex(" "))
            self.unknown += dropped
        self._changes.changed()

    def _match(self) -> bytes:
        """Execute the buffer if it is a whole command; drop bytes that start none."""
        commands = (self.protocol.status_command, self.protocol.open_command)
        dropped = bytearray()
        while self._pending:
            pending = bytes(self._pending)
            if pending in commands:
                self._pending.clear()
                self.commands.append(pending)
                if self._replying:
                    self.overlapped += 1
                if pending == self.protocol.status_command:
                    self._answer()
                else:
                    self._kicked()
                break
            if any(command.startswith(pending) for command in commands):
                break  # a command has begun: wait for its next byte
            dropped.append(self._pending.pop(0))  # resync on the next byte
        return bytes(dropped)

    def _answer(self) -> None:
        self.queries += 1
        if self.silent or self._pty is None:
            _LOGGER.debug("serial drawer simulator: silent, status query not answered")
            return
        # The sensor is sampled when the query arrives, as a box's firmware would.
        byte = self.protocol.sensor_byte(self.sensor, other_bits=self.other_bits)
        if self.reply_delay == 0:
            self._send_reply(byte)
            return
        self._replying += 1
        loop = asyncio.get_running_loop()
        self._timers.add(loop.call_later(self.reply_delay, self._delayed_reply, byte))

    def _delayed_reply(self, byte: int) -> None:
        self._prune_timers()
        self._replying -= 1
        self._send_reply(byte)
        self._changes.changed()

    def _send_reply(self, byte: int) -> None:
        if self._pty is None:
            _LOGGER.debug("serial drawer simulator: unplugged before the reply went out")
            return
        try:
            written = os.write(self._pty.master, bytes([byte]))
        except OSError:  # BlockingIOError included: nobody drains the port, as on a real box
            written = 0
        if written:
            self.replies += 1
        else:
            _LOGGER.warning("serial drawer simulator: reply byte dropped (pty full or gone)")

    def _kicked(self) -> None:
        self.kicks.append(time.monotonic())
        if self.jammed:
            _LOGGER.info("serial drawer simulator: kicked while jammed: stays closed")
        elif self.kick_delay == 0:
            self._set_open(True)
        else:
            loop = asyncio.get_running_loop()
            self._timers.add(loop.call_later(self.kick_delay, self._solenoid_fired))

    def _solenoid_fired(self) -> None:
        self._prune_timers()
        self._set_open(True)

    def _prune_timers(self) -> None:
        now = asyncio.get_running_loop().time()
        self._timers = {timer for timer in self._timers if timer.when() > now}

    def _set_open(self, is_open: bool) -> None:
        self.drawer_open = is_open
        self._changes.changed()

    def _close_pty(self) -> None:
        if self._pty is None:
            return
        self._pty.close()
        self._pty = None
        self._pending.clear()


# -- standalone ------------------------------------------------------------------------------


def _byte(text: str) -> int:
    return int(text, 0)


async def _serve(sim: SerialDrawerSimulator) -> None:
    print(sim.open_pty(), flush=True)  # the path is the program's output
    loop = asyncio.get_running_loop()
    lines: asyncio.Queue[str] = asyncio.Queue()
    stdin = sys.stdin.fileno()

    def readable() -> None:  # os.read, not readline: no lines left behind in Python's buffer
        data = os.read(stdin, 4096).decode(errors="replace")
        for line in data.splitlines() if data else [""]:  # "" = end of input
            lines.put_nowait(line + "\n" if data else "")

    loop.add_reader(stdin, readable)
    verbs: dict[str, Callable[[], object]] = {
        "close": sim.close_drawer, "open": sim.open_by_hand, "jam": sim.jam,
        "unjam": lambda: sim.jam(False), "silent": sim.silence,
        "talk": lambda: sim.silence(False), "unplug": sim.unplug, "replug": sim.replug,
        "stick open": lambda: sim.stick_sensor("open"),
        "stick closed": lambda: sim.stick_sensor("closed"),
        "stick none": lambda: sim.stick_sensor(None), "state": lambda: None,
    }
    try:
        while line := await lines.get():
            verb = " ".join(line.split())
            if verb in verbs:
                result = verbs[verb]()
                print(result if isinstance(result, str) else sim.state(), flush=True)
            elif verb:
                print(f"verbs: {', '.join(verbs)}", flush=True)
    finally:
        loop.remove_reader(stdin)
        await sim.close()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m kassad.simulators.serial_drawer",
                                     description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--open-command", type=bytes.fromhex, default=b"\x07", metavar="HEX")
    parser.add_argument("--status-command", type=bytes.fromhex, default=b"\x1b\x75\x00",
                        metavar="HEX")
    parser.add_argument("--open-mask", type=_byte, default=0x01)
    parser.add_argument("--open-value", type=_byte, default=0x01)
    parser.add_argument("--kick-delay", type=float, default=0.1)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(message)s")
    protocol = SerialDrawerProtocol(args.open_command, args.status_command, args.open_mask,
                                    args.open_value)
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(_serve(SerialDrawerSimulator(protocol, kick_delay=args.kick_delay)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
