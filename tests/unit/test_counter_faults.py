"""A counter's lasting faults (a jam, a full or removed stacker or cashbox) stay in the
register's state until the device says they cleared, and the store shows them meanwhile."""

from __future__ import annotations

from typing import Any, cast

from kassad.daemon.journal.store import EventDraft
from kassad.daemon.register.counting import Counters
from kassad.daemon.store.service import device_alarms
from kassad.drivers.counter import Accepted, Connection, CounterDevice, Fault


async def _no_emit(drafts: list[EventDraft]) -> None:
    raise AssertionError("nothing is journaled in these tests")


def counters() -> Counters:
    devices = cast(dict[str, CounterDevice], {"coins": object(), "notes": object()})
    c = Counters(devices, {}, {"coins": 5.0, "notes": 5.0}, _no_emit, lambda: None)
    for name in devices:
        c.on_event(Connection(name, True, "identified"))
    return c


def faults(c: Counters) -> dict[str, list[str]]:
    return {name: state["faults"] for name, state in c.snapshot().items()}


def queued(c: Counters) -> list[dict[str, Any]]:
    out = []
    while not c._pending.empty():
        out += [d.data for d in c._pending.get_nowait() if d.type == "counter.fault"]
    return out


def test_a_lasting_fault_lasts_until_the_device_says_it_cleared() -> None:
    c = counters()
    c.on_event(Fault("notes", "cashbox_removed", "cashbox removed"))
    c.on_event(Fault("notes", "fraud_attempt", "string"))  # an event only
    assert faults(c) == {"coins": [], "notes": ["cashbox_removed"]}
    assert device_alarms({"devices": {"counters": c.snapshot()}}) == [
        "counter_cashbox_removed:notes"]
    c.on_event(Fault("notes", "cashbox_removed", "cleared: replaced", active=False))
    assert faults(c) == {"coins": [], "notes": []}


def test_a_coin_jam_clears_when_the_acceptor_takes_a_coin_and_says_so() -> None:
    c = counters()
    c.on_event(Fault("coins", "jam", "credit sensor blocked"))
    assert faults(c)["coins"] == ["jam"]
    queued(c)
    c.on_event(Accepted("coins", 1))
    assert faults(c)["coins"] == []
    jams = [f for f in queued(c) if f["fault"] == "jam"]
    assert jams == [{"device": "coins", "fault": "jam", "code": None, "active": False,
                     "detail": "cleared: it took a piece again"}]
    c.on_event(Accepted("coins", 1))
    assert [f for f in queued(c) if f["fault"] == "jam"] == []  # cleared once


def test_a_device_back_after_a_reset_starts_without_faults() -> None:
    c = counters()
    c.on_event(Fault("notes", "stacker_full", "stacker full"))
    c.on_event(Connection("notes", False, "no reply"))
    assert device_alarms({"devices": {"counters": c.snapshot()}}) == [
        "counter_offline:notes", "counter_stacker_full:notes"]
    c.on_event(Connection("notes", True, "identified"))
    assert faults(c)["notes"] == []
