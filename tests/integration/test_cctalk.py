"""The ccTalk drivers against the bus simulator over a real pty.

The three devices run as in the daemon: each device's run() on one shared CcTalkBus over a
ReconnectingTransport(SerialTransport(pty)). Nothing waits on a sleep: events are awaited as
the drivers report them, and "the driver has polled again since" is awaited on the
simulator's request counters (a poll answered after a change has seen that change).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass

import pytest

from kassad.drivers.cctalk.driver import BillValidator, CoinAcceptor, Hopper
from kassad.drivers.cctalk.frames import Frame, Header, buffered_credit_payload, encode
from kassad.drivers.cctalk.hopper import DispenseRefused
from kassad.drivers.cctalk.protocol import CcTalkBus
from kassad.drivers.counter import (
    Accepted,
    Connection,
    CounterEvent,
    Dispensed,
    Fault,
    Rejected,
)
from kassad.drivers.transport.reconnect import ReconnectingTransport
from kassad.drivers.transport.serial import SerialTransport
from kassad.simulators.cctalk.bus import CcTalkSimulator
from kassad.simulators.cctalk.devices import SimBillValidator, SimCoinAcceptor, SimHopper

pytestmark = pytest.mark.timeout(10)

COIN, HOPPER, BILL = 2, 3, 40


class Events:
    """The drivers' on_event: every event kept; wait() re-checks on each new one."""

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
                   timeout: float = 3.0) -> CounterEvent:  # noqa: ASYNC109
        index = after
        try:
            async with asyncio.timeout(timeout):
                while True:
                    for event in self.items[index:]:
                        index += 1
                        if predicate(event):
                            return event
                    await self._new.wait()
        except TimeoutError:
            raise AssertionError(f"no such event; last: {self.items[after:][-8:]}") from None

    async def connection(self, device: str, connected: bool, *, after: int = 0) -> Connection:
        event = await self.wait(lambda e: isinstance(e, Connection) and e.device == device
                                and e.connected is connected, after=after)
        assert isinstance(event, Connection)
        return event

    def accepted(self, device: str) -> list[int]:
        return [e.channel for e in self.items if isinstance(e, Accepted) and e.device == device]

    def of(self, kind: type[CounterEvent], device: str, after: int = 0) -> list[CounterEvent]:
        return [e for e in self.items[after:] if isinstance(e, kind) and e.device == device]


@dataclass
class Rig:
    sim: CcTalkSimulator
    bus: CcTalkBus
    coins: CoinAcceptor
    bills: BillValidator
    hopper: Hopper
    events: Events

    async def polled(self, address: int, header: int, times: int = 2) -> None:
        """Until the driver has sent ``header`` ``times`` more times (and got the answers)."""
        target = self.sim.requests(address, header) + times
        await self.sim.wait_for(lambda: self.sim.requests(address, header) >= target, 3.0)
        # The reply to the last one is on its way: one more request means it was read.
        await self.sim.wait_for(lambda: self.sim.requests(address, header) > target, 3.0)

    async def counted(self, n: int) -> None:
        """Until the coin driver has reported ``n`` Accepted, then two more polls."""
        await self.sim.wait_for(lambda: len(self.sim.coin_acceptor.credited) >= n)
        await self.events.wait(lambda _: len(self.events.accepted("coins")) >= n)
        await self.polled(COIN, Header.READ_BUFFERED_CREDIT)


@contextlib.asynccontextmanager
async def running(sim: CcTalkSimulator | None = None, *, crc: bool = False,
                  echo: bool = True, online: bool = True) -> AsyncIterator[Rig]:
    sim = sim if sim is not None else CcTalkSimulator(crc=crc, echo=echo, payout_interval=0.005)
    async with sim:
        path = sim.open_pty()
        transport = ReconnectingTransport(lambda: SerialTransport(path, 9600), open_timeout=1.0,
                                          backoff_min=0.01, backoff_max=0.05, name="cctalk")
        bus = CcTalkBus(transport, crc=crc, echo=echo, response_timeout=0.1, retries=3,
                        inter_byte_timeout=0.01, busy_delay=0.01)
        events = Events()
        poll, reconnect = 0.01, 0.05
        rig = Rig(sim, bus,
                  CoinAcceptor(bus, "coins", on_event=events, poll_interval=poll,
                               reconnect_interval=reconnect),
                  BillValidator(bus, "bills", on_event=events, poll_interval=poll,
                                reconnect_interval=reconnect),
                  Hopper(bus, "hopper", on_event=events, poll_interval=poll,
                         idle_poll_interval=0.05, reconnect_interval=reconnect,
                         test_interval=0.05),
                  events)
        async with asyncio.TaskGroup() as group:
            tasks = [group.create_task(device.run(), name=device.name)
                     for device in (rig.coins, rig.bills, rig.hopper)]
            try:
                if online:
                    for name in ("coins", "bills", "hopper"):
                        await events.connection(name, True)
                yield rig
            finally:
                for task in tasks:
                    task.cancel()


# ---- identification and enabling ---------------------------------------------------------------


async def test_identification() -> None:
    async with running() as rig:
        identity = rig.coins.identity
        assert identity is not None
        assert (identity.category, identity.manufacturer, identity.product, identity.serial,
                identity.firmware) == ("Coin Acceptor", "KSD", "SIM-COIN", str(0x123456), "1.0")
        assert [(c.channel, c.label, c.currency, c.value_minor) for c in identity.channels] == [
            (1, "SE100A", "SEK", 100), (2, "SE200A", "SEK", 200), (3, "SE500A", "SEK", 500),
            (4, "SE1K0A", "SEK", 1000)]
        bills = rig.bills.identity
        assert bills is not None and bills.category == "Bill Validator"
        assert [(c.channel, c.kind, c.value_minor) for c in bills.channels][:2] == [
            (1, "note", 2000), (2, "note", 5000)]
        hopper = rig.hopper.identity
        assert hopper is not None and hopper.category == "Payout" and hopper.channels == ()
        # Connection(True) is the first thing each device reports, with its identity.
        first = rig.events.of(Connection, "coins")[0]
        assert isinstance(first, Connection) and first.identity == identity
        assert rig.sim.requests(COIN, Header.COIN_ID) == 16
        # Nothing enabled yet: the acceptor keeps its power-up state (all inhibited).
        assert rig.sim.coin_acceptor.enabled_channels == frozenset()


async def test_enable_then_every_coin_is_accepted_exactly_once() -> None:
    async with running() as rig:
        sim = rig.sim
        await rig.coins.enable()
        assert sim.coin_acceptor.enabled_channels == {1, 2, 3, 4}
        assert sim.coin_acceptor.accepts(1)  # master inhibit off too
        sim.insert_coin(1)
        await rig.counted(1)
        for coin in (2, "SE500A", 4, 1):  # a burst between two polls (5 at most)
            sim.insert_coin(coin)
        await rig.counted(5)
        assert rig.events.accepted("coins") == sim.coin_acceptor.credited == [1, 2, 3, 4, 1]
        await rig.coins.enable(frozenset({3}))
        assert sim.coin_acceptor.enabled_channels == {3}
        assert not sim.insert_coin(1)
        rejected = await rig.events.wait(lambda e: isinstance(e, Rejected))
        assert rejected == Rejected("coins", "inhibited_coin", 2)
        await rig.coins.disable()
        assert not sim.coin_acceptor.master and sim.coin_acceptor.enabled_channels == set()
        assert rig.events.accepted("coins") == [1, 2, 3, 4, 1]


async def test_more_than_five_between_polls_is_reported_never_guessed() -> None:
    async with running() as rig:
        await rig.coins.enable()
        for _ in range(8):  # all before the driver can poll again: 3 fall out of the buffer
            rig.sim.insert_coin(2)
        lost = await rig.events.wait(lambda e: isinstance(e, Fault) and e.fault == "events_lost")
        assert isinstance(lost, Fault) and lost.code == 3
        await rig.polled(COIN, Header.READ_BUFFERED_CREDIT)
        assert rig.events.accepted("coins") == [2] * 5


# ---- faults on the line ------------------------------------------------------------------------


async def test_lost_and_repeated_replies_never_double_count() -> None:
    async with running() as rig:
        sim = rig.sim
        await rig.coins.enable()
        for i in range(6):
            sim.insert_coin(1 + i % 4)
            if i % 2:
                sim.lose_reply(address=COIN)    # asked again: the same counter, counted once
            else:
                sim.repeat_reply(address=COIN)  # a second copy: nobody is waiting for it
            await rig.counted(i + 1)
        assert rig.events.accepted("coins") == sim.coin_acceptor.credited
        assert sim.injected == {"lose": 3, "repeat": 3}
        assert len(rig.events.of(Connection, "coins")) == 1  # retried, never offline


async def test_corrupted_reply_is_retried_and_counted_once() -> None:
    async with running() as rig:
        await rig.coins.enable()
        polls = rig.sim.requests(COIN, Header.READ_BUFFERED_CREDIT)
        rig.sim.corrupt_byte(address=COIN)
        rig.sim.insert_coin(3)
        await rig.counted(1)
        assert rig.events.accepted("coins") == [3]
        assert rig.bus.garbage_bytes > 0  # the bad frame was dropped byte by byte
        assert rig.sim.requests(COIN, Header.READ_BUFFERED_CREDIT) > polls + 2
        assert rig.sim.injected == {"corrupt": 1}


async def test_garbage_on_the_line_never_crashes_and_never_counts() -> None:
    async with running() as rig:
        sim = rig.sim
        await rig.coins.enable()
        # A frame that checks out but is addressed from nobody we asked: a spoofed credit.
        fake = encode(Frame(1, 99, 0, buffered_credit_payload(200, [(1, 0)] * 5)))
        noise = [b"\xff\x00\x13", b"\x01\xc8", fake, bytes(12), bytes(range(256)), b"\x01"]
        for i, junk in enumerate(noise):
            sim.garbage(junk, before_reply=bool(i % 2))
            sim.garbage(junk)
            sim.insert_coin(1 + i % 4)
            await rig.counted(i + 1)
        assert rig.events.accepted("coins") == sim.coin_acceptor.credited
        assert len(sim.coin_acceptor.credited) == len(noise)
        assert rig.bus.garbage_bytes > 0
        assert rig.coins.online and rig.bills.online and rig.hopper.online


async def test_nak_and_busy_are_retried() -> None:
    async with running() as rig:
        rig.sim.nak_next(address=COIN)
        rig.sim.busy_next(address=COIN)
        assert await rig.bus.request(COIN, Header.EQUIPMENT_CATEGORY) == b"Coin Acceptor"
        # Both were answered before this request got its ACK (a poll may have met them).
        assert rig.sim.injected == {"nak": 1, "busy": 1}
        assert len(rig.events.of(Connection, "coins")) == 1


async def test_echo_expected_but_absent_is_a_collision() -> None:
    sim = CcTalkSimulator(echo=False)
    async with running(sim, echo=True, online=False) as rig:
        lost = await rig.events.connection("coins", False)
        assert "echo" in lost.reason
        assert rig.bus.collisions > 0


@pytest.mark.parametrize(("crc", "echo"), [(True, True), (False, False)],
                         ids=["crc16", "no-echo"])
async def test_crc_and_echo_variants(crc: bool, echo: bool) -> None:
    async with running(crc=crc, echo=echo) as rig:
        await rig.coins.enable()
        rig.sim.insert_coin(4)
        await rig.counted(1)
        assert rig.events.accepted("coins") == [4]


# ---- the device's own events -------------------------------------------------------------------


async def test_jam_reject_fraud_and_unknown_codes() -> None:
    async with running() as rig:
        sim = rig.sim
        mark = rig.events.mark()
        sim.jam()
        sim.reject()
        sim.fraud_attempt()
        sim.coin_error(254)
        sim.coin_error(99)
        await rig.events.wait(lambda e: isinstance(e, Fault) and e.code == 99, after=mark)
        reported = [e for e in rig.events.items[mark:] if e.device == "coins"]
        assert reported == [
            Fault("coins", "jam", "credit_sensor_blocked (code 14)", 14),
            Rejected("coins", "reject_coin", 1),
            Fault("coins", "fraud_attempt", "coin_on_string_mechanism (code 20)", 20),
            Fault("coins", "coin_return_open", "coin_return_mechanism_activated (code 254)",
                  254),
            Fault("coins", "unknown_error", "error_code_99 (code 99)", 99),
        ]
        assert rig.events.accepted("coins") == []


async def test_power_cycle_is_noticed_and_inhibits_are_restored() -> None:
    async with running() as rig:
        sim = rig.sim
        await rig.coins.enable(frozenset({1, 2}))
        sim.insert_coin(1)
        sim.insert_coin(2)
        await rig.counted(2)
        mark = rig.events.mark()
        sim.power_cycle(COIN)
        assert sim.coin_acceptor.enabled_channels == frozenset()  # as after a real power-up
        lost = await rig.events.connection("coins", False, after=mark)
        assert "reset" in lost.reason
        await rig.events.connection("coins", True, after=mark)
        assert sim.coin_acceptor.enabled_channels == {1, 2}  # restored by the driver
        sim.insert_coin(2)
        sim.insert_coin(1)
        await rig.counted(4)
        assert rig.events.accepted("coins") == [1, 2, 2, 1]


async def test_silent_device_goes_offline_and_comes_back_counting_what_it_buffered() -> None:
    async with running() as rig:
        sim = rig.sim
        await rig.coins.enable()
        mark = rig.events.mark()
        sim.silence(COIN)
        lost = await rig.events.connection("coins", False, after=mark)
        assert "no reply" in lost.reason
        assert rig.bills.online  # the others keep polling on the same bus
        await rig.polled(BILL, Header.READ_BILL_EVENTS)
        categories = sim.requests(COIN, Header.EQUIPMENT_CATEGORY)
        sim.insert_coin(3)  # accepted while the host cannot hear it: kept in its buffer
        sim.silence(COIN, on=False)
        back = await rig.events.connection("coins", True, after=mark)
        assert back.identity == rig.coins.identity
        assert sim.requests(COIN, Header.EQUIPMENT_CATEGORY) > categories  # re-identified
        await rig.counted(1)
        assert rig.events.accepted("coins") == [3]


# ---- bills -------------------------------------------------------------------------------------


async def test_bills_stacked_escrowed_returned_and_stacker_events() -> None:
    async with running() as rig:
        sim = rig.sim
        await rig.bills.enable(frozenset({1, 2, 3}))
        assert sim.bill_validator.enabled_channels == {1, 2, 3}
        sim.insert_bill(2)
        await rig.events.wait(lambda e: isinstance(e, Accepted) and e.device == "bills")
        sim.insert_bill(3, escrow=True)  # held: the driver routes it to the stacker
        await sim.wait_for(lambda: sim.bill_validator.stacked == [2, 3])
        await rig.events.wait(lambda _: rig.events.accepted("bills") == [2, 3])
        await rig.bills.enable(frozenset({1}))
        # Inhibited on the device now; in escrow but unwanted: given back.
        assert not sim.insert_bill(3)
        sim.bill_validator.enabled_channels = frozenset({1, 3})  # e.g. DIP-switch override
        sim.insert_bill(3, escrow=True)
        returned = await rig.events.wait(
            lambda e: isinstance(e, Rejected) and e.reason == "returned_from_escrow")
        assert returned.device == "bills"
        sim.bill_event(14)
        sim.bill_event(10)
        await rig.events.wait(lambda e: isinstance(e, Fault) and not e.active)
        faults = rig.events.of(Fault, "bills")
        assert [(f.fault, f.active) for f in faults if isinstance(f, Fault)] == [
            ("stacker_full", True), ("stacker_full", False)]
        await rig.polled(BILL, Header.READ_BILL_EVENTS)
        assert rig.events.accepted("bills") == [2, 3]
        assert [e.reason for e in rig.events.items if isinstance(e, Rejected)
                and e.device == "bills"] == ["inhibited_bill_on_serial", "returned_from_escrow"]


# ---- the hopper --------------------------------------------------------------------------------


async def test_hopper_dispenses_and_reports_progress() -> None:
    async with running() as rig:
        sim = rig.sim
        await rig.hopper.enable()
        assert sim.hopper.enabled
        mark = rig.events.mark()
        await rig.hopper.dispense(1)
        # Byte for byte the Flow hopper example of device-protocols.md §4.1 (same serial).
        assert bytes.fromhex("03 04 01 a7 df d7 0a 01 90") in sim.received
        await rig.events.wait(lambda e: e == Dispensed("hopper", 1, 0, 0), after=mark)
        mark = rig.events.mark()
        await rig.hopper.dispense(3)
        done = await rig.events.wait(
            lambda e: isinstance(e, Dispensed) and e.remaining == 0, after=mark)
        assert done == Dispensed("hopper", paid=3, unpaid=0, remaining=0)
        assert sim.hopper.total_paid == 4 and sim.hopper.coins == 96
        # A lost reply to the dispense: the event counter shows it was taken, paid once.
        sim.lose_reply(address=HOPPER)
        mark = rig.events.mark()
        await rig.hopper.dispense(2)
        await rig.events.wait(
            lambda e: isinstance(e, Dispensed) and e.remaining == 0 and e.paid == 2, after=mark)
        assert sim.hopper.total_paid == 6 and sim.hopper.counter == 3


async def test_hopper_jam_leaves_coins_unpaid_and_faults() -> None:
    async with running() as rig:
        sim = rig.sim
        await rig.hopper.enable()
        sim.jam_hopper()
        mark = rig.events.mark()
        await rig.hopper.dispense(4)
        done = await rig.events.wait(
            lambda e: isinstance(e, Dispensed) and e.remaining == 0, after=mark)
        assert done == Dispensed("hopper", paid=0, unpaid=4, remaining=0)
        await rig.events.wait(lambda e: isinstance(e, Fault) and e.fault == "payout_blocked")
        await rig.events.wait(lambda e: isinstance(e, Fault) and e.fault == "payout_timeout")
        sim.jam_hopper(False)
        await rig.events.wait(lambda e: isinstance(e, Fault) and e.fault == "payout_blocked"
                              and not e.active)


async def test_hopper_that_wants_the_encrypted_form_refuses_clearly() -> None:
    sim = CcTalkSimulator([SimCoinAcceptor(), SimHopper(security="cipher"), SimBillValidator()])
    async with running(sim) as rig:
        await rig.hopper.enable()
        with pytest.raises(DispenseRefused, match="encrypted"):
            await rig.hopper.dispense(1)
        assert sim.hopper.total_paid == 0
