"""Nothing lost, nothing doubled: the outbox against a broker that restarts and drops."""

from __future__ import annotations

import asyncio
from collections import Counter
from pathlib import Path
from typing import Any

from kassad.daemon.client import KassadClient
from kassad.daemon.journal.verify import verify_journal
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


def card(n: int) -> dict[str, Any]:
    return {"kind": "other", "payment_type": "card", "amount": {"amount": n, "currency": "SEK"},
            "reference": f"order-{n}"}


async def _send_all(pos: KassadClient, count: int, workers: int,
                    restart_at: int | None = None,
                    restart: Any = None) -> dict[str, dict[str, Any]]:
    """Send ``count`` payments from ``workers`` concurrent tasks; return cmd_id → result."""
    results: dict[str, dict[str, Any]] = {}
    queue: asyncio.Queue[int] = asyncio.Queue()
    for n in range(1, count + 1):
        queue.put_nowait(n)
    done = asyncio.Event()

    async def worker() -> None:
        while not queue.empty():
            n = queue.get_nowait()
            result = await pos.send("payment.record", card(n), cmd_id=f"pay-{n}", ttl=120)
            results[result.cmd_id] = result.data
            if restart_at is not None and len(results) == restart_at:
                done.set()

    async with asyncio.TaskGroup() as group:
        for _ in range(workers):
            group.create_task(worker())
        if restart is not None:
            await done.wait()
            await asyncio.to_thread(restart)
    return results


async def test_broker_restart_mid_burst_loses_and_doubles_nothing(
        broker: MosquittoBroker, tmp_path: Path) -> None:
    journal = tmp_path / "journal.db"
    config = write_config(tmp_path / "r1.toml", port=broker.port, journal=journal)
    async with running_register(config) as register, \
            running_consumer(broker.port, tmp_path / "agg.db") as agg, \
            KassadClient(broker_config(broker.port), store="S1", register="R1",
                         requester="pos-1", employee="e1", retry_interval=0.3) as pos:
        await pos.send("session.open", {"starting_float": {"amount": 0, "currency": "SEK"}})
        results = await _send_all(pos, 500, workers=8, restart_at=200, restart=broker.restart)
        assert len(results) == 500
        epoch = register.state_snapshot()["epoch"]
        last = register.state_snapshot()["last_seq"]
        await until(lambda: agg.acked("R1").get(epoch) == last, timeout=60,
                    wake=agg.progress, what="every event acknowledged after the restart")
        session = register.ledger.open_session
        assert session is not None
        assert session.payments_by_type["card"] == {"SEK": sum(range(1, 501))}
        assert session.payment_counts["card"] == 500

    # Each command took effect exactly once …
    journaled = journal_events(journal)
    payments = Counter(e["cause"]["cmd_id"] for e in journaled
                       if e["type"] == "payment.recorded")
    assert len(payments) == 500
    assert set(payments.values()) == {1}
    # … and every journaled event reached the consumer exactly once, in seq order.
    stored = consumer_events(tmp_path / "agg.db")
    assert [e["seq"] for e in stored] == list(range(1, last + 1))
    assert stored == journaled[:last]
    assert verify_journal(journal).ok


async def test_consumer_behind_a_dropping_queue_still_gets_every_event(
        small_queue_broker: MosquittoBroker, tmp_path: Path) -> None:
    """Mosquitto drops QoS 1 messages past max_queued_messages (5 here) for a consumer that is
    away; the register's ack/resend loop (and the consumer's resync) fill the holes."""
    broker = small_queue_broker
    journal = tmp_path / "journal.db"
    config = write_config(tmp_path / "r1.toml", port=broker.port, journal=journal)
    async with running_register(config) as register:
        # The consumer subscribes once (persistent session) and goes away.
        async with running_consumer(broker.port, tmp_path / "agg.db") as agg:
            await until(lambda: agg._link.is_connected, what="consumer connected")
        async with KassadClient(broker_config(broker.port), store="S1", register="R1",
                                requester="pos-1", employee="e1") as pos:
            await pos.send("session.open", {"starting_float": {"amount": 0, "currency": "SEK"}})
            await _send_all(pos, 150, workers=4)
        last = register.state_snapshot()["last_seq"]
        epoch = register.state_snapshot()["epoch"]
        assert register.state_snapshot()["delivery"]["pending"] > 0

        async with running_consumer(broker.port, tmp_path / "agg.db") as agg:
            await until(lambda: agg.acked("R1").get(epoch) == last, timeout=60,
                        wake=agg.progress, what="every event through the resend loop")
        assert register.state_snapshot()["delivery"]["pending"] == 0

    assert "dropped" in broker.log_tail(2000).lower(), "the broker should have dropped messages"
    stored = consumer_events(tmp_path / "agg.db")
    assert [e["seq"] for e in stored] == list(range(1, last + 1))
    assert stored == journal_events(journal)[:last]
