"""Retained ``status`` (birth, clean stop, Last Will), retained ``state``, and ``ctl/resync``."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import aiomqtt

from kassad.daemon.client import KassadClient
from kassad.simulators.broker import MosquittoBroker
from tests.support.register import (
    RegisterProcess,
    broker_config,
    running_register,
    until,
    write_config,
)

BASE = "kassad/v1/S1/R1"


@asynccontextmanager
async def watching(port: int, *topics: str) -> AsyncIterator[asyncio.Queue[tuple[str, Any]]]:
    """Messages on ``topics`` (retained ones first) as (topic, JSON) pairs."""
    queue: asyncio.Queue[tuple[str, Any]] = asyncio.Queue()
    async with aiomqtt.Client("127.0.0.1", port, protocol=aiomqtt.ProtocolVersion.V5) as client:
        for topic in topics:
            await client.subscribe(topic, qos=1)

        async def pump() -> None:
            async for m in client.messages:
                assert isinstance(m.payload, bytes)
                queue.put_nowait((m.topic.value, json.loads(m.payload)))

        task = asyncio.create_task(pump())
        try:
            yield queue
        finally:
            task.cancel()


async def next_matching(queue: asyncio.Queue[tuple[str, Any]], topic: str,
                        predicate: Any = lambda body: True, timeout: float = 15) -> Any:  # noqa: ASYNC109
    async with asyncio.timeout(timeout):
        while True:
            got_topic, body = await queue.get()
            if got_topic == topic and predicate(body):
                return body


async def test_status_birth_clean_stop_and_last_will(broker: MosquittoBroker,
                                                     tmp_path: Path) -> None:
    config = write_config(tmp_path / "r1.toml", port=broker.port, journal=tmp_path / "j.db",
                          broker={"will_delay": 1})
    process = RegisterProcess(config, tmp_path / "register.log")
    async with watching(broker.port, f"{BASE}/status", f"{BASE}/state") as seen:
        process.start()
        try:
            online = await next_matching(seen, f"{BASE}/status", lambda b: b["online"])
            assert {"conn_seq", "boot_id", "epoch", "last_seq", "version", "ts"} <= set(online)
            state = await next_matching(seen, f"{BASE}/state")
            assert state["session"] is None and state["epoch"] == online["epoch"]

            process.kill()  # no DISCONNECT: the broker publishes the Will after its delay
            will = await next_matching(seen, f"{BASE}/status", lambda b: not b["online"])
            assert (will["boot_id"], will["conn_seq"]) == (online["boot_id"], online["conn_seq"])

            process.start()
            again = await next_matching(seen, f"{BASE}/status", lambda b: b["online"])
            assert again["boot_id"] != online["boot_id"]
            assert again["conn_seq"] > online["conn_seq"]
            assert process.terminate() == 0  # SIGTERM: a clean stop says offline itself
            stopped = await next_matching(seen, f"{BASE}/status", lambda b: not b["online"])
            assert stopped["boot_id"] == again["boot_id"]
        finally:
            process.kill()

    # Retained: a newcomer learns the register is offline at once.
    async with watching(broker.port, f"{BASE}/status") as seen:
        last = await next_matching(seen, f"{BASE}/status")
        assert last["online"] is False


async def test_state_follows_the_session_and_resync_republishes(broker: MosquittoBroker,
                                                                tmp_path: Path) -> None:
    config = write_config(tmp_path / "r1.toml", port=broker.port, journal=tmp_path / "j.db",
                          consumers=[])
    async with running_register(config) as register, \
            watching(broker.port, f"{BASE}/state", f"{BASE}/evt") as seen, \
            KassadClient(broker_config(broker.port), store="S1", register="R1",
                         requester="pos-1", employee="e1") as pos:
        await pos.send("session.open", {"starting_float": {"amount": 5000, "currency": "SEK"}})
        state = await next_matching(seen, f"{BASE}/state", lambda b: b["session"] is not None)
        assert state["session"]["expected_cash"] == {"SEK": 5000}
        head = register.state_snapshot()["last_seq"]
        # Every event published once already: a resync before that would be their first
        # publication, not a replay (seen once under load in CI).
        outbox = register._outbox
        assert outbox is not None
        await until(lambda: outbox._sent_upto >= head, what="the events first published")

        async with aiomqtt.Client("127.0.0.1", broker.port,
                                  protocol=aiomqtt.ProtocolVersion.V5) as agg:
            await agg.publish(f"{BASE}/ctl/resync", json.dumps({"from_seq": 1}), qos=1)
        replayed = [await next_matching(seen, f"{BASE}/evt",
                                        lambda b, s=s: b["seq"] == s and b["replayed"])
                    for s in range(1, head + 1)]
        assert [e["seq"] for e in replayed] == list(range(1, head + 1))
        assert replayed[-1]["type"] == "session.opened"
