"""An SSP note validator on a pty: packets, the sequence bit, and injected line faults.

    sim = SspSimulator(ValidatorUnit(SEK))
    path = sim.open_pty()                        # the driver's serial port (9600 8N2)
    sim.insert_note(3); sim.jam("safe"); sim.lose_reply(when_event=EventCode.CREDIT)
    await sim.wait_for(lambda: sim.unit.credited == [3]); await sim.close()

Packet layer (the unit's behaviour is in unit.py; both use kassad.drivers.ssp.frames)::

    host -> unit   STX SEQ/ID LEN DATA CRC, stuffed; bad CRC / other address -> ignored
    SYNC           always executed (any flag): OK, and the sequence starts over
    same flag as the last command   -> the last reply again, NOT executed (a retransmission)
    other flag (or first after power-up) -> executed; the reply echoes the flag
    RESET          OK, then the unit reboots (SLAVE RESET in the next POLL)

Line faults, each for the next ``count`` replies, or (``when_event``) from the first POLL
reply carrying that event on: lose_reply (executed, no reply), corrupt_byte (reply with a bad
CRC), slow_reply (sent after a delay; replies never overtake each other, as on a wire).
inject_garbage writes noise at once; garbage_before_reply puts it in front of the next reply.
silence() makes the unit deaf (nothing executed, nothing sent) until silence(False);
power_cycle() reboots it without a reply.
"""

from __future__ import annotations

import asyncio
import logging
import os
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal

from kassad.drivers.ssp.frames import (
    Command,
    Packet,
    PacketReader,
    Status,
    frame,
    parse_poll,
)
from kassad.simulators.common import Changes, RawPty
from kassad.simulators.ssp.unit import JamKind, ValidatorUnit

_LOGGER = logging.getLogger(__name__)
_READ_SIZE = 4096


@dataclass
class _LineFault:
    kind: Literal["lose", "corrupt", "slow"]
    count: int
    when_event: int | None = None
    seconds: float = 0.0


class SspSimulator:
    def __init__(self, unit: ValidatorUnit | None = None, *, address: int = 0) -> None:
        self.unit = unit if unit is not None else ValidatorUnit()
        self.address = address
        #: Every packet for our address, in arrival order (retransmissions included).
        self.received: list[Packet] = []
        #: Commands answered with the last reply instead of being executed.
        self.repeats = 0
        self.lost = 0
        self.corrupted = 0
        #: Commands ignored while silenced.
        self.ignored = 0
        self.silent = False
        self.reader = PacketReader()
        self._last_seq: bool | None = None  # None after power-up: anything is new
        self._last_reply: bytes | None = None
        self._faults: list[_LineFault] = []
        self._prefix = b""
        self._outbox: deque[tuple[float, bytes]] = deque()
        self._last_due = 0.0
        self._timer: asyncio.TimerHandle | None = None
        self._pty: RawPty | None = None
        self._changes = Changes("ssp simulator")

    # -- the port ---------------------------------------------------------------------------

    def open_pty(self) -> str:
        if self._pty is None:
            self._pty = RawPty(self._feed, self._read_failed, _READ_SIZE)
        return self._pty.path

    @property
    def pty_path(self) -> str | None:
        return self._pty.path if self._pty is not None else None

    async def close(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if self._pty is not None:
            self._pty.close()
            self._pty = None
        await self._changes.close()

    async def __aenter__(self) -> SspSimulator:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

    # -- control verbs: the unit ------------------------------------------------------------

    def insert_note(self, channel: int) -> bool:
        """A note of ``channel``; False if the unit does not take it in (disabled, full …)."""
        taken = self.unit.insert_note(channel)
        self._changes.changed()
        return taken

    def reject(self, code: int = 0x02) -> bool:
        """A note the unit rejects with LAST REJECT CODE ``code`` (0x02: not recognised)."""
        taken = self.unit.reject(code)
        self._changes.changed()
        return taken

    def jam(self, kind: JamKind | None = "safe") -> None:
        self.unit.jam(kind)
        self._changes.changed()

    def stacker_full(self, on: bool = True) -> None:
        self.unit.stacker_full(on)
        self._changes.changed()

    def fraud_attempt(self, channel: int) -> None:
        self.unit.fraud_attempt(channel)
        self._changes.changed()

    def cashbox_removed(self) -> None:
        self.unit.cashbox_removed()
        self._changes.changed()

    def cashbox_replaced(self) -> None:
        self.unit.cashbox_replaced()
        self._changes.changed()

    def self_disable(self) -> None:
        self.unit.self_disable()
        self._changes.changed()

    def power_cycle(self) -> None:
        """Off and on: sequence forgotten, configuration gone, SLAVE RESET on the next POLL."""
        self._last_seq = self._last_reply = None
        self.unit.power_on()
        self._changes.changed()

    # -- control verbs: the line ------------------------------------------------------------

    def lose_reply(self, count: int = 1, *, when_event: int | None = None) -> None:
        self._fault(_LineFault("lose", count, when_event))

    def corrupt_byte(self, count: int = 1, *, when_event: int | None = None) -> None:
        self._fault(_LineFault("corrupt", count, when_event))

    def slow_reply(self, seconds: float, count: int = 1, *,
                   when_event: int | None = None) -> None:
        self._fault(_LineFault("slow", count, when_event, seconds))

    def inject_garbage(self, data: bytes) -> None:
        self._emit(data, 0.0)

    def garbage_before_reply(self, data: bytes) -> None:
        self._prefix += data

    def silence(self, on: bool = True) -> None:
        self.silent = on
        self._changes.changed()

    async def wait_for(self, predicate: Callable[[], bool], timeout: float = 5.0) -> None:  # noqa: ASYNC109
        """Return once ``predicate()`` holds, re-checked after every packet and verb."""
        await self._changes.wait_for(predicate, timeout, self.describe)

    def snapshot(self) -> dict[str, Any]:
        return {**self.unit.snapshot(), "pty": self.pty_path, "silent": self.silent,
                "received": len(self.received), "repeats": self.repeats, "lost": self.lost,
                "corrupted": self.corrupted, "bad_crc": self.reader.bad_crc}

    def describe(self) -> str:
        return " ".join(f"{key}={value}" for key, value in self.snapshot().items())

    # -- packets ----------------------------------------------------------------------------

    def _feed(self, data: bytes) -> None:
        for packet in self.reader.feed(data):
            if packet.address == self.address:
                self._on_packet(packet)
        self._changes.changed()

    def _on_packet(self, packet: Packet) -> None:
        self.received.append(packet)
        if self.silent:
            self.ignored += 1
            return
        command, params = packet.data[0], packet.data[1:]
        repeat = (command != Command.SYNC and packet.seq == self._last_seq
                  and self._last_reply is not None)
        if repeat:
            assert self._last_reply is not None
            self.repeats += 1
            reply = self._last_reply
        else:
            reply = self.unit.execute(command, params)
        self._last_seq, self._last_reply = packet.seq, reply
        self._reply(Packet(self.address, packet.seq, reply), command)
        if command == Command.RESET and not repeat and reply[0] == Status.OK:
            self.power_cycle()

    def _reply(self, packet: Packet, command: int) -> None:
        fault = self._take_fault(packet, command)
        wire, delay = packet.encode(), 0.0
        if fault is not None and fault.kind == "lose":
            self.lost += 1
            wire = b""
        elif fault is not None and fault.kind == "corrupt":
            self.corrupted += 1
            body = bytearray(packet.body())
            body[-2] ^= 0x5A  # CRCL; never makes a stuffing problem: frame() stuffs after
            wire = frame(bytes(body))
        elif fault is not None:
            delay = fault.seconds
        wire, self._prefix = self._prefix + wire, b""
        if wire:
            self._emit(wire, delay)

    def _take_fault(self, packet: Packet, command: int) -> _LineFault | None:
        for fault in self._faults:
            if fault.when_event is not None:
                if command != Command.POLL or packet.data[0] != Status.OK:
                    continue
                codes = {e.code for e in parse_poll(packet.data[1:], self.unit.protocol)}
                if fault.when_event not in codes:
                    continue
                fault.when_event = None  # armed: the next count-1 replies too, whatever
            fault.count -= 1
            if fault.count <= 0:
                self._faults.remove(fault)
            return fault
        return None

    def _emit(self, data: bytes, delay: float) -> None:
        # Replies leave in order, as on a wire: a slow one holds back those after it.
        loop = asyncio.get_running_loop()
        due = max(loop.time() + delay, self._last_due)
        self._last_due = due
        if not self._outbox and delay == 0 and due <= loop.time():
            self._write(data)
            return
        self._outbox.append((due, data))
        if self._timer is None:
            self._timer = loop.call_at(self._outbox[0][0], self._flush)

    def _flush(self) -> None:
        self._timer = None
        loop = asyncio.get_running_loop()
        while self._outbox and self._outbox[0][0] <= loop.time():
            self._write(self._outbox.popleft()[1])
        if self._outbox:
            self._timer = loop.call_at(self._outbox[0][0], self._flush)
        self._changes.changed()

    def _write(self, data: bytes) -> None:
        if self._pty is None:
            return
        try:
            os.write(self._pty.master, data)
        except OSError as error:  # BlockingIOError: nobody drains the port, as on a real unit
            _LOGGER.warning("ssp simulator: %d byte(s) not written: %s", len(data), error)

    def _fault(self, fault: _LineFault) -> None:
        if fault.count < 1 or fault.seconds < 0:
            raise ValueError(f"need count >= 1 and seconds >= 0: {fault}")
        self._faults.append(fault)

    def _read_failed(self, error: OSError) -> None:
        _LOGGER.warning("ssp simulator: pty read failed: %s", error)
        if self._pty is not None:
            self._pty.close()
            self._pty = None
        self._changes.changed()
