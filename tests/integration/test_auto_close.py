"""Auto-close against a real broker: the in-process register with a test-controlled clock.

The auto-close task reads its wall clock from ``auto_close.default_clock``; here that is a
:class:`FakeClock` the test sets forward past a boundary, so nothing waits for a real 03:00.
Events still carry the real time of writing (``ts``); the boundary is in ``due_at``.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest

from kassad.daemon.client import KassadClient
from kassad.daemon.config import AutoCloseConfig
from kassad.daemon.contract.events import utc_timestamp
from kassad.daemon.ledger.calendar import closed_period_date, next_close, previous_close
from kassad.daemon.ledger.session import LedgerEvent, fold
from kassad.daemon.register import auto_close
from kassad.daemon.register.service import RegisterService
from kassad.simulators.broker import MosquittoBroker
from tests.support.register import (
    broker_config,
    consumer_events,
    journal_events,
    running_consumer,
    running_register,
    until,
    write_config,
)

TZ = ZoneInfo("Europe/Stockholm")
RULE = AutoCloseConfig(period="daily", at="03:00")
SESSION = {"timezone": "Europe/Stockholm", "business_day_starts": "03:00",
           "auto_close": {"period": "daily", "at": "03:00"}}


class FakeClock:
    """A wall clock that moves only when the test sets it; a sleep lasts until it moves."""

    def __init__(self, now: datetime) -> None:
        self._now = now
        self._moved = asyncio.Event()
        self.sleepers = 0
        self.sleeps = 0  # sleeps begun: the task has finished a round and is waiting

    def now(self) -> datetime:
        return self._now

    async def sleep(self, seconds: float) -> None:
        moved = self._moved
        self.sleepers += 1
        self.sleeps += 1
        try:
            await moved.wait()
        finally:
            self.sleepers -= 1

    def set(self, now: datetime) -> None:
        self._now = now
        self._moved.set()
        self._moved = asyncio.Event()


def sek(n: int) -> dict[str, Any]:
    return {"amount": n, "currency": "SEK"}


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> FakeClock:
    fake = FakeClock(datetime.now(UTC))
    monkeypatch.setattr(auto_close, "default_clock", fake)
    return fake


@pytest.fixture
def config(broker: MosquittoBroker, tmp_path: Path) -> Path:
    return write_config(tmp_path / "r1.toml", port=broker.port, journal=tmp_path / "j.db",
                        session=SESSION)


@pytest.fixture
async def pos(broker: MosquittoBroker) -> AsyncIterator[KassadClient]:
    async with KassadClient(broker_config(broker.port), store="S1", register="R1",
                            requester="pos-1", employee="e1") as client:
        yield client


async def waiting(clock: FakeClock, rounds: int = 1) -> None:
    """Until the auto-close task has gone to sleep ``rounds`` times (it has looked)."""
    await until(lambda: clock.sleepers > 0 and clock.sleeps >= rounds, 10, "auto-close asleep")


async def connected(register: RegisterService) -> None:
    assert register._link is not None
    async with asyncio.timeout(10):
        await register._link.connected.wait()


def closes(journal: Path) -> list[dict[str, Any]]:
    return [e for e in journal_events(journal) if e["type"] == "session.closed"]


def refold(journal: Path) -> dict[str, Any]:
    """The journal folded from scratch: the ledger a restart would have."""
    state = fold(LedgerEvent.from_envelope(e) for e in journal_events(journal))
    return {"open": state.open_session.summary() if state.open_session else None,
            "last": state.last_closed.summary() if state.last_closed else None}


def in_memory(register: RegisterService) -> dict[str, Any]:
    state = register.ledger
    return {"open": state.open_session.summary() if state.open_session else None,
            "last": state.last_closed.summary() if state.last_closed else None}


async def test_the_boundary_closes_the_session_and_the_next_sale_carries_it_forward(
        config: Path, clock: FakeClock, pos: KassadClient, broker: MosquittoBroker,
        tmp_path: Path) -> None:
    journal = tmp_path / "j.db"
    async with running_consumer(broker.port, tmp_path / "agg.db") as _agg, \
            running_register(config) as register:
        await pos.send("session.open", {"starting_float": sek(100000)}, employee="e1")
        await pos.send("payment.record", {"kind": "cash_sale", "tendered": sek(20000),
                                          "change": sek(5050)})
        await pos.send("payment.record", {"kind": "cash_sale", "tendered": sek(5000)})
        await pos.send("payment.record", {"kind": "cash_refund", "amount": sek(1500)})
        await pos.send("payment.record", {"kind": "other", "payment_type": "card",
                                          "amount": sek(9900)})
        expected = {"SEK": 100000 + 14950 + 5000 - 1500}
        await waiting(clock)
        assert register.ledger.open_session is not None  # nothing due yet

        boundary = next_close(clock.now(), RULE, TZ)
        rounds = clock.sleeps
        clock.set(boundary + timedelta(seconds=1))
        await until(lambda: register.ledger.open_session is None, 10, "auto-close")

        (closed,) = closes(journal)
        data = closed["data"]
        assert data["system"] is True and data["reason"] == "auto_close"
        assert data["due_at"] == utc_timestamp(boundary)
        assert data["counted"] is None and data["discrepancy"] is None
        assert data["expected"] == expected
        assert data["left_in_drawer"] == expected
        assert data["removed"] == {"SEK": 0}
        # A business day starting at 03:00: the close at 03:00 ends the day before.
        assert data["business_date"] == (boundary.astimezone(TZ).date()
                                         - timedelta(days=1)).isoformat()
        assert data["business_date"] == closed_period_date(boundary, TZ, "03:00").isoformat()
        assert closed.get("cause") is None  # no command: the register did it
        assert not (closed.get("actor") or {}).get("employee")

        last = register.ledger.last_closed
        assert last is not None and last.number == 1 and last.closed is not None
        assert last.closed.counted is None
        state = (await pos.send("state.get")).data["state"]
        assert state["session"] is None
        assert state["last_closed"]["left_in_drawer"] == expected

        # The register is next used: a cash sale opens session 2 with the amount carried.
        sale = await pos.send("payment.record", {"kind": "cash_sale", "tendered": sek(3000)})
        assert sale.data["session_opened_automatically"] is True
        session = sale.data["session"]
        assert session["number"] == 2 and session["automatic"] is True
        assert session["starting_float"] == expected
        assert session["expected_start"] == expected
        assert session["discrepancy_at_start"] == {}
        assert session["expected_cash"] == {"SEK": expected["SEK"] + 3000}

        # The task waits for the next day's boundary; nothing else closes meanwhile.
        await waiting(clock, rounds + 1)
        assert len(closes(journal)) == 1
        assert in_memory(register) == refold(journal)

        # The store got the close like any other event.
        await until(lambda: any(e["type"] == "session.closed"
                                for e in consumer_events(tmp_path / "agg.db")), 10,
                    "the close at the consumer")


async def test_no_session_open_at_the_boundary_closes_nothing(
        config: Path, clock: FakeClock, pos: KassadClient, tmp_path: Path) -> None:
    async with running_register(config) as register:
        await waiting(clock)
        rounds = clock.sleeps
        clock.set(next_close(clock.now(), RULE, TZ) + timedelta(minutes=5))
        await waiting(clock, rounds + 1)
        assert closes(tmp_path / "j.db") == []
        assert register.ledger.sessions_opened == 0


async def test_a_stale_session_is_closed_at_start_up(
        config: Path, clock: FakeClock, pos: KassadClient, tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch) -> None:
    journal = tmp_path / "j.db"
    async with running_register(config):
        await pos.send("session.open", {"starting_float": sek(50000)})
        await pos.send("payment.record", {"kind": "cash_sale", "tendered": sek(12500)})
        await waiting(clock)
    (opened,) = [e for e in journal_events(journal) if e["type"] == "session.opened"]
    boundary = next_close(datetime.fromisoformat(opened["ts"]), RULE, TZ)

    # Started again before the boundary: the session stays open.
    monkeypatch.setattr(auto_close, "default_clock", early := FakeClock(
        boundary - timedelta(minutes=1)))
    async with running_register(config) as register:
        await waiting(early)
        assert register.ledger.open_session is not None
        await connected(register)  # not stopped mid-connect (aiomqtt leaves a future behind)
    assert closes(journal) == []

    # Started again three days and a bit after it: closed at once, as of the latest boundary.
    due = boundary
    for _ in range(3):
        due = next_close(due, RULE, TZ)
    late_now = due + timedelta(hours=2)
    monkeypatch.setattr(auto_close, "default_clock", late := FakeClock(late_now))
    async with running_register(config) as register:
        await until(lambda: register.ledger.open_session is None, 10, "catch-up")
        await waiting(late)
        (closed,) = closes(journal)
        assert closed["data"]["system"] is True
        assert previous_close(late_now, RULE, TZ) == due
        assert closed["data"]["due_at"] == utc_timestamp(due)
        assert closed["data"]["left_in_drawer"] == {"SEK": 62500}
        # Journaled by this start, after its daemon.started.
        events = journal_events(journal)
        starts = [i for i, e in enumerate(events) if e["type"] == "daemon.started"]
        assert events.index(closed) > starts[-1]

        sale = await pos.send("payment.record", {"kind": "cash_sale", "tendered": sek(1000)})
        assert sale.data["session"]["number"] == 2
        assert sale.data["session"]["starting_float"] == {"SEK": 62500}
        assert in_memory(register) == refold(journal)


async def test_a_close_between_busy_commands_keeps_the_journal_consistent(
        config: Path, clock: FakeClock, pos: KassadClient, tmp_path: Path) -> None:
    """The close waits for the command in hand: every payment lands whole in one session or
    the next, and the journal folds to the ledger the register holds."""
    journal = tmp_path / "j.db"
    async with running_register(config) as register:
        await pos.send("session.open", {"starting_float": sek(10000)})
        await waiting(clock)
        boundary = next_close(clock.now(), RULE, TZ)
        rounds = clock.sleeps
        results: list[dict[str, Any]] = []

        async def lane(first_amount: int) -> None:
            # Three tills' worth of sales, each waiting for its answer: the worker's queue
            # fills and empties as they come, like a busy register's.
            for amount in range(first_amount, first_amount + 10):
                result = await pos.send("payment.record", {"kind": "cash_sale",
                                                           "tendered": sek(amount)})
                results.append(result.data)
                if len(results) == 6:
                    clock.set(boundary)  # the boundary passes while sales are coming in

        await asyncio.gather(lane(100), lane(110), lane(120))
        await until(lambda: len(closes(journal)) == 1, 10, "auto-close")
        await waiting(clock, rounds + 1)

        (closed,) = closes(journal)
        first, second = closed["session_id"], None
        by_session: dict[str, int] = {}
        for r in results:
            sid = r["session"]["session_id"]
            by_session[sid] = by_session.get(sid, 0) + r["payment"]["amount"]["amount"]
            if sid != first:
                second = sid
        assert set(by_session) <= {first, second}
        assert closed["data"]["left_in_drawer"] == {"SEK": 10000 + by_session[first]}
        assert sum(by_session.values()) == sum(100 + i for i in range(30))
        state = register.ledger
        if second is not None:
            assert state.open_session is not None
            assert state.open_session.session_id == second
            assert state.open_session.starting_float == {"SEK": 10000 + by_session[first]}
            assert state.open_session.expected_cash() == {"SEK": 10000 + sum(by_session.values())}
        assert in_memory(register) == refold(journal)


async def test_an_auto_close_prints_its_z_report(
        broker: MosquittoBroker, clock: FakeClock, pos: KassadClient, tmp_path: Path) -> None:
    from kassad.simulators.printer.device import PrinterSimulator

    async with PrinterSimulator() as printer:
        port = await printer.serve_tcp()
        config = write_config(
            tmp_path / "r1.toml", port=broker.port, journal=tmp_path / "j.db", session=SESSION,
            reports={"language": "en"},
            devices={"printer": {"model": "TM-T20II", "status_interval": 0.1,
                                 "transport": {"kind": "tcp", "host": "127.0.0.1",
                                               "port": port}}})
        async with running_register(config) as register:
            await pos.send("session.open", {"starting_float": sek(100000)})
            await pos.send("payment.record", {"kind": "cash_sale", "tendered": sek(5000)})
            await waiting(clock)
            clock.set(next_close(clock.now(), RULE, TZ) + timedelta(seconds=1))
            await until(lambda: register.ledger.open_session is None, 10, "auto-close")
            (z,) = await printer.wait_receipts(1)
    assert "Z REPORT" in z.text and "Z no. 1" in z.text
    assert "not counted" in z.text.lower()
    issued = [e["data"] for e in journal_events(tmp_path / "j.db")
              if e["type"] == "report.issued"]
    assert [(d["kind"], d["number"]) for d in issued] == [("z", 1)]
