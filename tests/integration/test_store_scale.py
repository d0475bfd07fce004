"""The aggregator under load and faults: two instances sharing one register stream through a
shared subscription on one PostgreSQL, and an aggregator restarted in the middle of a burst."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

from kassad.daemon.client import KassadClient
from kassad.daemon.store.config import StoreConfig
from kassad.daemon.store.service import StoreService
from kassad.daemon.store.storage.base import StreamKey
from kassad.simulators.broker import MosquittoBroker
from tests.support.postgres import pg_schema, postgres_dsn  # noqa: F401 - fixtures
from tests.support.register import (
    broker_config,
    journal_events,
    running_register,
    until,
    write_config,
)


@contextlib.asynccontextmanager
async def aggregator(broker: MosquittoBroker, database: str, agg_id: str,
                     **extra: Any) -> AsyncIterator[StoreService]:
    extra.setdefault("http", {"port": 0})
    config = StoreConfig(stores=["S1"], broker=broker_config(broker.port), database=database,
                         aggregator_id=agg_id, reorder_timeout=0.5, **extra)
    service = StoreService(config)
    task = asyncio.create_task(service.run())
    try:
        async with asyncio.timeout(10):
            await service.ready.wait()
        yield service
    finally:
        service.stop()
        async with asyncio.timeout(15):
            await task


def card(n: int) -> dict[str, Any]:
    return {"kind": "other", "payment_type": "card", "amount": {"amount": n, "currency": "SEK"}}


async def burst(port: int, register: str, count: int) -> None:
    async with KassadClient(broker_config(port), store="S1", register=register,
                            requester=f"pos-{register}", employee="e1", retry_interval=0.3) as pos:
        await pos.send("session.open", {"starting_float": {"currency": "SEK", "amount": 0}})
        for n in range(1, count + 1):
            await pos.send("payment.record", card(n), cmd_id=f"{register}-{n}", ttl=120)


async def test_two_aggregators_share_the_streams_on_one_postgresql(
        broker: MosquittoBroker, tmp_path: Path, postgres_dsn: str, pg_schema: str) -> None:  # noqa: F811
    database = f"{postgres_dsn}?schema={pg_schema}"
    async with aggregator(broker, database, "agg-1", shared_group="agg") as one, \
            aggregator(broker, database, "agg-2", shared_group="agg") as two, \
            contextlib.AsyncExitStack() as stack:
        registers = []
        for name in ("R1", "R2"):
            config = write_config(tmp_path / f"{name}.toml", port=broker.port, register=name,
                                  journal=tmp_path / f"{name}.db", consumers=["store-agg"])
            registers.append(await stack.enter_async_context(running_register(config)))
        await asyncio.gather(burst(broker.port, "R1", 150), burst(broker.port, "R2", 150))
        for register in registers:
            await until(lambda r=register: r.state_snapshot()["delivery"]["pending"] == 0,
                        timeout=60, what="every event acknowledged")
        assert one.ingest is not None and two.ingest is not None
        # The round robin gave each instance a part of every stream …
        assert one.ingest.stored > 0 and two.ingest.stored > 0
        # … and every event is stored exactly once between them.
        journaled = {r.config.register_id: journal_events(tmp_path / f"{r.config.register_id}"
                                                          f".db") for r in registers}
        for name, events in journaled.items():
            epoch = events[0]["epoch"]
            stored = await one.storage.events_after(StreamKey("S1", name, epoch), 0, 10_000)
            acked = registers[0 if name == "R1" else 1].state_snapshot()["last_seq"]
            assert [e.seq for e in stored][:acked] == list(range(1, acked + 1))
            assert [e.event_id for e in stored[:acked]] == [e["event_id"]
                                                            for e in events[:acked]]
        total = 0
        for name, events in journaled.items():
            total += len(await one.storage.events_after(
                StreamKey("S1", name, events[0]["epoch"]), 0, 10_000))
        # What the two instances stored as new adds up to what the database holds: no event
        # was stored by both.
        assert one.ingest.stored + two.ingest.stored == total
        # Both instances give the same view.
        assert await one.storage.sessions(["S1"], None, None) == \
            await two.storage.sessions(["S1"], None, None)


async def test_aggregator_restarted_in_a_burst_loses_nothing(
        broker: MosquittoBroker, tmp_path: Path) -> None:
    database = f"sqlite:///{tmp_path / 'store.db'}"
    config = write_config(tmp_path / "R1.toml", port=broker.port, register="R1",
                          journal=tmp_path / "R1.db", consumers=["store-agg"])
    async with running_register(config) as register:
        sending = asyncio.create_task(burst(broker.port, "R1", 300))
        async with aggregator(broker, database, "agg-1") as first:
            assert first.ingest is not None
            await until(lambda: first.ingest is not None and first.ingest.stored > 80,
                        timeout=30, what="part of the burst stored")
        # Stopped mid-burst; the register keeps its events until acknowledged.
        async with aggregator(broker, database, "agg-1") as second:
            await sending
            last = register.state_snapshot()["last_seq"]
            await until(lambda: register.state_snapshot()["delivery"]["pending"] == 0,
                        timeout=60, what="every event acknowledged after the restart")
            epoch = register.state_snapshot()["epoch"]
            stored = await second.storage.events_after(StreamKey("S1", "R1", epoch), 0, 10_000)
            assert [e.seq for e in stored] == list(range(1, last + 1))
            sessions = await second.storage.sessions(["S1"], None, None)
            assert sessions[0].summary["payment_counts"]["card"] == 300


async def test_a_day_of_events_from_an_offline_register_catches_up(
        broker: MosquittoBroker, tmp_path: Path) -> None:
    """10,000 events the register journaled while it could not reach anyone reach the store
    view once it connects: all of them, once, in order, and the session's figures right."""
    from kassad.daemon.contract.events import utc_timestamp
    from kassad.daemon.journal.store import EventDraft, JournalFile

    journal_path = tmp_path / "R1.db"
    journal = JournalFile(journal_path, "S1", "R1", "offline-day")
    now = utc_timestamp()
    drafts = [EventDraft("session.opened", now, "day-1", {
        "number": 1, "automatic": False, "starting_float": {"SEK": 100000},
        "expected_start": None, "note": None})]
    drafts += [EventDraft("payment.recorded", now, "day-1", {
        "kind": "cash_sale", "payment_type": "cash", "reference": f"o-{n}",
        "tendered": {"amount": 1000, "currency": "SEK"},
        "change": {"amount": 0, "currency": "SEK"},
        "amount": {"amount": 1000, "currency": "SEK"}}) for n in range(9_999)]
    for start in range(0, len(drafts), 1000):
        journal.append(drafts[start:start + 1000])
    journal.close()
    config = write_config(tmp_path / "R1.toml", port=broker.port, register="R1",
                          journal=journal_path, consumers=["store-agg"],
                          # The production resend timer: a resend here would be a duplicate.
                          delivery={"inflight_window": 100, "batch": 500,
                                    "resend_after": 5.0, "resend_after_max": 60.0})
    async with aggregator(broker, f"sqlite:///{tmp_path / 'store.db'}", "agg-1") as store, \
            running_register(config) as register:
        await until(lambda: register.state_snapshot()["delivery"]["pending"] == 0,
                    timeout=120, what="the day's backlog acknowledged")
        epoch = register.state_snapshot()["epoch"]
        stored = await store.storage.events_after(StreamKey("S1", "R1", epoch), 0, 20_000)
        assert [e.seq for e in stored] == list(range(1, register.state_snapshot()["last_seq"]
                                                     + 1))
        session = await store.storage.session("day-1")
        assert session is not None
        assert session.summary["cash_sales_count"] == 9_999
        # Flow control by the consumer's acks: the backlog never overflowed the broker's queue,
        # so nothing had to be sent twice.
        assert store.ingest is not None and store.ingest.duplicates == 0
        assert session.summary["expected_cash"] == {"SEK": 100000 + 9_999 * 1000}
