"""The store aggregator's ingest: registers' streams stored once, verified, acknowledged, and
folded into sessions; forged or broken streams raise alarms with the evidence."""

from __future__ import annotations

import asyncio
import contextlib
import json
import random
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiomqtt

from kassad.daemon.client import KassadClient
from kassad.daemon.contract.events import canonical_json, event_hash, utc_timestamp
from kassad.daemon.journal.store import EventDraft, JournalFile
from kassad.daemon.store.config import StoreConfig
from kassad.daemon.store.service import StoreService
from kassad.simulators.broker import MosquittoBroker
from kassad.simulators.pos import run_steps
from tests.support.register import (
    broker_config,
    eventually,
    running_register,
    until,
    write_config,
)


@contextlib.asynccontextmanager
async def aggregator(broker: MosquittoBroker, tmp_path: Path, **extra: Any,
                     ) -> AsyncIterator[StoreService]:
    extra.setdefault("http", {"port": 0})
    config = StoreConfig(stores=["S1"], broker=broker_config(broker.port),
                         database=f"sqlite:///{tmp_path / 'store.db'}", reorder_timeout=0.5,
                         **extra)
    service = StoreService(config)
    task = asyncio.create_task(service.run())
    try:
        async with asyncio.timeout(10):
            await service.ready.wait()
            # Ready does not wait for the broker (it may be down); these tests publish at
            # once, so they need the subscriptions in place first.
            assert service._link is not None
            await service._link.connected.wait()
        yield service
    finally:
        service.stop()
        async with asyncio.timeout(15):
            await task


async def test_three_registers_through_the_store(broker: MosquittoBroker,
                                                 tmp_path: Path) -> None:
    async with aggregator(broker, tmp_path) as store, contextlib.AsyncExitStack() as stack:
        registers = []
        for name in ("R1", "R2", "R3"):
            config = write_config(tmp_path / f"{name}.toml", port=broker.port, register=name,
                                  journal=tmp_path / f"{name}.db", consumers=["store-agg"])
            registers.append(await stack.enter_async_context(running_register(config)))
        for name in ("R1", "R2", "R3"):
            async with KassadClient(broker_config(broker.port), store="S1", register=name,
                                    requester=f"pos-{name}", employee="e1") as pos:
                await run_steps(pos)
        for register in registers:
            await until(lambda r=register: r.state_snapshot()["delivery"]["pending"] == 0,
                        timeout=30, what="every event acknowledged by the aggregator")
        sessions = await store.storage.sessions(["S1"], None, None)
        assert len(sessions) == 6
        closed = [s for s in sessions if s.status == "closed"]
        assert len(closed) == 3
        assert all(s.discrepancy_end == {"SEK": -150} for s in closed)
        assert {s.register for s in sessions} == {"R1", "R2", "R3"}
        assert await store.storage.alarms("S1") == []
        rows = await store.storage.registers("S1")
        assert {r.register for r in rows if r.online} == {"R1", "R2", "R3"}


def forged_journal(path: Path, register: str = "R9") -> JournalFile:
    return JournalFile(path, "S1", register, "boot-1")


async def publish_all(port: int, topic: str, bodies: list[str]) -> None:
    async with aiomqtt.Client("127.0.0.1", port,
                              protocol=aiomqtt.ProtocolVersion.V5) as client:
        for body in bodies:
            await client.publish(topic, body, qos=1)


async def test_any_order_and_duplicates_store_once_and_ack_all(
        broker: MosquittoBroker, tmp_path: Path) -> None:
    journal = forged_journal(tmp_path / "r9.db")
    now = utc_timestamp()
    journal.append([EventDraft("session.opened", now, "s-1", {
        "number": 1, "automatic": False, "starting_float": {"SEK": 1000},
        "expected_start": None, "note": None})])
    for n in range(40):
        journal.append([EventDraft("payment.recorded", now, "s-1", {
            "kind": "other", "payment_type": "card", "reference": None,
            "amount": {"amount": 100 + n, "currency": "SEK"}})])
    bodies = [body for _, body in journal.read_events(1, 1000)]
    shuffled = bodies + random.Random(3).sample(bodies, 20)
    random.Random(4).shuffle(shuffled)
    async with aggregator(broker, tmp_path) as store, \
            aiomqtt.Client("127.0.0.1", broker.port,
                           protocol=aiomqtt.ProtocolVersion.V5) as watcher:
        await watcher.subscribe("kassad/v1/S1/R9/ack/store-agg", qos=1)
        await publish_all(broker.port, "kassad/v1/S1/R9/evt", shuffled)
        assert store.ingest is not None
        acked = 0
        async with asyncio.timeout(15):
            async for message in watcher.messages:
                assert isinstance(message.payload, bytes)
                acked = json.loads(message.payload)["upto_seq"]
                if acked == 41:
                    break
        assert store.ingest.stored == 41
        session = await store.storage.session("s-1")
        assert session is not None
        assert session.summary["payments_by_type"]["card"] == {"SEK": sum(range(100, 140))}
    journal.close()


async def test_a_gap_is_asked_for_with_resync(broker: MosquittoBroker, tmp_path: Path) -> None:
    journal = forged_journal(tmp_path / "r9.db")
    for n in range(4):
        journal.append([EventDraft("daemon.started", utc_timestamp(), data={"n": n})])
    bodies = [body for _, body in journal.read_events(1, 10)]
    async with aggregator(broker, tmp_path), \
            aiomqtt.Client("127.0.0.1", broker.port,
                           protocol=aiomqtt.ProtocolVersion.V5) as watcher:
        await watcher.subscribe("kassad/v1/S1/R9/ctl/resync", qos=1)
        await publish_all(broker.port, "kassad/v1/S1/R9/evt", [bodies[0], bodies[1], bodies[3]])
        async with asyncio.timeout(10):
            async for message in watcher.messages:
                assert isinstance(message.payload, bytes)
                assert json.loads(message.payload) == {"from_seq": 3}
                break
    journal.close()


async def test_tampering_and_false_close_figures_are_alarms(broker: MosquittoBroker,
                                                            tmp_path: Path) -> None:
    journal = forged_journal(tmp_path / "r9.db")
    now = utc_timestamp()
    journal.append([EventDraft("session.opened", now, "s-9", {
        "number": 1, "automatic": False, "starting_float": {"SEK": 1000},
        "expected_start": None, "note": None})])
    # The register claims an expected cash its own events do not give.
    journal.append([EventDraft("session.closed", now, "s-9", {
        "counted": {"SEK": 1000}, "expected": {"SEK": 5000}, "discrepancy": {"SEK": -4000},
        "left_in_drawer": {"SEK": 0}, "removed": {"SEK": 1000}, "note": None})])
    bodies = [json.loads(b) for _, b in journal.read_events(1, 10)]
    # A third event whose prev_hash does not chain (a rewritten history), hash made valid.
    forged = dict(bodies[1], seq=3, event_id="forged", prev_hash="f" * 64, type="daemon.started",
                  data={})
    forged["hash"] = event_hash(forged)
    async with aggregator(broker, tmp_path) as store:
        await publish_all(broker.port, "kassad/v1/S1/R9/evt",
                          [canonical_json(b) for b in bodies] + [canonical_json(forged)])
        await until(lambda: store.ingest is not None and store.ingest.stored == 3,
                    what="three events stored")
        alarms: list[Any] = []

        async def kinds() -> set[str]:
            alarms[:] = await store.storage.alarms("S1")
            return {a.kind for a in alarms}

        async def both() -> bool:
            return {"close_mismatch", "chain_broken"} <= await kinds()

        await eventually(both, what="both alarms")
        mismatch = next(a for a in alarms if a.kind == "close_mismatch")
        assert mismatch.detail["register_says"]["expected"] == {"SEK": 5000}
        assert mismatch.detail["events_say"]["expected"] == {"SEK": 1000}
        broken = next(a for a in alarms if a.kind == "chain_broken")
        assert broken.detail["seq"] == 3 and broken.detail["evidence"]["event_id"] == "forged"
    journal.close()


async def _get(port: int, path: str) -> Any:
    def fetch() -> Any:
        import urllib.request

        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=10) as r:
            return json.loads(r.read())

    return await asyncio.to_thread(fetch)


async def test_store_view_through_a_broker_restart_with_device_alarms(
        broker: MosquittoBroker, tmp_path: Path) -> None:
    from kassad.daemon.config import DevicesConfig, load_register_config
    from kassad.simulators.printer.device import PrinterSimulator

    async with PrinterSimulator() as printer, aggregator(broker, tmp_path) as store, \
            contextlib.AsyncExitStack() as stack:
        port = await printer.serve_tcp()
        registers = []
        for name in ("R1", "R2"):
            config = load_register_config(write_config(
                tmp_path / f"{name}.toml", port=broker.port, register=name,
                journal=tmp_path / f"{name}.db", consumers=["store-agg"]))
            if name == "R1":  # R1 has a printer, which runs out of paper
                config = config.model_copy(update={"devices": DevicesConfig.model_validate(
                    {"printer": {"transport": {"kind": "tcp", "host": "127.0.0.1",
                                               "port": port}, "status_interval": 0.1}})})
            registers.append(await stack.enter_async_context(running_register(config)))
        async with KassadClient(broker_config(broker.port), store="S1", register="R1",
                                requester="pos-1", employee="e1", retry_interval=0.3) as one, \
                KassadClient(broker_config(broker.port), store="S1", register="R2",
                             requester="pos-2", employee="e1", retry_interval=0.3) as two:
            first = asyncio.gather(run_steps(one), run_steps(two))
            await asyncio.to_thread(broker.restart)  # in the middle of both days
            await first
        for register in registers:
            await until(lambda r=register: r.state_snapshot()["delivery"]["pending"] == 0,
                        timeout=60, what="every event acknowledged after the restart")
        printer.paper_out()
        assert store.http is not None
        http = store.http.port

        async def paper_alarm() -> bool:
            view = await _get(http, "/api/v1/stores/S1/registers")
            return any("paper_out" in json.dumps(r) for r in view["registers"])

        await eventually(paper_alarm, timeout=15, what="paper_out in the registers view")
        sessions = await _get(http, "/api/v1/stores/S1/sessions?sort=start")
        assert len(sessions["sessions"]) == 4
        discrepancies = await _get(http, "/api/v1/stores/S1/discrepancies")
        assert json.dumps(discrepancies).count("-150") >= 2
