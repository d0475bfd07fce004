"""Every device fault the simulators can inject, during an open session while a POS burst runs
(payments, float added, kicks, receipts): each accepted command took effect exactly once, each
receipt answered ok is on the paper exactly once, every journaled event reached the store once,
in order (``FaultRig.settle_and_check``). And each fault is seen: its event is journaled and in
the store, the store's register alarms show it while it lasts and drop it when it clears.

One test per device, cycling through its faults (seeded order) during one burst; each fault is
held while a few commands go through, then cleared.
"""

from __future__ import annotations

import asyncio
import inspect
import json
import random
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from kassad.daemon.client import KassadClient
from kassad.simulators.cctalk.bus import CcTalkSimulator
from kassad.simulators.serial_drawer import SerialDrawerSimulator
from kassad.simulators.ssp.device import SspSimulator
from tests.faults.conftest import FaultReport
from tests.faults.rig import REGISTER, STORE, FaultRig
from tests.support.register import broker_config, journal_events
from tests.support.register import until as _until

pytestmark = pytest.mark.timeout(120)

Event = dict[str, Any]
Match = Callable[[Event], bool]
Step = Callable[[], object]  # a control verb, plain or async
#: Commands answered (or receipts waiting on the fault) while a fault is held.
HOLD_FOR = 3


def event(kind: str, **data: Any) -> Match:
    """An event of type ``kind`` whose data has these values (a tuple: one of them)."""
    def match(e: Event) -> bool:
        if e["type"] != kind:
            return False
        for key, want in data.items():
            got = e["data"].get(key)
            if (got not in want) if isinstance(want, tuple) else got != want:
                return False
        return True
    match.__name__ = f"{kind} {data}" if data else kind
    return match


def any_of(*matches: Match) -> Match:
    def match(e: Event) -> bool:
        return any(m(e) for m in matches)
    match.__name__ = " or ".join(m.__name__ for m in matches)
    return match


@dataclass
class Fault:
    name: str
    inject: Step
    clear: Step
    #: Events journaled while it lasts (each after the injection), all of them.
    shows: list[Match]
    #: Events journaled once it is cleared.
    clears: list[Match] = field(default_factory=list)
    #: The store's register alarm while it lasts.
    alarm: str | None = None
    #: Receipts wait for it with this reason (a print.job ``waiting``).
    waits: str | None = None
    #: Wait for the drawer to be shut and no kick under way first.
    drawer_quiet: bool = False
    #: The alarm goes when the fault is cleared (False: it goes later, by what clears it —
    #: a coin jam when the acceptor takes a coin again).
    clear_alarm: bool = True


async def until(condition: Callable[[], bool], timeout: float, what: str) -> None:  # noqa: ASYNC109
    """``tests.support.register.until``, saying what it waited for when it times out."""
    try:
        await _until(condition, timeout, what=what)
    except TimeoutError:
        raise AssertionError(f"timed out after {timeout} s waiting for {what}") from None


async def run_step(step: Step) -> None:
    result = step()
    if inspect.isawaitable(result):
        await result


class Watch:
    """What the journal, the store and the POS have seen, for one rig."""

    def __init__(self, rig: FaultRig) -> None:
        self.rig = rig
        self.seen: list[str] = []

    def last_seq(self) -> int:
        events = journal_events(self.rig.journal)
        return int(events[-1]["seq"]) if events else 0

    def journaled_since(self, seq: int, match: Match) -> Event | None:
        return next((e for e in journal_events(self.rig.journal)
                     if e["seq"] > seq and match(e)), None)

    def stored(self, e: Event) -> bool:
        rows = self.rig.store_rows("SELECT body FROM events WHERE store = ? AND register = ? "
                                   "AND seq = ?", STORE, REGISTER, e["seq"])
        return [json.loads(body) for body, in rows] == [e]

    def alarms(self) -> list[str]:
        rows = self.rig.store_rows("SELECT alarms FROM registers WHERE store = ? AND "
                                   "register = ?", STORE, REGISTER)
        return list(json.loads(rows[0][0])) if rows else []

    def answered(self) -> int:
        return sum(1 for s in self.rig.sent.values() if s.outcome is not None)

    def receipts_waiting(self) -> int:
        return sum(1 for s in self.rig.sent.values()
                   if s.command == "print.receipt" and s.outcome is None)

    async def journaled_and_stored(self, seq: int, match: Match, what: str) -> Event:
        """The first event after ``seq`` that matches, once it is in the journal and the
        store (the same body)."""
        found: list[Event] = []

        def check() -> bool:
            if not found:
                e = self.journaled_since(seq, match)
                if e is None:
                    return False
                found.append(e)
            return self.stored(found[0])

        await until(check, timeout=20, what=f"{what}: {match.__name__} journaled and stored")
        self.seen.append(found[0]["type"])
        return found[0]

    async def alarm(self, name: str, *, on: bool, what: str) -> None:
        await until(lambda: (name in self.alarms()) == on, timeout=20,
                    what=f"{what}: store alarm {name} {'raised' if on else 'cleared'}")

    async def drawer_quiet(self) -> None:
        """The drawer shut and no drawer.open waiting for its answer."""
        rig = self.rig
        await until(lambda: not rig.drawer_is_open() and not any(
            s.command == "drawer.open" and s.outcome is None for s in rig.sent.values()),
            timeout=20, what="the drawer shut, no kick under way")

    async def hold(self, fault: Fault) -> None:
        """Inject ``fault``, see it journaled, stored and alarmed while commands go on,
        clear it, see that journaled and the alarm gone."""
        if fault.drawer_quiet:
            await self.drawer_quiet()
        mark, answered = self.last_seq(), self.answered()
        await run_step(fault.inject)
        for match in fault.shows:
            await self.journaled_and_stored(mark, match, fault.name)
        if fault.alarm is not None:
            await self.alarm(fault.alarm, on=True, what=fault.name)
        if fault.waits is not None:
            await self.journaled_and_stored(
                mark, event("print.job", state="waiting", reason=fault.waits), fault.name)
        # Held while the burst goes on: commands answered, or receipts waiting on it.
        await until(lambda: self.answered() - answered + self.receipts_waiting() >= HOLD_FOR,
                    timeout=30, what=f"{fault.name}: commands during the fault")
        if fault.alarm is not None:
            assert fault.alarm in self.alarms(), f"{fault.name}: alarm gone while it lasts"
        mark = self.last_seq()
        await run_step(fault.clear)
        for match in fault.clears:
            await self.journaled_and_stored(mark, match, f"{fault.name} cleared")
        if fault.alarm is not None and fault.clear_alarm:
            await self.alarm(fault.alarm, on=False, what=f"{fault.name} cleared")


async def hold_each_during_a_burst(rig: FaultRig, watch: Watch, faults: list[Fault]) -> None:
    """Four POS workers send commands until every fault was held and cleared, in turn."""
    done = False

    async def injector() -> None:
        nonlocal done
        try:
            for fault in faults:
                await watch.hold(fault)
        finally:
            done = True

    async with asyncio.TaskGroup() as group:
        group.create_task(injector())
        group.create_task(rig.burst(4, until_done=lambda: done))


def printer_faults(rig: FaultRig) -> list[Fault]:
    p = rig.printer
    ready = event("printer.status", connected=True, state="ready")

    def by_hand() -> None:
        rig.cashier_away = True  # the drawer stays open until the fault is cleared
        p.open_drawer_by_hand()

    def shut_by_hand() -> None:
        p.close_drawer()
        rig.cashier_away = False

    opened = any_of(event("drawer.unexpected_open"), event("drawer.opened"))
    return [
        Fault("paper_near_end", p.paper_near_end, p.paper_ok,
              [event("printer.status", paper="near_end")],
              [event("printer.status", paper="ok")], alarm="paper_near_end"),
        Fault("paper_out", p.paper_out, p.paper_ok, [event("printer.status", paper="out")],
              [ready], alarm="paper_out", waits="paper_out"),
        Fault("cover_open", p.cover_open, p.cover_close,
              [event("printer.status", cover_open=True)], [ready], alarm="cover_open",
              waits="cover_open"),
        Fault("go_offline", p.go_offline, p.go_online,
              [event("printer.status", connected=True, online=False, cover_open=False,
                     paper="ok", error=False)],
              [ready], alarm="printer_offline", waits="offline"),
        Fault("cutter_error", p.cutter_error, lambda: p.cutter_error(on=False),
              [event("printer.status", cutter_error=True)], [ready], alarm="printer_error",
              waits="printer_error"),
        Fault("unrecoverable_error", p.unrecoverable_error,
              lambda: p.unrecoverable_error(on=False),
              [event("printer.status", error=True, cutter_error=False),
               event("drawer.kick_failed")],  # the printer ignores kicks meanwhile
              [ready], alarm="printer_error", waits="printer_error"),
        Fault("unplug/replug", p.unplug, p.replug, [event("printer.status", connected=False)],
              [ready], alarm="printer_offline", waits="offline"),
        Fault("jam_drawer", p.jam_drawer, lambda: p.jam_drawer(on=False),
              [event("drawer.kick_failed")]),
        Fault("stick_sensor open", lambda: p.stick_sensor("open"), lambda: p.stick_sensor(None),
              [opened], [event("drawer.closed")], alarm="drawer_open", drawer_quiet=True),
        Fault("stick_sensor closed", lambda: p.stick_sensor("closed"),
              lambda: p.stick_sensor(None), [event("drawer.kick_failed")], drawer_quiet=True),
        Fault("open_drawer_by_hand", by_hand, shut_by_hand, [opened], [event("drawer.closed")],
              alarm="drawer_open", drawer_quiet=True),
    ]


async def test_printer_and_drawer_faults_during_a_burst(tmp_path: Path,
                                                       fault_report: FaultReport) -> None:
    rng = random.Random(1010)
    async with FaultRig(tmp_path, receipts=True) as rig:
        watch = Watch(rig)
        await rig.open_session()
        faults = printer_faults(rig)
        rng.shuffle(faults)
        await hold_each_during_a_burst(rig, watch, faults)
        alarms = watch.alarms()
        assert not {"paper_out", "paper_near_end", "cover_open", "printer_offline",
                    "printer_error"} & set(alarms), alarms
        outcomes = {s.outcome for s in rig.sent.values()}
        figures = await rig.settle_and_check()
    assert "kick_failed" in outcomes, outcomes
    assert figures.receipts > 0
    figures.faults = len(faults)
    fault_report.add("printer and drawer faults (11 kinds)", figures)


# -- the counters: ccTalk coin acceptor and bill validator on one bus, an SSP note validator --

COIN_VALUES = {1: 100, 2: 200, 3: 500, 4: 1000}                        # SEK_COINS, öre
BILL_VALUES = {1: 2000, 2: 5000, 3: 10000, 4: 20000, 5: 50000, 6: 100000}  # SEK_BILLS
NOTE_VALUES = {1: 2000, 2: 5000, 3: 10000, 4: 20000, 5: 50000, 6: 100000}  # ssp.unit.SEK


class Counting:
    """The simulated counters, what they credited (the truth), and a POS of their own that
    runs ``counter.count`` (its answers are checked here, not by the rig's books)."""

    def __init__(self, cctalk: CcTalkSimulator, ssp: SspSimulator, rng: random.Random) -> None:
        self.cctalk, self.ssp, self.rng = cctalk, ssp, rng
        self.pos: KassadClient | None = None
        self.commands = 0

    def config(self) -> dict[str, Any]:
        timings = {"poll_interval": 0.05, "response_timeout": 0.2, "quiet_time": 600.0}
        bus = self.cctalk.pty_path
        return {"counters": [
            {"name": "coins", "protocol": "cctalk", "kind": "coin_acceptor", "path": bus,
             **timings},
            {"name": "bills", "protocol": "cctalk", "kind": "bill_validator", "path": bus,
             **timings},
            {"name": "notes", "protocol": "ssp", "kind": "note_validator",
             "path": self.ssp.pty_path, **timings}]}

    def credited(self) -> dict[str, list[int]]:
        """Values (öre) of every piece each device took in, in order."""
        return {"coins": [COIN_VALUES[c] for c in self.cctalk.coin_acceptor.credited],
                "bills": [BILL_VALUES[b] for b in self.cctalk.bill_validator.stacked],
                "notes": [NOTE_VALUES[n] for n in self.ssp.unit.credited]}

    def insert(self, device: str) -> None:
        """A piece into ``device`` (it may refuse it: disabled, stacker full …)."""
        if device == "coins":
            self.cctalk.insert_coin(self.rng.choice(list(COIN_VALUES)))
        elif device == "bills":
            self.cctalk.insert_bill(self.rng.choice(list(BILL_VALUES)))
        else:
            self.ssp.insert_note(self.rng.choice(list(NOTE_VALUES)))

    async def send(self, command: str, params: dict[str, Any]) -> dict[str, Any]:
        assert self.pos is not None
        self.commands += command == "counter.count"  # state.get reads are not counted
        return (await self.pos.send(command, params, ttl=120)).data

    async def counters(self) -> dict[str, Any]:
        state = await self.send("state.get", {})
        return dict(state["state"]["devices"]["counters"])

    async def drained(self, device: str) -> None:
        """Until the register's run has every piece the device took in (nothing in flight)."""
        seen: Any = None
        for _ in range(400):  # 20 s
            seen = (await self.counters())[device]
            run = seen["run"]
            pending = self.ssp.unit.snapshot()["stages_pending"] if device == "notes" else 0
            if run and run["pieces"] == len(self.credited()[device]) and not pending:
                return
            await asyncio.sleep(0.05)
        raise AssertionError(f"{device}: the register has {seen}, the device credited "
                             f"{self.credited()[device]}")

    async def enabled(self) -> None:
        c, ssp = self.cctalk, self.ssp
        await until(lambda: bool(c.coin_acceptor.enabled_channels and c.coin_acceptor.master
                                 and c.bill_validator.enabled_channels
                                 and c.bill_validator.master and ssp.unit.enabled),
                    timeout=20, what="the three counters enabled for their runs")


def counter_faults(counting: Counting) -> list[Fault]:
    c, s = counting.cctalk, counting.ssp

    def fault(device: str, name: str, **data: Any) -> Match:
        return event("counter.fault", device=device, fault=name, **data)

    def status(device: str, connected: bool) -> Match:
        return event("counter.status", device=device, connected=connected)

    def nothing() -> None:
        return None

    def line(verb: Callable[..., None], address: int) -> Step:
        """A line fault for the next replies of one device: invisible, nothing miscounted."""
        def inject() -> None:
            verb(2, address=address)
        return inject

    return [
        # ccTalk coin acceptor: error events, fraud, a blocked sensor, the line, a silence,
        # a power cycle (its event counter back to 0: re-identified, inhibits restored).
        # A coin jam lasts until the acceptor takes a coin again (ccTalk never says it
        # cleared): the coin inserted after each fault clears it.
        Fault("coins: jam", c.jam, nothing, [fault("coins", "jam")], alarm="counter_jam:coins",
              clear_alarm=False),
        Fault("coins: fraud attempt", c.fraud_attempt, nothing,
              [fault("coins", "fraud_attempt")]),
        Fault("coins: sensor timeout", lambda: c.coin_error(6), nothing,
              [fault("coins", "sensor_error")]),
        Fault("coins: rejected coin", c.reject, nothing, []),
        Fault("coins: replies lost", line(c.lose_reply, 2), nothing, []),
        Fault("coins: replies corrupt", line(c.corrupt_byte, 2), nothing, []),
        Fault("coins: replies twice", line(c.repeat_reply, 2), nothing, []),
        Fault("coins: NAK", line(c.nak_next, 2), nothing, []),
        Fault("coins: BUSY", line(c.busy_next, 2), nothing, []),
        Fault("ccTalk: garbage on the bus", lambda: c.garbage(b"\x00\xff\x17garbage\x02"),
              nothing, []),
        Fault("coins: silent (gone)", lambda: c.silence(2), lambda: c.silence(2, on=False),
              [status("coins", False)], [status("coins", True)],
              alarm="counter_offline:coins"),
        Fault("coins: power cycle", lambda: c.power_cycle(2), nothing,
              [status("coins", False), status("coins", True)], drawer_quiet=False),
        # ccTalk bill validator: its event codes, the line, a silence.
        Fault("bills: stacker full", lambda: c.bill_event(14), lambda: c.bill_event(10),
              [fault("bills", "stacker_full", active=True)],
              [fault("bills", "stacker_full", active=False)], alarm="counter_stacker_full:bills"),
        Fault("bills: stacker removed", lambda: c.bill_event(11), lambda: c.bill_event(12),
              [fault("bills", "stacker_removed", active=True)],
              [fault("bills", "stacker_removed", active=False)],
              alarm="counter_stacker_removed:bills"),
        Fault("bills: jam", lambda: c.bill_event(6), nothing, [fault("bills", "jam")],
              alarm="counter_jam:bills", clear_alarm=False),
        Fault("bills: tamper", lambda: c.bill_event(9), nothing,
              [fault("bills", "fraud_attempt")]),
        Fault("bills: replies lost", line(c.lose_reply, 40), nothing, []),
        Fault("bills: silent (gone)", lambda: c.silence(40), lambda: c.silence(40, on=False),
              [status("bills", False)], [status("bills", True)],
              alarm="counter_offline:bills"),
        # SSP note validator: conditions repeated while they last, one-shot events, the line.
        Fault("notes: safe jam", lambda: s.jam("safe"), lambda: s.jam(None),
              [fault("notes", "jam", active=True)], [fault("notes", "jam", active=False)],
              alarm="counter_jam:notes"),
        Fault("notes: unsafe jam", lambda: s.jam("unsafe"), lambda: s.jam(None),
              [fault("notes", "jam", active=True)], [fault("notes", "jam", active=False)],
              alarm="counter_jam:notes"),
        Fault("notes: stacker full", s.stacker_full, lambda: s.stacker_full(on=False),
              [fault("notes", "stacker_full", active=True)],
              [fault("notes", "stacker_full", active=False)], alarm="counter_stacker_full:notes"),
        Fault("notes: cashbox removed", s.cashbox_removed, s.cashbox_replaced,
              [fault("notes", "cashbox_removed", active=True)],
              [fault("notes", "cashbox_removed", active=False)],
              alarm="counter_cashbox_removed:notes"),
        Fault("notes: fraud attempt", lambda: s.fraud_attempt(3), nothing,
              [fault("notes", "fraud_attempt")]),
        Fault("notes: disabled itself", s.self_disable, nothing, []),
        Fault("notes: replies lost", lambda: s.lose_reply(2), nothing, []),
        Fault("notes: replies corrupt", lambda: s.corrupt_byte(2), nothing, []),
        Fault("notes: reply slow", lambda: s.slow_reply(0.3), nothing, []),
        Fault("notes: silent (gone)", s.silence, lambda: s.silence(on=False),
              [status("notes", False)], [status("notes", True)],
              alarm="counter_offline:notes"),
        Fault("notes: power cycle", s.power_cycle, nothing, []),
    ]


def device_of(fault: Fault) -> str:
    return "coins" if fault.name.startswith(("coins", "ccTalk")) else fault.name.split(":")[0]


async def test_counter_faults_during_counting_runs(tmp_path: Path,
                                                   fault_report: FaultReport) -> None:
    rng = random.Random(2020)
    async with CcTalkSimulator() as cctalk, SspSimulator() as ssp:
        cctalk.open_pty()
        ssp.open_pty()
        counting = Counting(cctalk, ssp, rng)
        async with FaultRig(tmp_path, register_sections={"devices": counting.config()}) as rig, \
                KassadClient(broker_config(rig.broker.port), store=STORE, register=REGISTER,
                             requester="pos-2", employee="e1", retry_interval=0.3,
                             result_retry_interval=0.5, ttl=120) as pos:
            counting.pos = pos
            watch = Watch(rig)
            await rig.open_session()
            await until(lambda: all(
                watch.journaled_since(0, event("counter.status", device=name, connected=True))
                is not None for name in ("coins", "bills", "notes")),
                timeout=20, what="the three counters identified")
            runs = {name: asyncio.create_task(counting.send(
                "counter.count", {"device": name, "action": "start"}))
                for name in ("coins", "bills", "notes")}
            await counting.enabled()
            faults = counter_faults(counting)
            rng.shuffle(faults)
            done = False

            async def injector() -> None:
                nonlocal done
                try:
                    for fault in faults:
                        device = device_of(fault)
                        counting.insert(device)
                        if "power cycle" in fault.name:
                            # A power cycle forgets what the device has not yet reported
                            # (real money then waits for a person): here it is all reported.
                            await counting.drained(device)
                        await watch.hold(fault)
                        await counting.enabled()
                        counting.insert(device)
                        # A ccTalk device keeps its last 5 events: a person feeding coins
                        # faster than the line faults let it be polled loses some (reported
                        # as events_lost). Here each piece is read before the next fault.
                        await counting.drained(device)
                finally:
                    done = True

            async with asyncio.TaskGroup() as group:
                group.create_task(injector())
                group.create_task(rig.burst(4, until_done=lambda: done))
            for name in runs:
                await counting.drained(name)
                stopped = await counting.send("counter.count", {"device": name,
                                                                "action": "stop"})
                started = (await runs[name])["count"]
                assert stopped["count"] == started
                values = counting.credited()[name]
                assert started["pieces"] == len(values), (name, started, values)
                assert started["totals"] == ({"SEK": sum(values)} if values else {})
                assert started["unknown_channels"] == {}
            # Every coin jam was cleared by the coin taken after it: no counter alarm is left.
            await until(lambda: not any(a.startswith("counter_") for a in watch.alarms()),
                        timeout=20, what="no counter alarm left")
            figures = await rig.settle_and_check()
    events = journal_events(rig.journal)
    assert not [e for e in events if e["data"].get("fault") == "events_lost"]
    counted = [e for e in events if e["type"] == "counter.counted"]
    assert sorted(e["data"]["device"] for e in counted) == ["bills", "coins", "notes"]
    pieces = sum(len(v) for v in counting.credited().values())
    assert pieces >= len(faults)
    figures.faults = len(faults)
    figures.commands += counting.commands
    figures.ok += counting.commands
    fault_report.add(f"counter faults in counting runs ({pieces} pieces)", figures)


# -- the drawer on its own serial interface box ----------------------------------------------


def drawer_box_faults(rig: FaultRig, box: SerialDrawerSimulator, link: Path) -> list[Fault]:
    def by_hand() -> None:
        rig.cashier_away = True  # the drawer stays open until the fault is cleared
        box.open_by_hand()

    def shut_by_hand() -> None:
        box.close_drawer()
        rig.cashier_away = False

    def replug() -> None:
        # A USB-serial adaptor plugged in again gets a new tty; udev's symlink (the path the
        # configuration names) follows it, as /dev/kassad/drawer0 does (systemd/60-kassad.rules).
        path = box.replug()
        tmp = link.with_suffix(".new")
        tmp.unlink(missing_ok=True)
        tmp.symlink_to(path)
        tmp.replace(link)

    offline = event("drawer.status", connected=False)
    back = event("drawer.status", connected=True)
    opened = any_of(event("drawer.unexpected_open"), event("drawer.opened"))
    return [
        Fault("box jam", box.jam, lambda: box.jam(on=False), [event("drawer.kick_failed")]),
        Fault("box sensor stuck open", lambda: box.stick_sensor("open"),
              lambda: box.stick_sensor(None), [opened], [event("drawer.closed")],
              alarm="drawer_open", drawer_quiet=True),
        Fault("box sensor stuck closed", lambda: box.stick_sensor("closed"),
              lambda: box.stick_sensor(None), [event("drawer.kick_failed")],
              drawer_quiet=True),
        Fault("box opened by hand", by_hand, shut_by_hand, [opened], [event("drawer.closed")],
              alarm="drawer_open", drawer_quiet=True),
        Fault("box silent", box.silence, lambda: box.silence(on=False), [offline], [back],
              alarm="drawer_offline", drawer_quiet=True),
        Fault("box unplugged", box.unplug, replug, [offline], [back], alarm="drawer_offline",
              drawer_quiet=True),
    ]


async def test_serial_drawer_box_faults_during_a_burst(tmp_path: Path,
                                                      fault_report: FaultReport) -> None:
    rng = random.Random(3030)
    async with SerialDrawerSimulator() as box:
        link = tmp_path / "drawer0"
        link.symlink_to(box.open_pty())
        drawer = {"via": "serial", "serial": {
            "path": str(link), "poll_interval": 0.05, "reply_timeout": 0.2,
            "reconnect_min": 0.05, "reconnect_max": 0.2}}
        async with FaultRig(tmp_path, drawer_box=box,
                            register_sections={"devices.drawer": drawer}) as rig:
            watch = Watch(rig)
            await rig.open_session()
            faults = drawer_box_faults(rig, box, link)
            rng.shuffle(faults)
            await hold_each_during_a_burst(rig, watch, faults)
            assert not {"drawer_open", "drawer_offline"} & set(watch.alarms())
            outcomes = {s.outcome for s in rig.sent.values()}
            figures = await rig.settle_and_check()
    assert "kick_failed" in outcomes, outcomes
    figures.faults = len(faults)
    fault_report.add("serial drawer box faults (6 kinds)", figures)
