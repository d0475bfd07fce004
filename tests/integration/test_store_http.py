"""The store's HTTP API over a real storage (SQLite and PostgreSQL), on a real loopback port.

Sessions are the register's own fold of ledger events (the worked case and a few more), turned
into rows the way the ingest does; every figure is checked in minor units.
"""

from __future__ import annotations

import asyncio
import csv
import io
import json
import signal
import socket
import urllib.error
import urllib.request
from collections.abc import AsyncIterator
from dataclasses import dataclass
from email.message import Message
from pathlib import Path
from typing import Any

import pytest

from kassad.daemon.ledger.session import LedgerEvent, LedgerState, fold
from kassad.daemon.store import http
from kassad.daemon.store.http import HttpServer, create_app, serve_http
from kassad.daemon.store.ingest import session_row
from kassad.daemon.store.storage.base import Alarm, RegisterRow, SessionRow, Storage
from kassad.daemon.store.storage.postgres import PostgresStorage
from kassad.daemon.store.storage.sqlite import SqliteStorage
from tests.support.postgres import pg_schema, postgres_dsn  # noqa: F401

API = "/api/v1/stores"


# -- sessions from ledger events --------------------------------------------------------------


def sek(amount: int) -> dict[str, Any]:
    return {"amount": amount, "currency": "SEK"}


def eur(amount: int) -> dict[str, Any]:
    return {"amount": amount, "currency": "EUR"}


class Register:
    """Folds one register's events session by session, as the aggregator's ingest does."""

    def __init__(self, store: str, name: str) -> None:
        self.store, self.name = store, name
        self.state = LedgerState()
        self.number = 0

    def session(self, sid: str, opened: str, events: list[tuple[str, str, dict[str, Any]]],
                starting_float: dict[str, int], closed: tuple[str, dict[str, Any]] | None = None,
                *, after: list[tuple[str, str, dict[str, Any]]] | None = None,
                training: bool = False, automatic: bool = False) -> SessionRow:
        """``after``: events that follow the close (its Z report, a correction)."""
        self.number += 1
        data: dict[str, Any] = {
            "number": self.number, "automatic": automatic, "starting_float": starting_float,
            "expected_start": self.state.next_expected_start(), "note": None,
            "training": training}
        if self.state.last_balances:  # as the register's rules carry them on
            data["balances_start"] = {k: dict(v) for k, v in self.state.last_balances.items()}
        steps = [("session.opened", opened, data), *events,
                 *([("session.closed", *closed)] if closed else []), *(after or [])]
        fold([LedgerEvent(t, sid, ts, "anna" if t != "session.closed" else "bo", data)
              for t, ts, data in steps], self.state)
        session = self.state.open_session if closed is None else self.state.last_closed
        assert session is not None and session.session_id == sid
        return session_row(self.store, self.name, session)


def cash_sale(ts: str, tendered: dict[str, Any], change: dict[str, Any],
              amount: dict[str, Any]) -> tuple[str, str, dict[str, Any]]:
    return ("payment.recorded", ts, {"kind": "cash_sale", "amount": amount,
                                     "tendered": tendered, "change": change, "reference": "o1"})


def build_sessions() -> dict[str, SessionRow]:
    r1, r2, old = Register("S1", "R1"), Register("S1", "R2"), Register("S1", "R3")
    rows = {
        # product.md's worked case: float 1000.00, cash sale 149.50, card 320.00, refund
        # 20.00, remove 300.00; counted 828.00, expected 829.50: -1.50; 500.00 left.
        "r1-1": r1.session("r1-1", "2024-05-01T08:00:00Z", [
            cash_sale("2024-05-01T09:00:00Z", sek(20_000), sek(5_050), sek(14_950)),
            ("drawer.opened", "2024-05-01T09:00:01Z", {"cause": "sale"}),
            ("payment.recorded", "2024-05-01T10:00:00Z", {
                "kind": "other", "payment_type": "card", "amount": sek(32_000)}),
            ("payment.recorded", "2024-05-01T11:00:00Z", {
                "kind": "cash_refund", "amount": sek(2_000), "reference": "o0"}),
            ("drawer.opened", "2024-05-01T11:00:01Z", {"cause": "refund"}),
            ("session.adjusted", "2024-05-01T12:00:00Z", {
                "direction": "remove", "amount": sek(30_000), "note": "drawer over its limit"}),
            ("drawer.opened", "2024-05-01T13:00:00Z", {"cause": "no_sale", "reason": "change"}),
            ("report.issued", "2024-05-01T14:00:00Z", {"kind": "x", "copy": False}),
        ], {"SEK": 100_000}, ("2024-05-01T16:00:00Z", {
            "counted": {"SEK": 82_800}, "left_in_drawer": {"SEK": 50_000}, "note": "ok"}),
            after=[("report.issued", "2024-05-01T16:00:01Z", {
                "kind": "z", "number": 1, "copy": False, "copy_number": 0})]),
        # Starts 5.00 short of the 500.00 left, ends 5.00 over: total discrepancy 0.
        "r1-2": r1.session("r1-2", "2024-05-02T08:00:00Z", [
            cash_sale("2024-05-02T09:00:00Z", sek(10_000), sek(0), sek(10_000)),
        ], {"SEK": 49_500}, ("2024-05-02T17:00:00Z", {
            "counted": {"SEK": 60_000}, "left_in_drawer": {"SEK": 50_000}})),
        # Two currencies; opened 07:00 UTC, written with an offset.
        "r2-1": r2.session("r2-1", "2024-05-01T09:00:00+02:00", [
            cash_sale("2024-05-01T09:10:00+02:00", sek(10_000), sek(2_000), sek(8_000)),
            cash_sale("2024-05-01T09:20:00+02:00", eur(1_000), sek(0), eur(1_000)),
            ("payment.recorded", "2024-05-01T09:30:00+02:00", {
                "kind": "cash_refund", "amount": sek(1_000)}),
        ], {"SEK": 20_000}, ("2024-05-01T18:30:00+02:00", {
            "counted": {"SEK": 26_800, "EUR": 1_050}, "left_in_drawer": {"SEK": 20_000}})),
        "r2-2": r2.session("r2-2", "2024-05-02T10:00:00Z", [
            cash_sale("2024-05-02T10:30:00Z", sek(5_000), sek(2_000), sek(3_000)),
        ], {"SEK": 20_000}),
        "r3-1": old.session("r3-1", "2024-04-20T08:00:00Z", [], {"SEK": 10_000}, (
            "2024-04-20T17:00:00Z", {"counted": {"SEK": 11_000}, "left_in_drawer": {}})),
    }
    other = Register("S2", "R1")
    rows["s2"] = other.session("s2", "2024-05-01T08:00:00Z", [
        cash_sale("2024-05-01T08:30:00Z", sek(999_900), sek(0), sek(999_900))], {"SEK": 0})
    rows.update(build_store_s3())
    return rows


def build_store_s3() -> dict[str, SessionRow]:
    """Store S3: an auto-close nobody counted, an approved close corrected afterwards, and a
    training session on another register."""
    r1, r2 = Register("S3", "R1"), Register("S3", "R2")
    return {
        # Float 100.00; cash 100.49 rounded to 100.00 (öresutjämning: -0.49); card 50.00, of
        # which 20.00 is withdrawn from the card balance; closed by the system at midnight.
        "a-1": r1.session("a-1", "2024-06-01T08:00:00Z", [
            ("payment.recorded", "2024-06-01T09:00:00Z", {
                "kind": "cash_sale", "amount": sek(10_000), "tendered": sek(10_000),
                "change": sek(0), "sale_amount": sek(10_049), "rounding": sek(-49)}),
            ("payment.recorded", "2024-06-01T10:00:00Z", {
                "kind": "other", "payment_type": "card", "amount": sek(5_000)}),
            ("session.adjusted", "2024-06-01T11:00:00Z", {
                "direction": "remove", "amount": sek(2_000), "payment_type": "card",
                "note": "terminal payout"}),
        ], {"SEK": 10_000}, ("2024-06-01T22:00:00Z", {
            "counted": None, "discrepancy": None, "expected": {"SEK": 20_000},
            "left_in_drawer": {"SEK": 20_000}, "removed": {"SEK": 0}, "note": None,
            "counted_by": {}, "system": True, "reason": "auto_close",
            "due_at": "2024-06-01T22:00:00Z", "business_date": "2024-06-01", "recounts": 0}),
            after=[("report.issued", "2024-06-01T22:00:00Z", {
                "kind": "z", "number": 1, "copy": False, "copy_number": 0})]),
        # Opens by itself with the 200.00 carried on (and the card's 30.00); one close refused
        # for the difference, then closed 5.00 short with a manager's approval; the count is
        # corrected to 2.00 short afterwards.
        "a-2": r1.session("a-2", "2024-06-02T08:00:00Z", [
            cash_sale("2024-06-02T09:00:00Z", sek(1_000), sek(0), sek(1_000)),
            ("cmd.rejected", "2024-06-02T17:00:00Z", {
                "command": "session.close", "code": "recount_required"}),
        ], {"SEK": 20_000}, ("2024-06-02T17:05:00Z", {
            "counted": {"SEK": 20_500}, "left_in_drawer": {"SEK": 10_000}, "recounts": 1,
            "approval": {"employee": "mia", "role": "manager", "reason": "coins missing"}}),
            after=[("report.issued", "2024-06-02T17:05:01Z", {
                "kind": "z", "number": 2, "copy": False, "copy_number": 0}),
                   ("session.corrected", "2024-06-02T18:00:00Z", {
                       "counted": {"SEK": 20_800}, "counted_before": {"SEK": 20_500},
                       "approval": {"employee": "mia", "role": "manager",
                                    "reason": "3.00 found under the tray"}})],
            automatic=True),
        # Training: 5.00 short, never in a total, no Z number.
        "t-1": r2.session("t-1", "2024-06-01T12:00:00Z", [
            cash_sale("2024-06-01T12:30:00Z", sek(2_000), sek(0), sek(2_000)),
        ], {"SEK": 5_000}, ("2024-06-01T13:00:00Z", {
            "counted": {"SEK": 6_500}, "left_in_drawer": {"SEK": 5_000}}),
            after=[("report.issued", "2024-06-01T13:00:01Z", {
                "kind": "z", "number": None, "copy": False, "copy_number": 0,
                "training": True})], training=True),
    }


SESSIONS = build_sessions()


# -- storage, server, client ------------------------------------------------------------------


@pytest.fixture(params=["sqlite", "postgres"])
async def storage(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Storage]:
    if request.param == "sqlite":
        db: Storage = SqliteStorage(tmp_path / "store.db")
    else:
        db = PostgresStorage(request.getfixturevalue("postgres_dsn"),
                             schema=request.getfixturevalue("pg_schema"))
    await db.open()
    try:
        for row in SESSIONS.values():
            await db.upsert_session(row)
        yield db
    finally:
        await db.close()


@dataclass
class Reply:
    status: int
    headers: Message
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)

    def csv(self) -> list[dict[str, str]]:
        return list(csv.DictReader(io.StringIO(self.body.decode())))


@dataclass
class Api:
    port: int

    async def get(self, path: str) -> Reply:
        def fetch() -> Reply:
            url = f"http://127.0.0.1:{self.port}{path}"
            try:
                with urllib.request.urlopen(url, timeout=10) as answer:
                    return Reply(answer.status, answer.headers, answer.read())
            except urllib.error.HTTPError as e:
                return Reply(e.code, e.headers, e.read())
        return await asyncio.to_thread(fetch)

    async def json(self, path: str) -> Any:
        reply = await self.get(path)
        assert reply.status == 200, (path, reply.body)
        assert reply.headers["Content-Type"] == "application/json"
        return reply.json()


@pytest.fixture
async def api(storage: Storage) -> AsyncIterator[Api]:
    server = HttpServer(create_app(storage, stores=["S1", "S2", "S3", "S9"]), "127.0.0.1", 0)
    task = asyncio.create_task(server.run())
    try:
        async with asyncio.timeout(10):
            await server.started.wait()
        yield Api(server.port)
    finally:
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task


# -- the views --------------------------------------------------------------------------------


async def test_discrepancy_summary(api: Api) -> None:
    view = await api.json(f"{API}/S1/discrepancies?from=2024-05-01&to=2024-05-02")
    assert view["store"] == "S1" and view["truncated"] is False
    assert view["from"] == "2024-05-01T00:00:00Z" and view["to"] == "2024-05-03T00:00:00Z"
    assert [s["session_id"] for s in view["sessions"]] == ["r2-1", "r1-1", "r1-2", "r2-2"]
    by_id = {s["session_id"]: s for s in view["sessions"]}
    assert by_id["r1-1"] | {"start": {"SEK": 0}, "end": {"SEK": -150}, "total": {"SEK": -150},
                            "register": "R1", "number": 1, "status": "closed",
                            "opened_at": "2024-05-01T08:00:00Z",
                            "closed_at": "2024-05-01T16:00:00Z"} == by_id["r1-1"]
    assert (by_id["r1-2"]["start"], by_id["r1-2"]["end"]) == ({"SEK": -500}, {"SEK": 500})
    assert by_id["r2-1"]["end"] == {"EUR": 50, "SEK": -200}
    assert by_id["r2-1"]["start"] == {"EUR": 0, "SEK": 0}  # first session: nothing expected
    assert by_id["r2-2"]["start"] == {"SEK": 0} and by_id["r2-2"]["end"] == {"SEK": 0}
    assert view["totals"] == {"start": {"EUR": 0, "SEK": -500}, "end": {"EUR": 50, "SEK": 150},
                              "total": {"EUR": 50, "SEK": -350}}
    assert view["currencies"] == {"EUR": 2, "SEK": 2}
    assert all(type(v) is int for t in view["totals"].values() for v in t.values())
    assert (view["training_sessions"], view["sessions_without_count"]) == (0, 0)
    assert not any(s["training"] for s in view["sessions"])


async def test_cash_summary(api: Api) -> None:
    view = await api.json(f"{API}/S1/cash?from=2024-05-01T00:00:00Z&to=2024-05-03T00:00:00Z")
    # Gross = tendered − change: 149.50 + 100.00 + 80.00 + 30.00 SEK, 10.00 EUR.
    assert view["totals"] == {"sessions": 4, "training_sessions": 0,
                              "gross": {"EUR": 1_000, "SEK": 35_950},
                              "refunds": {"EUR": 0, "SEK": 3_000},
                              "net": {"EUR": 1_000, "SEK": 32_950},
                              "cash_sales_count": 5, "cash_refunds_count": 2}
    assert view["registers"] == [
        {"store": "S1", "register": "R1", "sessions": 2, "training_sessions": 0,
         "gross": {"SEK": 24_950},
         "refunds": {"SEK": 2_000}, "net": {"SEK": 22_950}, "cash_sales_count": 2,
         "cash_refunds_count": 1},
        {"store": "S1", "register": "R2", "sessions": 2, "training_sessions": 0,
         "gross": {"EUR": 1_000, "SEK": 11_000},
         "refunds": {"EUR": 0, "SEK": 1_000}, "net": {"EUR": 1_000, "SEK": 10_000},
         "cash_sales_count": 3, "cash_refunds_count": 1}]
    # Another store's sessions never show; an unknown-but-served store is empty.
    other = await api.json(f"{API}/S2/cash")
    assert other["totals"]["gross"] == {"SEK": 999_900}
    empty = await api.json(f"{API}/S9/cash")
    assert empty["totals"] == {"sessions": 0, "training_sessions": 0, "gross": {},
                               "refunds": {}, "net": {},
                               "cash_sales_count": 0, "cash_refunds_count": 0}
    assert empty["registers"] == [] and empty["currencies"] == {}


async def ids(api: Api, query: str) -> list[str]:
    view = await api.json(f"{API}/S1/sessions?{query}")
    return [s["session_id"] for s in view["sessions"]]


async def test_session_list_sorted_every_way(api: Api) -> None:
    view = await api.json(f"{API}/S1/sessions")
    assert view["sort"] == "start" and view["order"] == "asc"
    first = view["sessions"][0]
    assert first == {"store": "S1", "register": "R3", "session_id": "r3-1", "number": 1,
                     "status": "closed", "opened_at": "2024-04-20T08:00:00Z",
                     "closed_at": "2024-04-20T17:00:00Z", "training": False,
                     "opened_by": "anna",
                     "closed_by": "bo", "discrepancy_start": {"SEK": 0},
                     "discrepancy_end": {"SEK": 1_000}, "discrepancy": {"SEK": 1_000}}
    by_start = ["r3-1", "r2-1", "r1-1", "r1-2", "r2-2"]
    assert [s["session_id"] for s in view["sessions"]] == by_start
    assert await ids(api, "sort=start&order=desc") == by_start[::-1]
    by_end = ["r3-1", "r1-1", "r2-1", "r1-2", "r2-2"]  # r2-1 closed 16:30 UTC; open one last
    assert await ids(api, "sort=end") == by_end
    assert await ids(api, "sort=end&order=desc") == by_end[::-1]
    # Size of start + end, over currencies: 0 (r1-2: -5.00 then +5.00), 0 (open), 1.50,
    # 2.00 + 0.50 EUR, 10.00; equal sizes by start.
    by_discrepancy = ["r1-2", "r2-2", "r1-1", "r2-1", "r3-1"]
    assert await ids(api, "sort=discrepancy") == by_discrepancy
    assert await ids(api, "sort=discrepancy&order=desc") == by_discrepancy[::-1]
    open_one = (await api.json(f"{API}/S1/sessions?from=2024-05-02T10:00:00Z"))["sessions"]
    assert [(s["session_id"], s["status"], s["closed_at"]) for s in open_one] == [
        ("r1-2", "closed", "2024-05-02T17:00:00Z"), ("r2-2", "open", None)]


async def test_date_range(api: Api) -> None:
    assert await ids(api, "from=2024-05-02") == ["r1-2", "r2-2"]
    assert await ids(api, "to=2024-04-30") == ["r3-1"]  # a date "to" is through its end
    assert await ids(api, "from=2024-04-20&to=2024-04-20") == ["r3-1"]
    assert await ids(api, "from=2024-05-01T16:00:00Z&to=2024-05-01T16:30:00Z") == [
        "r2-1", "r1-1"]  # closing exactly at from still overlaps
    assert await ids(api, "from=2024-05-01T16:00:00.001Z&to=2024-05-02T08:00:00Z") == ["r2-1"]
    # Dates in a store's time zone: 2024-05-01 in Stockholm starts at 22:00 UTC the day before
    # and ends 22:00 UTC on the 1st, before r1-2 and r2-2 open.
    view = await api.json(f"{API}/S1/sessions?from=2024-05-01&to=2024-05-01"
                          "&tz=Europe/Stockholm")
    assert view["from"] == "2024-04-30T22:00:00Z" and view["to"] == "2024-05-01T22:00:00Z"
    assert [s["session_id"] for s in view["sessions"]] == ["r2-1", "r1-1"]
    assert await ids(api, "from=2024-05-01T18%3A00%3A00%2B02%3A00&to=2024-05-02T00:00:00Z") == [
        "r2-1", "r1-1"]  # an offset in the query (+ escaped), compared as an instant
    assert await ids(api, "from=2024-06-01") == ["r2-2"]  # still open: it overlaps
    assert await ids(api, "to=2024-04-01") == []


async def test_session_detail(api: Api) -> None:
    detail = await api.json(f"{API}/S1/sessions/r1-1")
    expected = {
        "store": "S1", "register": "R1", "session_id": "r1-1", "number": 1, "status": "closed",
        "opened_at": "2024-05-01T08:00:00Z", "closed_at": "2024-05-01T16:00:00Z",
        "opened_by": "anna", "closed_by": "bo", "automatic": False, "note": None,
        "close_note": "ok", "starting_float": {"SEK": 100_000}, "expected_start": None,
        "discrepancy_at_start": {}, "cash_sales": {"SEK": 14_950}, "cash_sales_count": 1,
        "cash_refunds": {"SEK": 2_000}, "cash_refunds_count": 1, "adjustments_added": {},
        "adjustments_removed": {"SEK": 30_000},
        "adjustments": [{"direction": "remove", "currency": "SEK", "amount": 30_000,
                         "note": "drawer over its limit", "ts": "2024-05-01T12:00:00Z",
                         "employee": "anna"}],
        "payments_by_type": {"cash": {"SEK": 12_950}, "card": {"SEK": 32_000}},
        "payment_counts": {"cash": 2, "card": 1}, "total_sales": {"SEK": 44_950},
        # Per payment type: cash opens with the float, takes 149.50 − 20.00, loses the 300.00
        # removed: its balance is the expected cash; the card takes 320.00.
        "balances": {
            "cash": {"opening": {"SEK": 100_000}, "payments": {"SEK": 12_950}, "deposits": {},
                     "withdrawals": {"SEK": 30_000}, "balance": {"SEK": 82_950}},
            "card": {"opening": {}, "payments": {"SEK": 32_000}, "deposits": {},
                     "withdrawals": {}, "balance": {"SEK": 32_000}}},
        "rounding": {}, "training": False,
        "drawer_openings": {"sale": 1, "refund": 1, "no_sale": 1}, "no_sale_openings": 1,
        "recount_attempts": 0, "x_printed": 1, "z_number": 1, "z_copies": 0,
        "expected_cash": {"SEK": 82_950},
        "counted": {"SEK": 82_800}, "expected": {"SEK": 82_950}, "discrepancy": {"SEK": -150},
        "left_in_drawer": {"SEK": 50_000}, "removed": {"SEK": 32_800},
        "system_close": False, "approval": None, "recounts": 0, "corrections": [],
        "currencies": {"SEK": 2}}
    assert {k: v for k, v in detail.items() if k != "details"} == expected
    # Two-sided transfers (issue 9) ride in details until the store view shows them.
    assert set(detail["details"]) == {"inventory", "opening_counts", "counter_runs",
                                      "transfers", "transfers_out", "transfers_in"}
    assert (detail["details"]["transfers"], detail["details"]["transfers_out"]) == ([], {})
    still_open = await api.json(f"{API}/S1/sessions/r2-2")
    assert still_open["status"] == "open" and still_open["closed_at"] is None
    assert still_open["counted"] is None and still_open["removed"] is None
    assert (still_open["system_close"], still_open["approval"], still_open["recounts"],
            still_open["corrections"], still_open["z_number"]) == (None, None, None, None, None)
    assert still_open["balances"]["cash"]["balance"] == still_open["expected_cash"]
    assert still_open["expected_cash"] == {"SEK": 23_000}
    assert still_open["expected_start"] == {"EUR": 0, "SEK": 20_000}  # r2-1 left no EUR
    for path in ("S1/sessions/nope", "S2/sessions/r1-1"):  # unknown, or another store's
        reply = await api.get(f"{API}/{path}")
        assert reply.status == 404 and "no session" in reply.json()["detail"]


async def test_training_and_uncounted_closes_stay_out_of_totals(api: Api) -> None:
    disc = await api.json(f"{API}/S3/discrepancies")
    by_id = {s["session_id"]: s for s in disc["sessions"]}
    assert [s["session_id"] for s in disc["sessions"]] == ["a-1", "t-1", "a-2"]  # all listed
    # a-1 closed by the system: no count, so its end is unknown, not 0; a-2's end is the
    # corrected count's -2.00; training t-1's -5.00 is shown, and only shown.
    assert (by_id["a-1"]["start"], by_id["a-1"]["end"], by_id["a-1"]["total"]) == (
        {"SEK": 0}, None, {"SEK": 0})
    assert by_id["a-2"]["end"] == {"SEK": -200} and by_id["a-2"]["training"] is False
    assert by_id["t-1"]["training"] is True and by_id["t-1"]["end"] == {"SEK": -500}
    assert disc["totals"] == {"start": {"SEK": 0}, "end": {"SEK": -200},
                              "total": {"SEK": -200}}
    assert (disc["training_sessions"], disc["sessions_without_count"]) == (1, 1)

    cash = await api.json(f"{API}/S3/cash")
    # a-1's 100.00 (rounded) and a-2's 10.00; training t-1's 20.00 is not cash taken.
    assert cash["totals"] == {"sessions": 2, "training_sessions": 1, "gross": {"SEK": 11_000},
                              "refunds": {"SEK": 0}, "net": {"SEK": 11_000},
                              "cash_sales_count": 2, "cash_refunds_count": 0}
    assert cash["registers"][1] == {
        "store": "S3", "register": "R2", "sessions": 0, "training_sessions": 1, "gross": {},
        "refunds": {}, "net": {}, "cash_sales_count": 0, "cash_refunds_count": 0}

    # The list: every session, flagged; the filter picks them.
    listed = await api.json(f"{API}/S3/sessions")
    assert [(s["session_id"], s["training"], s["discrepancy_end"], s["discrepancy"])
            for s in listed["sessions"]] == [
        ("a-1", False, None, {"SEK": 0}), ("t-1", True, {"SEK": -500}, {"SEK": -500}),
        ("a-2", False, {"SEK": -200}, {"SEK": -200})]
    ids_of = [s["session_id"] for s in (await api.json(
        f"{API}/S3/sessions?training=exclude&sort=discrepancy&order=desc"))["sessions"]]
    assert ids_of == ["a-2", "a-1"]
    only = (await api.json(f"{API}/S3/sessions?training=only"))["sessions"]
    assert [s["session_id"] for s in only] == ["t-1"]
    assert (await api.get(f"{API}/S3/sessions?training=maybe")).status == 422

    # CSV: training marked, an unknown end empty, the total rows without either.
    rows = (await api.get(f"{API}/S3/discrepancies?format=csv")).csv()
    assert [(r["row_type"], r["session_id"], r["training"], r["end_minor"], r["total_minor"])
            for r in rows] == [("session", "a-1", "false", "", "0"),
                               ("session", "t-1", "true", "-500", "-500"),
                               ("session", "a-2", "false", "-200", "-200"),
                               ("total", "", "", "-200", "-200")]
    rows = (await api.get(f"{API}/S3/cash?format=csv")).csv()
    assert [(r["row_type"], r["register"], r["sessions"], r["training_sessions"],
             r["gross_minor"]) for r in rows] == [
        ("register", "R1", "2", "0", "11000"), ("register", "R2", "0", "1", ""),
        ("total", "", "2", "1", "11000")]
    rows = (await api.get(f"{API}/S3/sessions?training=only&format=csv")).csv()
    assert [(r["session_id"], r["training"]) for r in rows] == [("t-1", "true")]


async def test_session_detail_of_a_system_close_and_a_corrected_close(api: Api) -> None:
    auto = await api.json(f"{API}/S3/sessions/a-1")
    assert auto["system_close"] is True and auto["closed_by"] == "bo"
    assert auto["counted"] is None and auto["discrepancy"] is None  # nobody counted
    assert (auto["expected"], auto["left_in_drawer"], auto["removed"]) == (
        {"SEK": 20_000}, {"SEK": 20_000}, {"SEK": 0})
    assert auto["rounding"] == {"SEK": -49}
    assert auto["balances"] == {
        "cash": {"opening": {"SEK": 10_000}, "payments": {"SEK": 10_000}, "deposits": {},
                 "withdrawals": {}, "balance": {"SEK": 20_000}},
        "card": {"opening": {}, "payments": {"SEK": 5_000}, "deposits": {},
                 "withdrawals": {"SEK": 2_000}, "balance": {"SEK": 3_000}}}
    assert (auto["z_number"], auto["approval"], auto["recounts"], auto["corrections"]) == (
        1, None, 0, [])
    assert auto["details"]["reason"] == "auto_close"
    assert auto["details"]["due_at"] == "2024-06-01T22:00:00Z"
    assert auto["details"]["business_date"] == "2024-06-01"

    corrected = await api.json(f"{API}/S3/sessions/a-2")
    assert corrected["automatic"] is True and corrected["expected_start"] == {"SEK": 20_000}
    assert corrected["balances"]["card"] == {
        "opening": {"SEK": 3_000}, "payments": {}, "deposits": {}, "withdrawals": {},
        "balance": {"SEK": 3_000}}  # carried on from a-1
    assert corrected["approval"] == {"employee": "mia", "role": "manager",
                                     "reason": "coins missing"}
    assert (corrected["recounts"], corrected["recount_attempts"], corrected["z_number"]) == (
        1, 1, 2)
    # The count as corrected: 208.00 of 210.00 expected.
    assert (corrected["counted"], corrected["discrepancy"], corrected["removed"]) == (
        {"SEK": 20_800}, {"SEK": -200}, {"SEK": 10_800})
    assert corrected["corrections"] == [{
        "ts": "2024-06-02T18:00:00Z", "employee": "anna",
        "approval": {"employee": "mia", "role": "manager",
                     "reason": "3.00 found under the tray"},
        "counted_before": {"SEK": 20_500}, "counted": {"SEK": 20_800}}]

    training = await api.json(f"{API}/S3/sessions/t-1")
    assert training["training"] is True and training["z_number"] is None
    assert training["system_close"] is False and training["discrepancy"] == {"SEK": -500}


async def test_registers_and_alarms(api: Api, storage: Storage) -> None:
    await storage.upsert_register(RegisterRow(
        "S1", "R1", True, "2024-05-01T10:00:00Z", {"online": True},
        {"printer": {"configured": True, "paper": "out"}}, ["paper_out", "drawer_open"]))
    await storage.upsert_register(RegisterRow("S1", "R2", False, "2024-05-01T09:00:00Z"))
    await storage.upsert_register(RegisterRow("S2", "R1", True, None))
    await storage.add_alarm(Alarm("2024-05-01T11:00:00Z", "S1", "R1", "fork", {"seq": 3}))
    await storage.add_alarm(Alarm("2024-05-02T11:00:00Z", "S1", "R2", "chain_broken", {}))
    await storage.add_alarm(Alarm("2024-05-01T12:00:00Z", "S2", "R1", "conflict", {}))
    view = await api.json(f"{API}/S1/registers")
    assert (view["online"], view["offline"], view["with_alarms"]) == (1, 1, 1)
    r1, r2 = view["registers"]
    assert r1 == {"store": "S1", "register": "R1", "online": True,
                  "last_seen": "2024-05-01T10:00:00Z", "alarms": ["paper_out", "drawer_open"],
                  "devices": {"printer": {"configured": True, "paper": "out"}},
                  "recent_alarms": [{"ts": "2024-05-01T11:00:00Z", "store": "S1",
                                     "register": "R1", "kind": "fork", "detail": {"seq": 3}}]}
    assert r2["online"] is False and r2["alarms"] == [] and len(r2["recent_alarms"]) == 1
    alarms = await api.json(f"{API}/S1/alarms")
    assert [a["kind"] for a in alarms["alarms"]] == ["chain_broken", "fork"]  # newest first
    assert alarms["truncated"] is False
    ranged = await api.json(f"{API}/S1/alarms?to=2024-05-01")
    assert [a["kind"] for a in ranged["alarms"]] == ["fork"]
    limited = await api.json(f"{API}/S1/alarms?limit=1")
    assert [a["kind"] for a in limited["alarms"]] == ["chain_broken"] and limited["truncated"]
    reply = await api.get(f"{API}/S1/registers?format=csv")
    assert reply.csv() == [
        {"store": "S1", "register": "R1", "online": "true", "last_seen": "2024-05-01T10:00:00Z",
         "alarms": "paper_out;drawer_open", "recent_alarms": "1"},
        {"store": "S1", "register": "R2", "online": "false", "last_seen": "2024-05-01T09:00:00Z",
         "alarms": "", "recent_alarms": "1"}]
    reply = await api.get(f"{API}/S1/alarms?format=csv")
    assert [(a["kind"], a["detail"]) for a in reply.csv()] == [
        ("chain_broken", "{}"), ("fork", '{"seq":3}')]


# -- CSV --------------------------------------------------------------------------------------


async def test_csv_downloads(api: Api) -> None:
    day = "from=2024-05-01&to=2024-05-01"
    reply = await api.get(f"{API}/S1/sessions?{day}&sort=discrepancy&order=desc&format=csv")
    assert reply.status == 200
    assert reply.headers["Content-Type"] == "text/csv; charset=utf-8"
    assert reply.headers["Content-Disposition"] == (
        'attachment; filename="S1-sessions-20240501T000000Z_20240502T000000Z'
        '-discrepancy-desc.csv"')
    assert reply.body.startswith(b"store,register,session_id,number,status,opened_at,"
                                 b"closed_at,training,opened_by,closed_by,currency,"
                                 b"discrepancy_start_minor,discrepancy_start,"
                                 b"discrepancy_end_minor,discrepancy_end,discrepancy_minor,"
                                 b"discrepancy\r\n")
    rows = reply.csv()
    assert [(r["session_id"], r["currency"], r["discrepancy_minor"], r["discrepancy"])
            for r in rows] == [("r2-1", "EUR", "50", "0.50"), ("r2-1", "SEK", "-200", "-2.00"),
                               ("r1-1", "SEK", "-150", "-1.50")]
    assert rows[2]["opened_at"] == "2024-05-01T08:00:00Z" and rows[2]["status"] == "closed"
    assert rows[2]["training"] == "false"

    reply = await api.get(f"{API}/S1/discrepancies?{day}&format=csv")
    assert reply.headers["Content-Disposition"].startswith(
        'attachment; filename="S1-discrepancies-')
    assert [(r["row_type"], r["session_id"], r["currency"], r["start"], r["end"], r["total"])
            for r in reply.csv()] == [
        ("session", "r2-1", "EUR", "0.00", "0.50", "0.50"),
        ("session", "r2-1", "SEK", "0.00", "-2.00", "-2.00"),
        ("session", "r1-1", "SEK", "0.00", "-1.50", "-1.50"),
        ("total", "", "EUR", "0.00", "0.50", "0.50"),
        ("total", "", "SEK", "0.00", "-3.50", "-3.50")]

    reply = await api.get(f"{API}/S1/cash?{day}&format=csv")
    assert [(r["row_type"], r["register"], r["currency"], r["gross_minor"], r["gross"],
             r["refunds"], r["net_minor"], r["net"]) for r in reply.csv()] == [
        ("register", "R1", "SEK", "14950", "149.50", "20.00", "12950", "129.50"),
        ("register", "R2", "EUR", "1000", "10.00", "0.00", "1000", "10.00"),
        ("register", "R2", "SEK", "8000", "80.00", "10.00", "7000", "70.00"),
        ("total", "", "EUR", "1000", "10.00", "0.00", "1000", "10.00"),
        ("total", "", "SEK", "22950", "229.50", "30.00", "19950", "199.50")]

    # An empty view is a header alone.
    reply = await api.get(f"{API}/S9/sessions?format=csv")
    assert reply.status == 200 and reply.body.count(b"\r\n") == 1


async def test_too_many_rows_are_flagged(api: Api, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(http, "MAX_ROWS", 2)
    view = await api.json(f"{API}/S1/sessions?sort=discrepancy")
    assert view["truncated"] is True and len(view["sessions"]) == 2
    reply = await api.get(f"{API}/S1/discrepancies?format=csv")
    assert reply.headers["X-Kassad-Truncated"] == "true"
    assert {r["session_id"] for r in reply.csv()} == {"r3-1", "r2-1", ""}
    assert "X-Kassad-Truncated" not in (await api.get(f"{API}/S2/cash?format=csv")).headers


# -- errors, documentation, the server --------------------------------------------------------


@pytest.mark.parametrize(("query", "where", "says"), [
    ("sort=amount", "sort", "start"),
    ("order=down", "order", "asc"),
    ("format=xlsx", "format", "csv"),
    ("from=yesterday", "from", "neither an RFC 3339 time nor a date"),
    ("from=2024-05-01T08:00:00", "from", "no UTC offset"),
    ("to=2024-13-01", "to", "neither"),
    ("from=2024-05-02&to=2024-05-01", "to", "after from"),
    ("from=2024-05-01T10:00:00Z&to=2024-05-01T10:00:00Z", "to", "after from"),
    ("tz=Mars/Olympus", "tz", "unknown time zone"),
    ("tz=../../etc/passwd", "tz", "unknown time zone"),
])
async def test_bad_queries_are_422(api: Api, query: str, where: str, says: str) -> None:
    reply = await api.get(f"{API}/S1/sessions?{query}")
    assert reply.status == 422, reply.body
    detail = reply.json()["detail"]
    assert detail[0]["loc"] == ["query", where] and says in json.dumps(detail)


async def test_other_errors(api: Api) -> None:
    assert (await api.get(f"{API}/S1/alarms?limit=0")).status == 422
    assert (await api.get(f"{API}/S1/alarms?limit=10001")).status == 422
    assert (await api.get(f"{API}/bad%20id/sessions")).status == 422
    reply = await api.get(f"{API}/S7/sessions")
    assert reply.status == 404 and "not served" in reply.json()["detail"]
    assert (await api.get("/api/v1/nothing")).status == 404


async def test_figures_that_are_not_money_are_refused(api: Api, storage: Storage) -> None:
    bad = SessionRow(store="S9", register="R1", session_id="bad", number=1, status="open",
                     opened_at="2024-05-01T08:00:00Z", closed_at=None, opened_by=None,
                     closed_by=None, discrepancy_start={}, discrepancy_end={},
                     cash_gross={"SEK": 1.5}, cash_refunds={}, summary={})  # type: ignore[dict-item]
    await storage.upsert_session(bad)
    reply = await api.get(f"{API}/S9/cash")
    assert reply.status == 500 and "not integer minor units" in reply.json()["detail"]


async def test_openapi_and_docs(api: Api) -> None:
    doc = await api.json("/openapi.json")
    assert doc["info"]["title"] == "kassad store aggregator"
    assert set(doc["paths"]) == {f"{API}/{{store}}/{p}" for p in (
        "discrepancies", "cash", "sessions", "sessions/{session_id}", "registers", "alarms",
        # issue 9 (tests/integration/test_store_safes.py)
        "safes", "safes/{safe}", "safes/{safe}/{action}", "transfers",
        "transfers/{transfer_id}", "transfers/reconcile", "transfers/unreconcile")}
    sessions = doc["paths"][f"{API}/{{store}}/sessions"]["get"]
    params = {p["name"]: p for p in sessions["parameters"]}
    assert set(params) == {"store", "from", "to", "tz", "sort", "order", "format", "training"}
    assert params["training"]["schema"]["enum"] == ["include", "exclude", "only"]
    assert params["sort"]["schema"]["enum"] == ["start", "end", "discrepancy"]
    assert set(sessions["responses"]["200"]["content"]) == {"application/json", "text/csv"}
    amounts = doc["components"]["schemas"]["SessionItem"]["properties"]["discrepancy"]
    assert amounts["additionalProperties"] == {"type": "integer"}
    docs = await api.get("/api/docs")
    assert docs.status == 200 and b"swagger" in docs.body.lower()


async def test_database_down_is_503(tmp_path: Path) -> None:
    closed = SqliteStorage(tmp_path / "store.db")  # never opened
    server = HttpServer(create_app(closed), "127.0.0.1", 0)
    task = asyncio.create_task(server.run())
    try:
        await server.started.wait()
        reply = await Api(server.port).get(f"{API}/S1/sessions")
        assert reply.status == 503
        assert reply.json() == {"detail": "the store database is unavailable"}
    finally:
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task


async def test_server_leaves_signals_alone_and_stops(tmp_path: Path) -> None:
    storage = SqliteStorage(tmp_path / "store.db")
    await storage.open()
    before = signal.getsignal(signal.SIGINT), signal.getsignal(signal.SIGTERM)
    started = asyncio.Event()
    holder = socket.socket()
    holder.bind(("127.0.0.1", 0))
    port = holder.getsockname()[1]
    holder.close()
    task = asyncio.create_task(serve_http(create_app(storage), "127.0.0.1", port, started))
    try:
        async with asyncio.timeout(10):
            await started.wait()
        assert (signal.getsignal(signal.SIGINT), signal.getsignal(signal.SIGTERM)) == before
        assert (await Api(port).json(f"{API}/any/sessions"))["sessions"] == []
        # The port is taken: a second server says so, as an OSError, not by exiting.
        with pytest.raises(OSError, match=f"cannot listen on 127.0.0.1:{port}"):
            await HttpServer(create_app(storage), "127.0.0.1", port).run()
    finally:
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        await storage.close()
    assert (signal.getsignal(signal.SIGINT), signal.getsignal(signal.SIGTERM)) == before
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection(("127.0.0.1", port), timeout=2).close()
