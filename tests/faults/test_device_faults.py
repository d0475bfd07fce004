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

from tests.faults.conftest import FaultReport
from tests.faults.rig import REGISTER, STORE, FaultRig
from tests.support.register import journal_events
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
        await until(lambda: not rig.printer.state.drawer_open and not any(
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
        if fault.alarm is not None:
            await self.alarm(fault.alarm, on=False, what=f"{fault.name} cleared")


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
        alarms = watch.alarms()
        assert not {"paper_out", "paper_near_end", "cover_open", "printer_offline",
                    "printer_error"} & set(alarms), alarms
        outcomes = {s.outcome for s in rig.sent.values()}
        figures = await rig.settle_and_check()
    assert "kick_failed" in outcomes, outcomes
    assert figures.receipts > 0
    figures.faults = len(faults)
    fault_report.add("printer and drawer faults (11 kinds)", figures)
