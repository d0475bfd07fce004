"""The store database: one conformance suite run against SQLite and a real PostgreSQL."""

from __future__ import annotations

import asyncio
import hashlib
import json
import random
import sqlite3
import uuid
from collections.abc import AsyncIterator, Callable
from dataclasses import replace
from datetime import datetime
from pathlib import Path

import psycopg
import pytest
from psycopg import sql

from kassad.daemon.contract.events import GENESIS_HASH
from kassad.daemon.store.storage.base import (
    Alarm,
    EventRow,
    InsertResult,
    RegisterRow,
    SessionRow,
    Storage,
    StreamHead,
    StreamKey,
)
from kassad.daemon.store.storage.factory import open_storage
from kassad.daemon.store.storage.postgres import PostgresStorage
from kassad.daemon.store.storage.schema import SCHEMA_VERSION, StorageError
from kassad.daemon.store.storage.sqlite import SqliteStorage
from tests.support.postgres import pg_schema, postgres_dsn  # noqa: F401

NEW, DUP, CONFLICT = InsertResult.NEW, InsertResult.DUPLICATE, InsertResult.CONFLICT
Opener = Callable[[], Storage]


def event(seq: int, *, store: str = "S1", register: str = "R1", epoch: int = 7,
          variant: str = "") -> EventRow:
    """A deterministic event; ``variant`` gives the same key other content (another hash)."""
    def digest(n: int) -> str:
        if n == 0:
            return GENESIS_HASH
        return hashlib.sha256(f"{store}/{register}/{epoch}/{n}{variant}".encode()).hexdigest()

    event_id = str(uuid.uuid5(uuid.NAMESPACE_URL, f"{store}/{register}/{epoch}/{seq}{variant}"))
    body = json.dumps({"seq": seq, "type": "cash.in", "v": variant}, sort_keys=True)
    return EventRow(store, register, epoch, seq, event_id, "cash.in",
                    f"2024-05-01T10:00:{seq % 60:02d}.000Z", "sess-1", digest(seq - 1),
                    digest(seq), body)


@pytest.fixture(params=["sqlite", "postgres"])
def opener(request: pytest.FixtureRequest, tmp_path: Path) -> Opener:
    """Makes a new (unopened) storage on the same database each time it is called."""
    if request.param == "sqlite":
        path = tmp_path / "store" / "store.db"
        return lambda: SqliteStorage(path)
    dsn: str = request.getfixturevalue("postgres_dsn")
    schema: str = request.getfixturevalue("pg_schema")
    return lambda: PostgresStorage(dsn, schema=schema)


@pytest.fixture
async def storage(opener: Opener) -> AsyncIterator[Storage]:
    db = opener()
    await db.open()
    try:
        yield db
    finally:
        await db.close()


def head(storages_heads: list[StreamHead], key: StreamKey) -> tuple[int, str]:
    found = [(h.contiguous, h.head_hash) for h in storages_heads if h.key == key]
    assert len(found) == 1, storages_heads
    return found[0]


# -- events -----------------------------------------------------------------------------------


async def test_insert_new_duplicate_and_conflicts(storage: Storage) -> None:
    rows = [event(1), event(2), event(3)]
    assert await storage.insert_events(rows) == [NEW, NEW, NEW]
    assert await storage.insert_events(rows) == [DUP, DUP, DUP]
    same_key_other_hash = event(2, variant="fork")
    same_id_other_key = replace(event(3), seq=4)
    assert await storage.insert_events([same_key_other_hash, same_id_other_key, event(5)]) == [
        CONFLICT, CONFLICT, NEW]
    # Same key and hash but another event_id: also corruption, not a duplicate.
    assert await storage.insert_events([replace(event(1), event_id="x")]) == [CONFLICT]
    stored = await storage.events_after(StreamKey("S1", "R1", 7), 0, 100)
    assert stored == [event(1), event(2), event(3), event(5)]  # nothing stored over the first
    assert await storage.insert_events([]) == []


async def test_one_batch_with_itself(storage: Storage) -> None:
    # Results are in the batch's order; within one batch the lower seq and then the earlier
    # row of one key is stored, the other compared with it.
    batch = [event(2), event(1), event(2), event(2, variant="b"), event(3, variant="c"),
             event(3)]
    assert await storage.insert_events(batch) == [NEW, NEW, DUP, CONFLICT, NEW, CONFLICT]
    stored = await storage.events_after(StreamKey("S1", "R1", 7), 0, 10)
    assert stored == [event(1), event(2), event(3, variant="c")]


async def test_heads_follow_gaps_out_of_order(storage: Storage) -> None:
    r1, r2 = StreamKey("S1", "R1", 7), StreamKey("S1", "R2", 7)
    assert await storage.heads() == []
    assert await storage.insert_events([event(3), event(5), event(1)]) == [NEW] * 3
    await storage.insert_events([event(2, register="R2")])  # no seq 1 yet
    heads = await storage.heads()
    assert head(heads, r1) == (1, event(1).hash)
    assert head(heads, r2) == (0, GENESIS_HASH)
    await storage.insert_events([event(2)])  # fills the first gap: the head moves to 3
    assert head(await storage.heads(), r1) == (3, event(3).hash)
    await storage.insert_events([event(4), event(1, register="R2")])
    heads = await storage.heads()
    assert head(heads, r1) == (5, event(5).hash)
    assert head(heads, r2) == (2, event(2, register="R2").hash)
    # A new epoch is a new stream, with its own head; the old one stays.
    await storage.insert_events([event(1, epoch=8)])
    heads = await storage.heads()
    assert {h.key for h in heads} == {r1, r2, StreamKey("S1", "R1", 8)}
    assert head(heads, StreamKey("S1", "R1", 8)) == (1, event(1, epoch=8).hash)
    assert head(heads, r1) == (5, event(5).hash)


async def test_heads_across_many_events(storage: Storage) -> None:
    seqs = list(range(1, 501))
    random.Random(5).shuffle(seqs)
    missing = {137, 400}
    for i in range(0, len(seqs), 100):
        await storage.insert_events([event(s) for s in seqs[i:i + 100] if s not in missing])
    key = StreamKey("S1", "R1", 7)
    assert head(await storage.heads(), key) == (136, event(136).hash)
    await storage.insert_events([event(137)])
    assert head(await storage.heads(), key) == (399, event(399).hash)
    await storage.insert_events([event(400)])
    assert head(await storage.heads(), key) == (500, event(500).hash)


async def test_calls_from_many_tasks_at_once(storage: Storage) -> None:
    batches = [[event(s) for s in range(start, start + 20)] for start in range(1, 100, 10)]
    outcomes = await asyncio.gather(*(storage.insert_events(b) for b in batches))
    flat = [r for results in outcomes for r in results]
    assert set(flat) <= {NEW, DUP} and flat.count(NEW) == 110
    assert head(await storage.heads(), StreamKey("S1", "R1", 7)) == (110, event(110).hash)


async def test_events_after_pages(storage: Storage) -> None:
    await storage.insert_events([event(s) for s in range(25, 0, -1)])
    await storage.insert_events([event(1, register="R2"), event(1, epoch=8)])
    key, pages, after = StreamKey("S1", "R1", 7), [], 0
    while page := await storage.events_after(key, after, 10):
        pages.append([e.seq for e in page])
        after = page[-1].seq
    assert pages == [list(range(1, 11)), list(range(11, 21)), list(range(21, 26))]
    assert await storage.events_after(StreamKey("S9", "R1", 7), 0, 10) == []


# -- alarms, sessions, registers --------------------------------------------------------------


async def test_alarms_newest_first(storage: Storage) -> None:
    older = Alarm("2024-05-01T12:00:00+02:00", "S1", "R1", "conflict", {"seq": 2, "n": [1]})
    newer = Alarm("2024-05-01T11:00:00.500Z", "S1", None, "chain_broken", {})
    other = Alarm("2024-05-01T10:30:00Z", "S2", "R1", "fork", {"a": "ö"})
    anywhere = Alarm("2024-05-01T10:45:00Z", None, None, "device", {"x": None})
    for alarm in (older, newer, other, anywhere):
        await storage.add_alarm(alarm)
    assert await storage.alarms() == [newer, anywhere, other, older]
    assert await storage.alarms("S1") == [newer, older]
    assert await storage.alarms(limit=2) == [newer, anywhere]
    assert await storage.alarms("S3") == []


def session(session_id: str, store: str, opened: str, closed: str | None,
            end: dict[str, int], register: str = "R1") -> SessionRow:
    return SessionRow(
        store=store, register=register, session_id=session_id, number=len(session_id),
        status="open" if closed is None else "closed", opened_at=opened, closed_at=closed,
        opened_by="e17", closed_by=None if closed is None else "e18",
        discrepancy_start={"SEK": 0}, discrepancy_end=end, cash_gross={"SEK": 12_000},
        cash_refunds={}, summary={"lines": [{"what": "float", "SEK": 5000}], "note": None})


SESSIONS = {
    "a": session("a", "S1", "2024-05-01T08:00:00.000Z", "2024-05-01T16:00:00.000Z",
                 {"SEK": -500}),
    "b": session("b", "S1", "2024-05-01T09:00:00.000Z", None, {}, register="R2"),
    # Opened 07:00 UTC, written with an offset: as text it would sort after a and b.
    "c": session("c", "S2", "2024-05-01T10:00:00+03:00", "2024-05-02T01:00:00+00:00",
                 {"SEK": 200, "EUR": -150}),
    "d": session("d", "S1", "2024-04-29T08:00:00Z", "2024-04-29T17:00:00Z", {"SEK": 1000}),
}


def at(text: str) -> datetime:
    return datetime.fromisoformat(text)


async def ids(storage: Storage, **kwargs: object) -> list[str]:
    args: dict[str, object] = {"stores": None, "start": None, "end": None, **kwargs}
    return [s.session_id for s in await storage.sessions(**args)]  # type: ignore[arg-type]


async def test_sessions_filter_and_sort(storage: Storage) -> None:
    for row in SESSIONS.values():
        await storage.upsert_session(row)
    assert await ids(storage) == ["d", "c", "a", "b"]
    assert await ids(storage, descending=True) == ["b", "a", "c", "d"]
    assert await ids(storage, sort="end") == ["d", "a", "c", "b"]  # the open one ends last
    assert await ids(storage, sort="end", descending=True) == ["b", "c", "a", "d"]
    assert await ids(storage, sort="discrepancy") == ["b", "c", "a", "d"]  # 0, 350, 500, 1000
    assert await ids(storage, sort="discrepancy", descending=True) == ["d", "a", "c", "b"]
    assert await ids(storage, limit=2) == ["d", "c"]
    day = {"start": at("2024-05-01T00:00:00Z"), "end": at("2024-05-02T00:00:00Z")}
    assert await ids(storage, **day) == ["c", "a", "b"]
    assert await ids(storage, stores=["S1"], **day) == ["a", "b"]
    assert await ids(storage, stores=["S2", "S9"]) == ["c"]
    assert await ids(storage, stores=[]) == []
    # Opened before end (strictly), not closed before start (a closing at start counts).
    assert await ids(storage, end=at("2024-05-01T08:00:00Z")) == ["d", "c"]
    assert await ids(storage, start=at("2024-05-01T16:00:00Z")) == ["c", "a", "b"]
    assert await ids(storage, start=at("2024-05-01T16:00:00.001Z")) == ["c", "b"]
    # Any time zone in, the same instant compared.
    assert await ids(storage, end=at("2024-05-01T10:30:00+02:00")) == ["d", "c", "a"]
    with pytest.raises(ValueError, match="time zone"):
        await storage.sessions(None, datetime(2024, 5, 1), None)


async def test_session_upsert_and_lookup(storage: Storage) -> None:
    await storage.upsert_session(SESSIONS["b"])
    assert await storage.session("b") == SESSIONS["b"]
    closed = replace(SESSIONS["b"], status="closed", closed_at="2024-05-01T18:00:00Z",
                     closed_by="e18", discrepancy_end={"SEK": -10_000, "EUR": 5},
                     summary={"closed": True})
    await storage.upsert_session(closed)
    assert await storage.session("b") == closed
    assert await storage.session("nope") is None
    got = await storage.sessions(None, None, at("2024-05-01T17:00:00Z"), sort="discrepancy")
    assert got == [closed]


async def test_sessions_with_summary_keys(storage: Storage) -> None:
    """Only the keys asked for that a summary has, each as stored: a null stays a null next
    to a key that is missing, true and false stay booleans."""
    summary = {"training": True, "automatic": False, "counted": None, "number": 3,
               "starting_float": {"SEK": 5000, "EUR": 0}, "note": 'ö "q"', "rate": 1.5,
               "adjustments": [{"amount": {"amount": 100, "currency": "SEK"}}], "x": {}}
    row = replace(SESSIONS["a"], summary=summary)
    await storage.upsert_session(row)
    keys = ("training", "automatic", "counted", "number", "starting_float", "note", "rate",
            "missing")
    got = await storage.sessions(None, None, None, summary_keys=keys)
    assert got == [replace(row, summary={k: v for k, v in summary.items() if k in keys})]
    assert got[0].summary["training"] is True and got[0].summary["automatic"] is False
    assert "missing" not in got[0].summary and "counted" in got[0].summary
    assert await storage.sessions(None, None, None, summary_keys=()) == [
        replace(row, summary={})]
    assert await storage.sessions(None, None, None, summary_keys=["nothing"]) == [
        replace(row, summary={})]
    assert await storage.sessions(None, None, None) == [row]  # the whole summary by default
    with pytest.raises(TypeError, match="sequence of keys"):
        await storage.sessions(None, None, None, summary_keys="note")
    # The filter's and the keys' parameters do not mix up.
    assert await storage.sessions(["S1"], at("2024-05-01T00:00:00Z"), at("2024-05-02T00:00:00Z"),
                                  "end", True, 5, summary_keys=["note"]) == [
        replace(row, summary={"note": 'ö "q"'})]


async def test_registers_upsert_and_list(storage: Storage) -> None:
    r1 = RegisterRow("S1", "R1", True, "2024-05-01T10:00:00Z", {"state": "ok"},
                     {"printer": {"paper": "low"}}, ["paper_low"])
    r2 = RegisterRow("S1", "R2", False, None)
    r3 = RegisterRow("S2", "R1", True, "2024-05-01T10:00:00Z")
    for row in (r3, r2, r1):
        await storage.upsert_register(row)
    assert await storage.registers() == [r1, r2, r3]
    r1_offline = replace(r1, online=False, alarms=[], devices={})
    await storage.upsert_register(r1_offline)
    assert await storage.registers("S1") == [r1_offline, r2]
    assert await storage.registers("S3") == []


async def test_reopen_keeps_everything(opener: Opener) -> None:
    first = opener()
    await first.open()
    await first.insert_events([event(1), event(2), event(4)])
    await first.add_alarm(Alarm("2024-05-01T10:00:00Z", "S1", "R1", "fork", {"seq": 3}))
    await first.upsert_session(SESSIONS["a"])
    await first.upsert_register(RegisterRow("S1", "R1", True, None, {"x": 1}))
    heads = await first.heads()
    await first.close()
    second = opener()
    await second.open()
    try:
        assert await second.heads() == heads
        assert await second.events_after(StreamKey("S1", "R1", 7), 0, 9) == [
            event(1), event(2), event(4)]
        assert await second.insert_events([event(2), event(3)]) == [DUP, NEW]
        assert await second.alarms() == [
            Alarm("2024-05-01T10:00:00Z", "S1", "R1", "fork", {"seq": 3})]
        assert await second.session("a") == SESSIONS["a"]
        assert await second.registers() == [RegisterRow("S1", "R1", True, None, {"x": 1})]
    finally:
        await second.close()


async def test_newer_schema_is_refused(opener: Opener, storage: Storage) -> None:
    await storage.close()
    if isinstance(storage, SqliteStorage):
        with sqlite3.connect(storage.path) as db:
            db.execute("UPDATE meta SET value = '999' WHERE key = 'schema_version'")
            assert db.execute("PRAGMA journal_mode").fetchone() == ("wal",)
    else:
        assert isinstance(storage, PostgresStorage)
        with psycopg.connect(storage._dsn, autocommit=True) as conn:
            conn.execute(sql.SQL("UPDATE {}.meta SET value = '999' WHERE key = 'schema_version'")
                         .format(sql.Identifier(storage.schema)))
    with pytest.raises(StorageError, match="newer kassad"):
        await opener().open()


async def test_calls_before_open_fail_clearly(opener: Opener) -> None:
    with pytest.raises(StorageError, match="not open"):
        await opener().heads()


# -- several aggregator processes on one PostgreSQL -------------------------------------------


@pytest.fixture
def pg(request: pytest.FixtureRequest) -> tuple[str, str]:
    """(DSN, throwaway schema)."""
    return request.getfixturevalue("postgres_dsn"), request.getfixturevalue("pg_schema")


async def test_postgres_concurrent_inserts_store_each_event_once(pg: tuple[str, str]) -> None:
    dsn, schema = pg
    workers = [PostgresStorage(dsn, schema=schema) for _ in range(3)]
    await asyncio.gather(*(w.open() for w in workers))
    rows = [event(s) for s in range(1, 401)] + [event(s, register="R2") for s in range(1, 201)]

    async def feed(worker: Storage, seed: int) -> list[InsertResult]:
        mine = rows[:]
        random.Random(seed).shuffle(mine)  # each worker sees another order, as in a redelivery
        results: list[InsertResult] = []
        for i in range(0, len(mine), 50):
            results += await worker.insert_events(mine[i:i + 50])
        return results

    try:
        outcomes = await asyncio.gather(*(feed(w, n) for n, w in enumerate(workers)))
        flat = [r for results in outcomes for r in results]
        assert set(flat) <= {NEW, DUP}
        assert flat.count(NEW) == len(rows)
        stored = [e for r in ("R1", "R2")
                  for e in await workers[0].events_after(StreamKey("S1", r, 7), 0, 1000)]
        assert stored == rows
        assert {(h.key.register, h.contiguous) for h in await workers[1].heads()} == {
            ("R1", 400), ("R2", 200)}
    finally:
        await asyncio.gather(*(w.close() for w in workers))


async def test_postgres_opens_at_once_migrate_once(pg: tuple[str, str]) -> None:
    dsn, schema = pg
    # Plain CREATE TABLE in the steps: a second migration would fail, not pass quietly.
    storages = [PostgresStorage(dsn, schema=schema) for _ in range(4)]
    await asyncio.gather(*(s.open() for s in storages))
    try:
        with psycopg.connect(dsn) as conn:
            version = conn.execute(sql.SQL("SELECT value FROM {}.meta WHERE key = "
                                           "'schema_version'").format(sql.Identifier(schema)))
            assert version.fetchall() == [(str(SCHEMA_VERSION),)]
        assert await storages[3].insert_events([event(1)]) == [NEW]
    finally:
        await asyncio.gather(*(s.close() for s in storages))


# -- the URL ----------------------------------------------------------------------------------


def test_open_storage_by_url(tmp_path: Path) -> None:
    db = open_storage("sqlite:///var/lib/kassad/store.db")
    assert isinstance(db, SqliteStorage) and db.path == Path("/var/lib/kassad/store.db")
    db = open_storage(f"{tmp_path}/store.db")
    assert isinstance(db, SqliteStorage) and db.path == tmp_path / "store.db"
    db = open_storage("sqlite:data/store.db")
    assert isinstance(db, SqliteStorage) and db.path == Path("data/store.db")
    pg = open_storage("postgresql://kassad:pw@db.example:5432/shop?schema=s1&sslmode=require")
    assert isinstance(pg, PostgresStorage) and pg.schema == "s1"
    assert pg._dsn == "postgresql://kassad:pw@db.example:5432/shop?sslmode=require"
    pg = open_storage("postgres://db.example/shop")
    assert isinstance(pg, PostgresStorage) and pg.schema == "kassad"
    for bad in ("mysql://db/shop", "sqlite://remote-host/store.db", "sqlite:", "", "x:y"):
        with pytest.raises(ValueError, match="store database"):
            open_storage(bad)

