"""The SSP note validator driver against its simulator over a real pty.

The driver runs as in the daemon: NoteValidator.run() over a ReconnectingTransport on the
simulator's pty (9600 8N2), with short timings. Nothing waits on a sleep: driver events are
awaited as they are emitted, the simulator on its condition ("n more POLLs executed" is how a
test knows the driver has looked again). Exactly-once is checked against the simulator's own
record of the credits it reported (``sim.unit.credited``).
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import random
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest
import serial

from kassad.drivers.counter import Accepted, Connection, CounterEvent, Fault, Rejected
from kassad.drivers.ssp.driver import NoteValidator, ValidatorTimings
from kassad.drivers.ssp.frames import Command, EventCode, Packet, PacketReader, Status
from kassad.drivers.ssp.protocol import CommandFailed, UnknownCommand, WrongParameters
from kassad.drivers.transport.base import Transport
from kassad.drivers.transport.reconnect import ReconnectingTransport
from kassad.drivers.transport.serial import SerialTransport
from kassad.simulators.ssp.device import SspSimulator
from kassad.simulators.ssp.unit import EUR, SEK, JamKind, ValidatorUnit

pytestmark = pytest.mark.timeout(10)

TIMINGS = ValidatorTimings(poll_interval=0.01, reply_timeout=0.15, retries=2, write_timeout=1.0,
                           backoff_min=0.02, backoff_max=0.1)


class Events:
    """The driver's on_event: every event kept; wait() re-checks on each new one."""

    def __init__(self) -> None:
        self.items: list[CounterEvent] = []
        self._new = asyncio.Event()

    def __call__(self, event: CounterEvent) -> None:
        self.items.append(event)
        new, self._new = self._new, asyncio.Event()
        new.set()

    def mark(self) -> int:
        return len(self.items)

    async def wait(self, predicate: Callable[[CounterEvent], bool], *, after: int = 0,
                   timeout: float = 3.0) -> Any:  # noqa: ASYNC109
        index = after
        try:
            async with asyncio.timeout(timeout):
                while True:
                    for index in range(index, len(self.items)):  # noqa: B020
                        if predicate(self.items[index]):
                            return self.items[index]
                    index = len(self.items)
                    await self._new.wait()
        except TimeoutError:
            raise AssertionError(f"no such event; got {self.items[after:][-10:]}") from None

    def accepted(self) -> list[int]:
        return [e.channel for e in self.items if isinstance(e, Accepted)]

    def of(self, kind: type[Any], after: int = 0) -> list[Any]:
        return [e for e in self.items[after:] if isinstance(e, kind)]


def connected(up: bool) -> Callable[[CounterEvent], bool]:
    return lambda e: isinstance(e, Connection) and e.connected is up


@contextlib.asynccontextmanager
async def running(sim: SspSimulator, **kwargs: Any) -> AsyncIterator[tuple[NoteValidator, Events]]:
    path = sim.open_pty()
    events = Events()

    def factory() -> Transport:
        return SerialTransport(path, 9600, stopbits=serial.STOPBITS_TWO)

    transport = ReconnectingTransport(factory, open_timeout=1.0, backoff_min=0.01,
                                      backoff_max=0.05, name="nv")
    kwargs.setdefault("timings", TIMINGS)
    validator = NoteValidator("nv", transport, on_event=events, **kwargs)
    async with asyncio.TaskGroup() as group:
        task = group.create_task(validator.run(), name="note validator")
        try:
            yield validator, events
        finally:
            task.cancel()


async def polls(sim: SspSimulator, count: int = 3) -> None:
    """Until the driver has polled ``count`` more times."""
    target = sim.unit.polls + count
    await sim.wait_for(lambda: sim.unit.polls >= target)


async def enabled(sim: SspSimulator, validator: NoteValidator,
                  channels: frozenset[int] | None = None) -> None:
    """Enable, and past the SLAVE RESET of power-up (first POLL) and its second set-up."""
    await validator.enable(channels)
    await sim.wait_for(lambda: sim.unit.enabled and sim.unit.polls >= 2)


def retransmitted_polls(sim: SspSimulator) -> list[Packet]:
    return [b for a, b in itertools.pairwise(sim.received)
            if a == b and b.data[0] == Command.POLL]


# ---- the simulator's packet layer, by hand -------------------------------------------------------


async def test_simulator_repeats_its_last_reply_to_a_retransmission() -> None:
    async with SspSimulator() as sim:
        port = SerialTransport(sim.open_pty(), 9600, stopbits=serial.STOPBITS_TWO)
        await port.open(1.0)
        reader = PacketReader()

        async def ask(packet: Packet) -> Packet:
            await port.write(packet.encode(), 1.0)
            got: list[Packet] = []
            while not got:
                got = reader.feed(await port.read(512, 1.0))
            assert len(got) == 1
            return got[0]

        try:
            assert await ask(Packet(0, True, b"\x11")) == Packet(0, True, b"\xf0")  # SYNC
            first = await ask(Packet(0, False, b"\x07"))
            assert first.data[:2] == bytes([Status.OK, EventCode.SLAVE_RESET])
            again = await ask(Packet(0, False, b"\x07"))  # same bit: a retransmission
            assert again == first and sim.unit.polls == 1 and sim.repeats == 1
            fresh = await ask(Packet(0, True, b"\x07"))  # toggled: executed
            assert fresh.seq and EventCode.SLAVE_RESET not in fresh.data and sim.unit.polls == 2
            assert (await ask(Packet(0, True, b"\x11"))).data == b"\xf0"  # SYNC: always run
            assert (await ask(Packet(0, False, b"\x06\x09"))).data == bytes([Status.FAIL])
        finally:
            await port.close()


async def test_error_statuses_are_typed_errors_with_their_code() -> None:
    async with SspSimulator() as sim, running(sim) as (validator, events):
        await events.wait(connected(True))
        with pytest.raises(UnknownCommand) as unknown:
            await validator.link.command(0x55)
        assert (unknown.value.command, unknown.value.status) == (0x55, 0xF2)
        with pytest.raises(WrongParameters):
            await validator.link.command(Command.SET_INHIBITS, b"\x01")
        with pytest.raises(CommandFailed):
            await validator.link.command(Command.HOST_PROTOCOL_VERSION, b"\x09")
        await polls(sim)  # the sequence stayed right: polls go on, nothing repeated
        assert sim.repeats == 0 and all(c.connected for c in events.of(Connection))


# ---- set-up ------------------------------------------------------------------------------------


async def test_setup_identity_channels_and_sequence_bits() -> None:
    async with SspSimulator(ValidatorUnit(SEK, serial=4242)) as sim, \
            running(sim) as (validator, events):
        conn = await events.wait(connected(True))
        identity = conn.identity
        assert identity == validator.identity
        assert (identity.protocol, identity.serial, identity.firmware, identity.category) == \
               ("ssp", "4242", "0100", "validator")
        assert [(c.channel, c.kind, c.currency, c.value_minor) for c in identity.channels] == [
            (1, "note", "SEK", 2000), (2, "note", "SEK", 5000), (3, "note", "SEK", 10000),
            (4, "note", "SEK", 20000), (5, "note", "SEK", 50000), (6, "note", "SEK", 100000)]
        assert sim.unit.protocol == 8
        await polls(sim, 1)
        first = sim.received[:6]
        assert [p.data for p in first] == [
            b"\x11", b"\x06\x08", b"\x05", b"\x0c", b"\x09", b"\x07"]
        # SYNC with the flag set, then 0, toggled after every answered command.
        assert [p.seq for p in first] == [True, False, True, False, True, False]


@pytest.mark.parametrize(("unit", "versions", "tried", "layout"), [
    (ValidatorUnit(EUR, max_protocol=6), (8, 7, 6), [8, 7, 6], 6),
    (ValidatorUnit(EUR, min_protocol=4, max_protocol=5, default_protocol=4), (8, 7, 6, 5),
     [8, 7, 6, 5], 5),
], ids=["falls-back-to-6", "legacy-layout-5"])
async def test_protocol_fallback_and_setup_layouts(unit: ValidatorUnit, versions: tuple[int, ...],
                                                   tried: list[int], layout: int) -> None:
    async with SspSimulator(unit) as sim, \
            running(sim, protocol_versions=versions,
                    minor_units=lambda currency: {"EUR": 2}[currency]) as (validator, events):
        conn = await events.wait(connected(True))
        asked = [p.data[1] for p in sim.received if p.data[0] == Command.HOST_PROTOCOL_VERSION]
        assert asked[:len(tried)] == tried
        assert validator.setup is not None and validator.setup.protocol == layout
        assert [c.value_minor for c in conn.identity.channels] == \
               [500, 1000, 2000, 5000, 10000, 20000, 50000]


async def test_no_supported_protocol_is_reported_not_connected() -> None:
    unit = ValidatorUnit(EUR, min_protocol=4, max_protocol=5)
    async with SspSimulator(unit) as sim, running(sim) as (_, events):
        conn = await events.wait(connected(False))
        assert "none of protocol versions" in conn.reason


# ---- notes -------------------------------------------------------------------------------------


async def test_notes_are_each_accepted_exactly_once() -> None:
    async with SspSimulator() as sim, running(sim) as (validator, events):
        await enabled(sim, validator)
        for channel in (1, 3, 6, 3):
            assert sim.insert_note(channel)
        await events.wait(lambda _: len(events.accepted()) == 4)
        await polls(sim, 5)
        assert events.accepted() == sim.unit.credited == [1, 3, 6, 3]
        assert not events.of(Rejected) and not events.of(Fault)


async def test_enable_some_channels_and_disable() -> None:
    async with SspSimulator() as sim, running(sim) as (validator, events):
        await enabled(sim, validator, frozenset({1, 2}))
        assert sim.unit.inhibits == 0b11
        mark = events.mark()
        assert sim.insert_note(5)  # inhibited: read, then rejected
        rejected = await events.wait(lambda e: isinstance(e, Rejected), after=mark)
        assert (rejected.reason, rejected.code) == ("disabled_by_host", 0x0C)
        await validator.disable()
        assert not sim.unit.enabled
        assert not sim.insert_note(1)
        await polls(sim)
        assert events.accepted() == []


@pytest.mark.parametrize("fault", ["lose_reply", "corrupt_byte", "slow_reply"])
async def test_a_lost_corrupted_or_late_credit_reply_counts_once(fault: str) -> None:
    async with SspSimulator() as sim, running(sim) as (validator, events):
        await enabled(sim, validator)
        if fault == "slow_reply":  # later than the reply timeout: the repeat overtakes nothing
            sim.slow_reply(TIMINGS.reply_timeout * 1.5, when_event=EventCode.CREDIT)
        else:
            getattr(sim, fault)(when_event=EventCode.CREDIT)
        assert sim.insert_note(2)
        await events.wait(lambda e: isinstance(e, Accepted))
        await polls(sim, 5)
        assert events.accepted() == sim.unit.credited == [2]
        assert sim.repeats >= 1
        # The retransmission carried the same sequence bit, and got the same reply back.
        assert retransmitted_polls(sim)
        assert validator.link.retransmissions >= 1
        if fault == "corrupt_byte":
            assert validator.link.reader.bad_crc >= 1
        if fault == "slow_reply":
            assert validator.link.stray_packets >= 1  # the second copy, dropped
        assert all(c.connected for c in events.of(Connection))


async def test_garbage_on_the_line_never_crashes_or_double_counts() -> None:
    rng = random.Random(7)
    noise = [b"\x7f", b"\x7f\x7f", b"\x7f\x80\x05\xf0\xee", b"\x00\xff\x7f\x7f\x13",
             b"\x7f\x00\x01\x07\x11\x89", b"\x7f\x80\xff"] + \
            [bytes(rng.randrange(256) for _ in range(rng.randrange(1, 40))) for _ in range(6)]
    async with SspSimulator() as sim, running(sim) as (validator, events):
        await enabled(sim, validator)
        for i, junk in enumerate(noise):
            sim.insert_note(i % 6 + 1)
            sim.garbage_before_reply(junk)
            sim.inject_garbage(junk[::-1])
            await polls(sim, 2)
        await sim.wait_for(lambda: len(sim.unit.credited) == len(noise))
        await events.wait(lambda _: len(events.accepted()) == len(noise))
        await polls(sim, 5)
        assert events.accepted() == sim.unit.credited
        assert validator.link.reader.discarded + validator.link.reader.bad_crc > 0
        assert all(c.connected for c in events.of(Connection))


# ---- rejects and faults ------------------------------------------------------------------------


async def test_reject_reports_the_last_reject_code() -> None:
    async with SspSimulator() as sim, running(sim) as (validator, events):
        await enabled(sim, validator)
        assert sim.reject()
        rejected = await events.wait(lambda e: isinstance(e, Rejected))
        assert (rejected.reason, rejected.code) == ("not_recognised", 0x02)
        assert events.accepted() == []


@pytest.mark.parametrize(("kind", "code"), [("safe", 0xEA), ("unsafe", 0xE9)])
async def test_jam_is_a_fault_until_cleared_and_the_note_then_counts_once(kind: JamKind,
                                                                           code: int) -> None:
    async with SspSimulator() as sim, running(sim) as (validator, events):
        await enabled(sim, validator)
        sim.insert_note(4)
        sim.jam(kind)
        fault = await events.wait(lambda e: isinstance(e, Fault) and e.active)
        assert (fault.fault, fault.code) == ("jam", code)
        await polls(sim)
        assert len(events.of(Fault)) == 1 and events.accepted() == []  # reported once
        sim.jam(None)
        cleared = await events.wait(lambda e: isinstance(e, Fault) and not e.active)
        assert (cleared.fault, cleared.code) == ("jam", code)
        await events.wait(lambda e: isinstance(e, Accepted))
        await polls(sim, 5)
        assert events.accepted() == [4]


async def test_stacker_full_and_cashbox_removed_then_replaced() -> None:
    async with SspSimulator() as sim, running(sim) as (validator, events):
        await enabled(sim, validator)
        sim.stacker_full()
        full = await events.wait(lambda e: isinstance(e, Fault) and e.fault == "stacker_full")
        assert full.active and full.code == 0xE7
        assert not sim.insert_note(1)  # the unit takes no note
        sim.cashbox_removed()
        await events.wait(lambda e: isinstance(e, Fault) and e.fault == "cashbox_removed")
        mark = events.mark()
        sim.cashbox_replaced()
        await events.wait(lambda _: len([f for f in events.of(Fault, mark) if not f.active]) == 2)
        assert {(f.fault, f.active) for f in events.of(Fault, mark)} == {
            ("stacker_full", False), ("cashbox_removed", False)}
        assert sim.insert_note(1)
        await events.wait(lambda e: isinstance(e, Accepted))


async def test_fraud_attempt_is_a_fault_naming_the_channel() -> None:
    async with SspSimulator() as sim, running(sim) as (validator, events):
        await enabled(sim, validator)
        sim.fraud_attempt(3)
        fault = await events.wait(lambda e: isinstance(e, Fault))
        assert (fault.fault, fault.code, fault.active) == ("fraud_attempt", 0xE6, True)
        assert "channel 3" in fault.detail
        assert events.accepted() == []


# ---- resets, disabling, silence ----------------------------------------------------------------


async def test_power_cycle_sets_up_again_and_counts_nothing_twice() -> None:
    async with SspSimulator() as sim, running(sim) as (validator, events):
        await enabled(sim, validator, frozenset({1, 2, 3}))
        sim.insert_note(1)
        await events.wait(lambda e: isinstance(e, Accepted))
        mark, seen = events.mark(), len(sim.received)
        sim.power_cycle()
        assert not sim.unit.enabled and sim.unit.inhibits == 0
        await events.wait(connected(True), after=mark)
        await sim.wait_for(lambda: sim.unit.enabled)
        assert sim.unit.inhibits == 0b111  # the wanted channels, again
        assert Packet(0, True, b"\x11") in sim.received[seen:]  # SYNC after the reset
        sim.insert_note(2)
        await events.wait(lambda _: len(events.accepted()) == 2)
        await polls(sim, 5)
        assert events.accepted() == sim.unit.credited == [1, 2]
        assert all(c.connected for c in events.of(Connection, mark))  # a reset is no loss


async def test_a_unit_that_disables_itself_is_enabled_again() -> None:
    async with SspSimulator() as sim, running(sim) as (validator, events):
        await enabled(sim, validator)
        enables = sum(p.data == b"\x0a" for p in sim.received)
        sim.self_disable()
        await sim.wait_for(lambda: sim.unit.enabled)
        assert sum(p.data == b"\x0a" for p in sim.received) == enables + 1
        sim.insert_note(6)
        await events.wait(lambda e: isinstance(e, Accepted))


async def test_silent_device_is_disconnected_then_identified_again() -> None:
    async with SspSimulator() as sim, running(sim) as (validator, events):
        await enabled(sim, validator)
        mark = events.mark()
        sim.silence()
        lost = await events.wait(connected(False), after=mark)
        assert "no good reply" in lost.reason
        await validator.enable(frozenset({2}))  # offline: returns at once, applied when back
        sim.silence(False)
        back = await events.wait(connected(True), after=mark)
        assert back.identity is not None and len(back.identity.channels) == 6
        await sim.wait_for(lambda: sim.unit.enabled and sim.unit.inhibits == 0b10)
        sim.insert_note(2)
        await events.wait(lambda e: isinstance(e, Accepted))
        assert events.accepted() == sim.unit.credited == [2]


async def test_a_credit_whose_replies_were_lost_until_silence_is_recovered_once() -> None:
    async with SspSimulator() as sim, running(sim) as (validator, events):
        await enabled(sim, validator)
        mark = events.mark()
        attempts = TIMINGS.retries + 1
        # Every attempt of the POLL that carries the credit is lost, and the first retry
        # after the loss too: only the retransmission before SYNC can bring it back.
        sim.lose_reply(attempts * 2, when_event=EventCode.CREDIT)
        sim.insert_note(5)
        await events.wait(connected(False), after=mark)
        await events.wait(connected(True), after=mark)
        await events.wait(lambda e: isinstance(e, Accepted))
        await polls(sim, 5)
        assert events.accepted() == sim.unit.credited == [5]
        assert sim.lost == attempts * 2
