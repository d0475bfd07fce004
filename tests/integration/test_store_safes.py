"""Issue 9, the store side: the cash book's storage (SQLite and PostgreSQL, one suite), the
registers' transfer events through the ingest, and the safes' and transfers' HTTP API.

The registers' events are written here by hand in the shapes of the shared design
(``cash.transferred_out`` / ``cash.transferred_in``), hashed and chained as a register does.
"""

from __future__ import annotations

import asyncio
import csv
import io
import json
import sqlite3
import urllib.error
import urllib.request
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import aiomqtt
import psycopg
import pytest
from psycopg import sql

from kassad.daemon.contract.events import GENESIS_HASH, event_hash
from kassad.daemon.store.cashbook import CashBook
from kassad.daemon.store.config import StoreConfig
from kassad.daemon.store.http import HttpServer, create_app
from kassad.daemon.store.ingest import Ingest, parse_event
from kassad.daemon.store.safes import CashRuleError
from kassad.daemon.store.service import StoreService
from kassad.daemon.store.storage.base import (
    CashStep,
    EventRow,
    SessionRow,
    Storage,
    TransferRow,
)
from kassad.daemon.store.storage.postgres import PostgresStorage
from kassad.daemon.store.storage.sqlite import SqliteStorage
from kassad.simulators.broker import MosquittoBroker
from tests.support.postgres import pg_schema, postgres_dsn  # noqa: F401
from tests.support.register import broker_config

API = "/api/v1/stores/S1"
SAFES = {"S1": {"SAFE1": "Back office"}}


@pytest.fixture(params=["sqlite", "postgres"])
async def storage(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Storage]:
    if request.param == "sqlite":
        db: Storage = SqliteStorage(tmp_path / "store.db")
    else:
        db = PostgresStorage(request.getfixturevalue("postgres_dsn"),
                             schema=request.getfixturevalue("pg_schema"))
    await db.open()
    try:
        yield db
    finally:
        await db.close()


# -- the storage: one conformance suite --------------------------------------------------------


def row(tid: str, **kw: Any) -> TransferRow:
    base: dict[str, Any] = {
        "store": "S1", "transfer_id": tid, "side": "register", "owner": "R1",
        "direction": "out", "party": {"kind": "safe", "id": "SAFE1"},
        "amounts": {"SEK": 50_000}, "ts": "2024-05-01T10:00:00Z"}
    return TransferRow(**{**base, **kw})


async def test_transfers_and_steps_are_stored_and_read_back(storage: Storage) -> None:
    drop = row("R1-T1", session_id="s-1", bag="B7", seal="0042", employee="anna")
    later = row("R1-T2", ts="2024-05-01T12:00:00+02:00")  # 10:00Z: ordered by UTC, then id
    receipt = row("SAFE1-S1", side="safe", owner="SAFE1", direction="in",
                  party={"kind": "register", "id": "R1"}, of_transfer="R1-T1",
                  ts="2024-05-01T09:00:00Z")
    other_store = row("R1-T1", store="S2")
    await storage.save_cash([drop, later, receipt, other_store], [
        CashStep("S1", "2024-05-01T10:00:00Z", "safe.receipt", "SAFE1",
                 {"amounts": {"SEK": 50_000}, "note": "ö"}, employee="bo"),
        CashStep("S1", "2024-05-01T10:00:00Z", "transfer.recorded", "R1-T1", {}),
        CashStep("S2", "2024-05-01T10:00:00Z", "safe.receipt", "SAFE1", {})])
    assert await storage.transfer("S1", "R1-T1") == drop
    assert await storage.transfer("S2", "R1-T1") == other_store
    assert await storage.transfer("S1", "nope") is None
    assert [t.transfer_id for t in await storage.transfers("S1")] == [
        "SAFE1-S1", "R1-T1", "R1-T2"]
    assert await storage.transfers("S1", of_transfer="R1-T1") == [receipt]
    steps = await storage.cash_steps("S1", "SAFE1")
    assert [(s.kind, s.employee, s.data) for s in steps] == [
        ("safe.receipt", "bo", {"amounts": {"SEK": 50_000}, "note": "ö"})]
    assert [s.subject for s in await storage.cash_steps("S1")] == ["SAFE1", "R1-T1"]

    # An upsert changes the row (status and all); steps are only ever appended.
    done = replace(drop, status="reconciled", counterpart="SAFE1-S1",
                   by={"employee": None, "role": "system"})
    await storage.save_cash([done], [
        CashStep("S1", "2024-05-01T10:01:00Z", "transfer.reconciled", "R1-T1",
                 {"counterpart": "SAFE1-S1"}, role="system")])
    assert await storage.transfer("S1", "R1-T1") == done
    assert [t.transfer_id for t in await storage.transfers("S1", status="reconciled")] == [
        "R1-T1"]
    assert [t.transfer_id for t in await storage.transfers("S1", status="unreconciled")] == [
        "SAFE1-S1", "R1-T2"]
    ids = [s.id for s in await storage.cash_steps("S1", "R1-T1")]
    assert len(ids) == 2 and ids == sorted(ids)


async def test_a_save_is_conditional_on_what_is_stored(storage: Storage) -> None:
    """``new``: not stored yet; ``expect``: stored with that status — else nothing written
    (several aggregators on one database)."""
    step = CashStep("S1", "2024-05-01T10:00:00Z", "transfer.recorded", "R1-T1", {})
    assert await storage.save_cash([row("R1-T1")], [step], new="R1-T1") is True
    assert await storage.save_cash([row("R1-T1", note="again")], [step], new="R1-T1") is False
    assert (await storage.transfer("S1", "R1-T1")).note is None  # type: ignore[union-attr]
    assert len(await storage.cash_steps("S1")) == 1
    done = replace(row("R1-T1"), status="reconciled")
    assert await storage.save_cash([done], [step], expect={"R1-T1": "reconciled"}) is False
    assert await storage.save_cash([done], [step], expect={"R1-T9": "unreconciled"}) is False
    assert len(await storage.cash_steps("S1")) == 1
    assert await storage.save_cash([done, row("R1-T2")], [step], new="R1-T2",
                                   expect={"R1-T1": "unreconciled"}) is True
    assert [t.status for t in await storage.transfers("S1")] == ["reconciled", "unreconciled"]
    assert len(await storage.cash_steps("S1")) == 2


async def test_two_aggregators_record_a_transfer_once(storage: Storage) -> None:
    """Two books on one database take the same event (a shared subscription): one records
    it; the safe's next transfer number taken meanwhile is a 409, never an overwrite."""
    till = Till("R1")
    till.open("s-1")
    till.out("s-1", ("safe", "SAFE1"), {"SEK": 700})
    one, two = CashBook(storage, SAFES), CashBook(storage, SAFES)
    await asyncio.gather(one.take_events(till.rows), two.take_events(till.rows))
    kinds = [s.kind for s in await storage.cash_steps("S1")]
    assert kinds == ["transfer.recorded"]
    await one.safe_action("S1", "SAFE1", "declare_start", {"SEK": 0}, employee="mia")
    taken = replace(row("SAFE1-S1"), side="safe", owner="SAFE1")
    await storage.save_cash([taken], [])  # as if another aggregator just numbered it
    with pytest.raises(CashRuleError) as refused:
        await one.safe_action("S1", "SAFE1", "receipt", {"SEK": 700}, employee="mia",
                              register="R1", of_transfer="R1-T1")
    assert refused.value.status == 409
    assert (await storage.transfer("S1", "SAFE1-S1")) == taken


async def test_a_schema_1_database_is_migrated(storage: Storage) -> None:
    """A store database of before issue 9 (schema 1) gets the cash book's tables on open."""
    await storage.save_cash([row("R1-T1")], [])
    await storage.close()
    drop = ["DROP TABLE cash_steps", "DROP TABLE transfers",
            "UPDATE meta SET value = '1' WHERE key = 'schema_version'"]
    if isinstance(storage, SqliteStorage):
        with sqlite3.connect(storage.path) as db:
            for statement in drop:
                db.execute(statement)
        again: Storage = SqliteStorage(storage.path)
    else:
        assert isinstance(storage, PostgresStorage)
        with psycopg.connect(storage._dsn, autocommit=True) as conn:
            conn.execute(sql.SQL("SET search_path TO {}").format(sql.Identifier(storage.schema)))
            for statement in drop:
                conn.execute(statement)  # type: ignore[call-overload]
        again = PostgresStorage(storage._dsn, schema=storage.schema)
    await again.open()
    try:
        assert await again.transfers("S1") == []
        assert await again.save_cash([row("R1-T1")], [], new="R1-T1") is True
    finally:
        await again.close()
    await storage.open()  # the fixture closes it


async def test_a_failed_save_stores_nothing(storage: Storage) -> None:
    bad = CashStep("S1", "2024-05-01T10:00:00Z", "x", "SAFE1", {"n": 1})
    with pytest.raises(Exception):  # noqa: B017 - either driver's error
        await storage.save_cash([row("R1-T1")], [bad, replace(bad, subject=None)])  # type: ignore[arg-type]
    assert await storage.transfer("S1", "R1-T1") is None
    assert await storage.cash_steps("S1") == []


# -- registers' events ---------------------------------------------------------------------------


@dataclass
class Till:
    """Writes one register's events as the register would: hashed, chained, in seq order."""

    register: str
    store: str = "S1"
    seq: int = 0
    prev: str = GENESIS_HASH
    transfers: int = 0
    rows: list[EventRow] = field(default_factory=list)

    def event(self, type_: str, session_id: str, data: dict[str, Any],
              ts: str = "2024-05-01T10:00:00Z") -> EventRow:
        self.seq += 1
        body: dict[str, Any] = {
            "v": 1, "store": self.store, "register": self.register, "epoch": 1, "seq": self.seq,
            "event_id": str(uuid.uuid4()), "type": type_, "ts": ts, "session_id": session_id,
            "prev_hash": self.prev, "actor": {"employee": "anna"}, "data": data}
        body["hash"] = event_hash(body)
        self.prev = body["hash"]
        parsed = parse_event(self.store, self.register, json.dumps(body).encode())
        self.rows.append(parsed)
        return parsed

    def open(self, session_id: str) -> EventRow:
        return self.event("session.opened", session_id, {
            "number": 1, "automatic": False, "starting_float": {"SEK": 0},
            "expected_start": None, "note": None, "training": False})

    def out(self, session_id: str, to: tuple[str, str], amounts: dict[str, int],
            **extra: Any) -> str:
        self.transfers += 1
        tid = f"{self.register}-T{self.transfers}"
        self.event("cash.transferred_out", session_id, {
            "transfer_id": tid, "to": {"kind": to[0], "id": to[1]}, "amounts": amounts,
            "bag": extra.get("bag"), "seal": extra.get("seal"), "note": extra.get("note")})
        return tid

    def into(self, session_id: str, frm: tuple[str, str], amounts: dict[str, int],
             of_transfer: str | None = None) -> str:
        self.transfers += 1
        tid = f"{self.register}-T{self.transfers}"
        self.event("cash.transferred_in", session_id, {
            "transfer_id": tid, "from": {"kind": frm[0], "id": frm[1]}, "amounts": amounts,
            "of_transfer": of_transfer, "note": None})
        return tid


@dataclass
class Told:
    calls: list[tuple[str, str, dict[str, Any]]] = field(default_factory=list)

    async def __call__(self, store: str, register: str, params: dict[str, Any]) -> None:
        self.calls.append((store, register, params))

    def take(self) -> list[tuple[str, str, str, str | None]]:
        out = [(r, p["transfer_id"], p["status"], p["counterpart"]) for _, r, p in self.calls]
        self.calls.clear()
        return out


async def _publish(topic: str, body: dict[str, Any], retain: bool) -> None:
    pass


async def test_two_registers_transfers_reconcile_through_the_ingest_in_any_order(
        storage: Storage) -> None:
    told = Told()
    book = CashBook(storage, SAFES, told, managers={"S1": ["mia"]})
    ingest = Ingest(storage, consumer="store-agg", publish=_publish, clock=lambda: 0.0,
                    on_events=book.take_events)
    r1, r2 = Till("R1"), Till("R2")
    r1.open("s-r1")
    r2.open("s-r2")
    # R2 receives (naming R1's transfer) before R1's events reach the store.
    r2.into("s-r2", ("register", "R1"), {"SEK": 20_000}, of_transfer="R1-T1")
    await ingest.take(list(r2.rows))
    assert (await storage.transfer("S1", "R2-T1")).status == "unreconciled"  # type: ignore[union-attr]
    assert told.take() == []
    r1.out("s-r1", ("register", "R2"), {"SEK": 20_000})
    await ingest.take(list(reversed(r1.rows)))  # any order: the ingest walks seq order
    assert told.take() == [("R1", "R1-T1", "reconciled", "R2-T1"),
                           ("R2", "R2-T1", "reconciled", "R1-T1")]
    out = await storage.transfer("S1", "R1-T1")
    assert out is not None and out.session_id == "s-r1" and out.employee == "anna"
    assert out.by == {"employee": None, "role": "system"}

    # A restart folds everything again: nothing is recorded or told twice.
    again = Ingest(storage, consumer="store-agg", publish=_publish, clock=lambda: 0.0,
                   on_events=CashBook(storage, SAFES, told).take_events)
    await again.start()
    assert told.take() == []
    kinds = [s.kind for s in await storage.cash_steps("S1")]
    assert kinds.count("transfer.recorded") == 2 and kinds.count("transfer.reconciled") == 2

    # An unbalanced in stays open.
    r1.into("s-r1", ("register", "R2"), {"SEK": 5_000}, of_transfer="R2-T9")
    await ingest.take(r1.rows[-1:])
    assert [t.transfer_id for t in await storage.transfers("S1", status="unreconciled")] == [
        "R1-T2"]


# -- the HTTP API ------------------------------------------------------------------------------


@dataclass
class Reply:
    status: int
    body: bytes
    content_type: str

    def json(self) -> Any:
        return json.loads(self.body)


@dataclass
class Api:
    port: int

    async def call(self, path: str, body: dict[str, Any] | None = None) -> Reply:
        def fetch() -> Reply:
            request = urllib.request.Request(
                f"http://127.0.0.1:{self.port}{API}{path}",
                data=None if body is None else json.dumps(body).encode(),
                headers={"Content-Type": "application/json"},
                method="GET" if body is None else "POST")
            try:
                with urllib.request.urlopen(request, timeout=10) as answer:
                    return Reply(answer.status, answer.read(), answer.headers["Content-Type"])
            except urllib.error.HTTPError as e:
                return Reply(e.code, e.read(), e.headers["Content-Type"])
        return await asyncio.to_thread(fetch)

    async def ok(self, path: str, body: dict[str, Any] | None = None) -> Any:
        reply = await self.call(path, body)
        assert reply.status == 200, (path, reply.status, reply.body)
        return reply.json()

    async def refused(self, path: str, body: dict[str, Any], status: int) -> str:
        reply = await self.call(path, body)
        assert reply.status == status, (path, reply.status, reply.body)
        return str(reply.json()["detail"])


@dataclass
class Store:
    api: Api
    book: CashBook
    told: Told
    storage: Storage

    async def feed(self, till: Till) -> None:
        """The register's new events, as the ingest hands them over."""
        new = [r for r in till.rows if await self.storage.transfer(
            "S1", json.loads(r.body)["data"].get("transfer_id", "")) is None]
        await self.book.take_events(new)

    async def safe(self) -> dict[str, Any]:
        figures = await self.api.ok("/safes/SAFE1")
        return {k: figures[k] for k in ("start", "receipts", "floats_issued", "bank_deposits",
                                         "expected")}


@pytest.fixture
async def store(storage: Storage) -> AsyncIterator[Store]:
    told = Told()
    book = CashBook(storage, SAFES, told, managers={"S1": ["mia"]})
    server = HttpServer(create_app(storage, ["S1"], cashbook=book), "127.0.0.1", 0)
    task = asyncio.create_task(server.run())
    try:
        async with asyncio.timeout(10):
            await server.started.wait()
        yield Store(Api(server.port), book, told, storage)
    finally:
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task


MIA = {"employee": "mia", "role": "manager"}


def closed_session(session_id: str, register: str) -> SessionRow:
    return SessionRow(store="S1", register=register, session_id=session_id, number=1,
                      status="closed", opened_at="2024-05-01T07:00:00Z",
                      closed_at="2024-05-01T18:00:00Z", opened_by="anna", closed_by="anna",
                      discrepancy_start={}, discrepancy_end={}, cash_gross={}, cash_refunds={},
                      summary={})


async def test_a_day_with_a_safe(store: Store) -> None:
    """The Dynamics 365 day, store side: start amount in the safe, a float to the register,
    a safe drop over the drawer limit, the end-of-day drop, a bank deposit, and the manual
    reconciliation of the register's start amount; the safe's figures exact at every step."""
    api, till = store.api, Till("R1")
    assert (await api.ok("/safes"))["safes"] == [{
        "store": "S1", "safe": "SAFE1", "name": "Back office", "declared": False, "start": {},
        "receipts": {}, "floats_issued": {}, "bank_deposits": {}, "expected": {},
        "last_count": None}]
    declared = await api.ok("/safes/SAFE1/declare_start", {"amounts": {"SEK": 1_000_000},
                                                           "employee": "mia"})
    # Cash from outside the store: a one-sided transfer in, reconciled by hand later.
    safe_start = declared["transfer"]["transfer_id"]
    assert safe_start == "SAFE1-S1" and declared["transfer"]["status"] == "unreconciled"
    assert declared["transfer"]["party"] == {"kind": "external", "id": "start_amount"}
    assert await store.safe() == {"start": {"SEK": 1_000_000}, "receipts": {},
                                  "floats_issued": {}, "bank_deposits": {},
                                  "expected": {"SEK": 1_000_000}}
    # The register's start amount, counted into the drawer without naming a safe transfer.
    till.open("s-1")
    start = till.into("s-1", ("safe", "SAFE1"), {"SEK": 100_000})
    await store.feed(till)
    # A float of 500.00 in coins: the safe issues it, the register's entry names it.
    issued = await api.ok("/safes/SAFE1/float", {"amounts": {"SEK": 50_000},
                                                 "employee": "mia", "register": "R1",
                                                 "bag": "C1"})
    float_id = issued["transfer"]["transfer_id"]
    assert float_id == "SAFE1-S2" and issued["transfer"]["status"] == "unreconciled"
    assert issued["figures"]["expected"] == {"SEK": 950_000}
    entry = till.into("s-1", ("safe", "SAFE1"), {"SEK": 50_000}, of_transfer=float_id)
    await store.feed(till)
    assert store.told.take() == [("R1", entry, "reconciled", float_id)]
    # A safe drop over the drawer limit (3 000.00), received in the safe naming it.
    drop = till.out("s-1", ("safe", "SAFE1"), {"SEK": 300_000}, bag="B1", seal="0001")
    await store.feed(till)
    received = await api.ok("/safes/SAFE1/receipt", {
        "amounts": {"SEK": 300_000}, "employee": "mia", "register": "R1", "of_transfer": drop,
        "bag": "B1", "seal": "0001"})
    assert received["transfer"]["status"] == "reconciled"
    assert received["transfer"]["counterpart"] == drop
    assert store.told.take() == [("R1", drop, "reconciled", "SAFE1-S3")]
    assert await store.safe() == {"start": {"SEK": 1_000_000}, "receipts": {"SEK": 300_000},
                                  "floats_issued": {"SEK": 50_000}, "bank_deposits": {},
                                  "expected": {"SEK": 1_250_000}}
    # The end-of-day drop, received 10.00 short without naming it: stays open.
    eod = till.out("s-1", ("safe", "SAFE1"), {"SEK": 120_000})
    await store.feed(till)
    short = await api.ok("/safes/SAFE1/receipt", {
        "amounts": {"SEK": 119_000}, "employee": "mia", "register": "R1"})
    short_id = short["transfer"]["transfer_id"]
    assert short["transfer"]["status"] == "unreconciled" and store.told.take() == []
    # The bank deposit; a deposit beyond what the safe holds is refused.
    assert "cannot take out" in await api.refused("/safes/SAFE1/bank_deposit", {
        "amounts": {"SEK": 2_000_000}, "employee": "mia"}, 409)
    await api.ok("/safes/SAFE1/bank_deposit", {"amounts": {"SEK": 1_000_000},
                                               "employee": "mia", "bag": "BANK-7"})
    assert await store.safe() == {"start": {"SEK": 1_000_000},
                                  "receipts": {"SEK": 419_000},
                                  "floats_issued": {"SEK": 50_000},
                                  "bank_deposits": {"SEK": 1_000_000},
                                  "expected": {"SEK": 369_000}}
    # The safe's count: 2.00 over.
    counted = await api.ok("/safes/SAFE1/count", {"amounts": {"SEK": 369_200},
                                                  "employee": "mia"})
    assert counted["data"] == {"counted": {"SEK": 369_200}, "expected": {"SEK": 369_000},
                               "discrepancy": {"SEK": 200}}

    # Open transfers: the register's start amount and the end-of-day pair.
    view = await api.ok("/transfers?status=unreconciled")
    assert [t["transfer_id"] for t in view["transfers"]] == [start, eod, safe_start, short_id]
    assert view["unreconciled"] == 4
    # The unbalanced end-of-day pair without a reason: refused, saying why.
    message = await api.refused("/transfers/reconcile",
                                {"transfers": [eod, short_id], **MIA}, 400)
    assert "do not balance" in message and "reason is required" in message
    assert "refused" not in message and "-1000" in message
    # Not a manager: refused.
    # A manager's role the store does not give this employee: refused.
    assert "does not have the manager role" in await api.refused("/transfers/reconcile", {
        "transfers": [eod, short_id], "employee": "bo", "role": "manager",
        "reason": "x"}, 403)
    assert "only a manager" in await api.refused("/transfers/reconcile", {
        "transfers": [eod, short_id], "employee": "anna", "role": "cashier",
        "reason": "x"}, 403)
    done = await api.ok("/transfers/reconcile", {"transfers": [eod, short_id], **MIA,
                                                 "reason": "10.00 kept for change"})
    assert {t["transfer_id"]: t["counterpart"] for t in done["transfers"]} == {
        eod: short_id, short_id: eod}
    assert store.told.take() == [("R1", eod, "reconciled", short_id)]
    # The start amount alone, by hand with a reason.
    assert "reason is required" in await api.refused("/transfers/reconcile",
                                                     {"transfers": [start], **MIA}, 400)
    await api.ok("/transfers/reconcile", {"transfers": [start], **MIA,
                                          "reason": "start amount from the safe's float bag"})
    assert store.told.take() == [("R1", start, "reconciled", None)]
    # The safe's start amount, from the bank: by hand too (the seed's day).
    assert "reason is required" in await api.refused("/transfers/reconcile",
                                                     {"transfers": [safe_start], **MIA}, 400)
    await api.ok("/transfers/reconcile", {"transfers": [safe_start], **MIA,
                                          "reason": "the day's start amount from the bank"})
    assert store.told.take() == []  # a safe's transfer: no register to tell
    assert (await api.ok("/transfers?status=unreconciled"))["transfers"] == []
    assert len((await api.ok("/transfers?status=reconciled"))["transfers"]) == 8

    # Unreconcile while the session is open; the register is told; then reconcile again.
    undone = await api.ok("/transfers/unreconcile", {"transfer_id": drop, **MIA,
                                                     "reason": "wrong bag"})
    assert {t["transfer_id"] for t in undone["transfers"]} == {drop, "SAFE1-S3"}
    assert store.told.take() == [("R1", drop, "unreconciled", None)]
    assert "say why" in await api.refused("/transfers/unreconcile",
                                          {"transfer_id": eod, **MIA, "reason": ""}, 400)
    await api.ok("/transfers/reconcile", {"transfers": ["SAFE1-S3", drop], **MIA})
    store.told.take()
    # Every step of the drop with who and why.
    detail = await api.ok(f"/transfers/{drop}")
    assert [(s["kind"], s["role"], s["employee"], s["reason"]) for s in detail["steps"]] == [
        ("transfer.recorded", None, None, None),
        ("transfer.reconciled", "system", None, None),
        ("transfer.unreconciled", "manager", "mia", "wrong bag"),
        ("transfer.reconciled", "manager", "mia", None)]
    # Once the register's session has closed: no unreconcile.
    await store.storage.upsert_session(closed_session("s-1", "R1"))
    assert "can no longer be unreconciled" in await api.refused(
        "/transfers/unreconcile", {"transfer_id": "SAFE1-S3", **MIA, "reason": "late"}, 409)

    # The safe's ledger, and the CSVs.
    ledger = (await api.ok("/safes/SAFE1"))["ledger"]
    assert [s["kind"] for s in ledger] == [
        "safe.declare_start", "safe.float_issued", "safe.receipt", "safe.receipt",
        "safe.bank_deposit", "safe.count"]
    reply = await api.call("/transfers?format=csv")
    assert reply.content_type.startswith("text/csv")
    rows = list(csv.DictReader(io.StringIO(reply.body.decode())))
    assert len(rows) == 8 and {r["status"] for r in rows} == {"reconciled"}
    by_id = {r["transfer_id"]: r for r in rows}
    assert by_id[drop]["amount_minor"] == "300000" and by_id[drop]["amount"] == "3000.00"
    assert by_id[drop]["bag"] == "B1" and by_id[eod]["reason"] == "10.00 kept for change"
    reply = await api.call("/safes?format=csv")
    assert next(csv.DictReader(io.StringIO(reply.body.decode())))["expected"] == "3690.00"


async def test_what_the_api_refuses(store: Store) -> None:
    api = store.api
    assert (await api.call("/safes/NOPE")).status == 404
    assert "no safe" in await api.refused("/safes/NOPE/count", {
        "amounts": {"SEK": 1}, "employee": "mia"}, 404)
    assert "before anything else" not in await api.refused("/safes/SAFE1/float", {
        "amounts": {"SEK": 1}, "employee": "mia", "register": "R1"}, 409)
    await api.ok("/safes/SAFE1/declare_start", {"amounts": {"SEK": 100}, "employee": "mia"})
    assert "already declared" in await api.refused("/safes/SAFE1/declare_start", {
        "amounts": {"SEK": 100}, "employee": "mia"}, 409)
    assert "is required" in await api.refused("/safes/SAFE1/float", {
        "amounts": {"SEK": 1}, "employee": "mia"}, 422)
    assert "ISO 4217" in await api.refused("/safes/SAFE1/count", {
        "amounts": {"sek": 1}, "employee": "mia"}, 422)
    assert (await api.call("/safes/SAFE1/steal", {"amounts": {"SEK": 1},
                                                   "employee": "x"})).status == 422
    assert "no transfer" in await api.refused("/transfers/reconcile", {
        "transfers": ["R1-T99"], **MIA, "reason": "x"}, 404)
    assert (await api.call("/transfers/R1-T99")).status == 404
    assert (await api.call("/transfers/reconcile", {"transfers": [], **MIA})).status == 422
    await api.ok("/safes/SAFE1/float", {"amounts": {"SEK": 100}, "employee": "mia",
                                        "register": "R1"})
    assert "not reconciled" in await api.refused("/transfers/unreconcile", {
        "transfer_id": "SAFE1-S1", **MIA, "reason": "x"}, 409)
    # A receipt naming a drop the store has not seen yet: reconciled when the drop arrives.
    early = await api.ok("/safes/SAFE1/receipt", {"amounts": {"SEK": 700}, "employee": "mia",
                                                  "register": "R1", "of_transfer": "R1-T1"})
    assert early["transfer"]["status"] == "unreconciled"
    till = Till("R1")
    till.open("s-1")
    till.out("s-1", ("safe", "SAFE1"), {"SEK": 700})
    await store.feed(till)
    # SAFE1-S1 is the start amount, S2 the float: the receipt is S3.
    assert (await api.ok("/transfers/SAFE1-S3"))["counterpart"] == "R1-T1"
    assert store.told.take() == [("R1", "R1-T1", "reconciled", "SAFE1-S3")]
    assert "already reconciled" not in await api.refused("/transfers/reconcile", {
        "transfers": ["SAFE1-S1", "SAFE1-S1"], **MIA, "reason": "x"}, 422)


# -- the aggregator: registers' events over MQTT, registers told with cash.reconciliation -------


async def test_the_aggregator_tells_the_register(broker: MosquittoBroker,
                                                  tmp_path: Path) -> None:
    config = StoreConfig(stores=["S1"], broker=broker_config(broker.port),
                         database=f"sqlite:///{tmp_path / 'store.db'}", http={"port": 0},
                         safes={"S1": [{"id": "SAFE1", "name": "Back office"}]})
    service = StoreService(config)
    running = asyncio.create_task(service.run())
    commands: asyncio.Queue[tuple[str, dict[str, Any]]] = asyncio.Queue()
    try:
        async with asyncio.timeout(20):
            await service.ready.wait()
            assert service._link is not None and service.http is not None
            await service._link.connected.wait()
            api = Api(service.http.port)
            async with aiomqtt.Client("127.0.0.1", broker.port,
                                      protocol=aiomqtt.ProtocolVersion.V5) as register:
                await register.subscribe("kassad/v1/S1/R1/cmd/#", qos=1)

                async def answer() -> None:
                    async for message in register.messages:
                        body = json.loads(bytes(message.payload))  # type: ignore[arg-type]
                        await commands.put((message.topic.value, body))
                        reply = {"v": 1, "cmd_id": body["cmd_id"], "phase": "result",
                                 "status": "ok", "data": {}}
                        await register.publish(message.properties.ResponseTopic,  # type: ignore[union-attr]
                                               json.dumps(reply), qos=1)

                answering = asyncio.create_task(answer())
                await api.ok("/safes/SAFE1/declare_start", {"amounts": {"SEK": 100_000},
                                                            "employee": "mia"})
                issued = await api.ok("/safes/SAFE1/float", {
                    "amounts": {"SEK": 20_000}, "employee": "mia", "register": "R1"})
                till = Till("R1")
                till.open("s-1")
                entry = till.into("s-1", ("safe", "SAFE1"), {"SEK": 20_000},
                                  of_transfer=issued["transfer"]["transfer_id"])
                for row in till.rows:
                    await register.publish("kassad/v1/S1/R1/evt", row.body, qos=1)
                topic, command = await commands.get()
                answering.cancel()
        assert topic == "kassad/v1/S1/R1/cmd/cash.reconciliation"
        assert command["requester"] == "store-agg-agg-1"
        assert command["params"] == {"transfer_id": entry, "status": "reconciled",
                                     "counterpart": issued["transfer"]["transfer_id"],
                                     "by": {"employee": None, "role": "system"},
                                     "reason": None}
        row = await service.storage.transfer("S1", entry)
        assert row is not None and row.status == "reconciled"
    finally:
        service.stop()
        async with asyncio.timeout(15):
            await running


async def test_what_a_register_has_not_recorded_is_told_again(storage: Storage) -> None:
    """The book against the registers' own events: a notice lost (a crash, a register away
    past the command's deadline) shows as a difference in the open session's summary."""
    book = CashBook(storage, SAFES)
    till = Till("R1")
    till.open("s-1")
    drop = till.out("s-1", ("safe", "SAFE1"), {"SEK": 700})
    await book.take_events(till.rows)
    await book.safe_action("S1", "SAFE1", "declare_start", {"SEK": 0}, employee="mia")
    await book.safe_action("S1", "SAFE1", "receipt", {"SEK": 700}, employee="mia",
                           register="R1", of_transfer=drop)

    def session(status: str, seen: str, counterpart: str | None) -> SessionRow:
        return replace(closed_session("s-1", "R1"), status=status,  # type: ignore[arg-type]
                       closed_at=None if status == "open" else "2099-01-01T00:00:00Z",
                       summary={"transfers": [{"transfer_id": drop, "status": seen,
                                               "counterpart": counterpart}]})

    await storage.upsert_session(session("open", "unreconciled", None))
    assert await book.untold("S1") == [("R1", {
        "transfer_id": drop, "status": "reconciled", "counterpart": "SAFE1-S1",
        "by": {"employee": None, "role": "system"}, "reason": None})]
    await storage.upsert_session(session("open", "reconciled", "SAFE1-S1"))
    assert await book.untold("S1") == []
    await storage.upsert_session(session("closed", "unreconciled", None))
    assert await book.untold("S1") == []
