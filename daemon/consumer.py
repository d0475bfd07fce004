"""``kassad ack-consumer``: the smallest correct consumer of the registers' event streams.

It stores each event once in SQLite, keyed by (store, register, epoch, seq), whatever the
broker redelivers and in whatever order; checks each register's hash chain as the contiguous
part grows; acknowledges cumulatively on ``ack/{consumer}`` (retained) only after the commit;
and asks ``ctl/resync`` for a gap that stays open past the reorder timeout. The store
aggregator does all this and more; until it exists, the demo and the tests use this one.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import sqlite3
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiomqtt

from .config import BrokerConfig
from .contract.events import GENESIS_HASH, event_hash, utc_timestamp
from .contract.topics import PREFIX, RegisterTopics, check_id, store_events_filter
from .mqtt.link import MqttLink, NotConnected, PublishFailed

_LOGGER = logging.getLogger(__name__)

_SCHEMA = """
CREATE TABLE IF NOT EXISTS events (
    store TEXT NOT NULL, register TEXT NOT NULL, epoch INTEGER NOT NULL, seq INTEGER NOT NULL,
    event_id TEXT NOT NULL UNIQUE, type TEXT NOT NULL, hash TEXT NOT NULL, body TEXT NOT NULL,
    received_at TEXT NOT NULL,
    PRIMARY KEY (store, register, epoch, seq)
);
CREATE TABLE IF NOT EXISTS alarms (
    id INTEGER PRIMARY KEY, ts TEXT NOT NULL, store TEXT, register TEXT, kind TEXT NOT NULL,
    detail TEXT NOT NULL
);
"""

Stream = tuple[str, str, int]  # store, register, epoch


@dataclass
class _StreamState:
    contiguous: int = 0  # highest seq with every seq up to it stored and chain-checked
    head_hash: str = GENESIS_HASH
    acked: int = 0
    waiting: dict[int, tuple[str, str]] = field(default_factory=dict)  # seq → (prev, hash)
    gap_since: float | None = None


class EventStore:
    """The consumer's SQLite file; used from one thread."""

    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self._db = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=FULL")
        self._db.executescript(_SCHEMA)

    def insert(self, events: list[dict[str, Any]]) -> list[tuple[dict[str, Any], str]]:
        """Store new events; return (event, outcome) with outcome new | duplicate | conflict."""
        outcomes: list[tuple[dict[str, Any], str]] = []
        now = utc_timestamp()
        self._db.execute("BEGIN IMMEDIATE")
        try:
            for e in events:
                key = (e["store"], e["register"], e["epoch"], e["seq"])
                row = self._db.execute(
                    "SELECT event_id, hash FROM events WHERE store=? AND register=? AND epoch=? "
                    "AND seq=?", key).fetchone()
                if row is not None:
                    same = (row[0], row[1]) == (e["event_id"], e["hash"])
                    outcomes.append((e, "duplicate" if same else "conflict"))
                    continue
                body = {k: v for k, v in e.items() if k != "replayed"}
                self._db.execute(
                    "INSERT INTO events VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                    (*key, e["event_id"], e["type"], e["hash"], json.dumps(body), now))
                outcomes.append((e, "new"))
            self._db.execute("COMMIT")
        except BaseException:
            self._db.execute("ROLLBACK")
            raise
        return outcomes

    def alarm(self, store: str | None, register: str | None, kind: str, detail: str) -> None:
        self._db.execute("INSERT INTO alarms(ts, store, register, kind, detail) "
                         "VALUES (?, ?, ?, ?, ?)", (utc_timestamp(), store, register, kind, detail))

    def streams(self) -> dict[Stream, _StreamState]:
        """Rebuild the contiguous marks from what is stored (at start)."""
        out: dict[Stream, _StreamState] = {}
        keys = self._db.execute("SELECT DISTINCT store, register, epoch FROM events").fetchall()
        for store, register, epoch in keys:
            state = _StreamState()
            for seq, digest in self._db.execute(
                    "SELECT seq, hash FROM events WHERE store=? AND register=? AND epoch=? "
                    "ORDER BY seq", (store, register, epoch)):
                if seq != state.contiguous + 1:
                    break
                state.contiguous, state.head_hash = seq, digest
            out[(store, register, int(epoch))] = state
        return out

    def close(self) -> None:
        self._db.close()


class AckConsumer:
    def __init__(self, broker: BrokerConfig, *, store: str, consumer: str, db_path: Path,
                 reorder_timeout: float = 2.0, batch_window: float = 0.05) -> None:
        self.store = check_id(store, "store id")
        self.consumer = check_id(consumer, "consumer id")
        self._db_path = db_path
        self._reorder_timeout = reorder_timeout
        self._batch_window = batch_window
        self._inbox: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="consumer-db")
        self._streams: dict[Stream, _StreamState] = {}
        self._db: EventStore | None = None
        self.stored = 0
        self.progress = asyncio.Event()  # set whenever an ack mark moves (tests wait on it)
        self._link = MqttLink(
            broker, client_id=f"{store}-consumer-{consumer}",
            subscriptions=[store_events_filter(store)], on_message=self._on_message,
            on_connected=self._on_connected, session_expiry=86_400, name=f"consumer {consumer}")

    async def _db_call(self, fn: Any, *args: Any) -> Any:
        return await asyncio.get_running_loop().run_in_executor(self._executor, fn, *args)

    async def run(self) -> None:
        self._db = await self._db_call(EventStore, self._db_path)
        self._streams = await self._db_call(self._db.streams)
        try:
            async with asyncio.TaskGroup() as group:
                group.create_task(self._link.run(), name="consumer-mqtt")
                group.create_task(self._store_loop(), name="consumer-store")
                group.create_task(self._gap_watch(), name="consumer-gaps")
        finally:
            await self._db_call(self._db.close)
            self._executor.shutdown(wait=True)

    def acked(self, register: str) -> dict[int, int]:
        """epoch → acknowledged seq, for one register of this store."""
        return {epoch: s.acked for (st, reg, epoch), s in self._streams.items()
                if st == self.store and reg == register}

    async def _on_connected(self, link: MqttLink) -> None:
        for stream in list(self._streams):
            await self._send_ack(stream)  # reconnect: tell registers where we are

    async def _on_message(self, message: aiomqtt.Message) -> None:
        try:
            event = json.loads(bytes(message.payload) if isinstance(message.payload, bytes)
                               else str(message.payload))
            if not isinstance(event, dict) or event_hash(event) != event.get("hash"):
                raise ValueError("hash does not match the event")
            for key in ("store", "register", "event_id", "type"):
                check_id(str(event[key]).replace(".", "_"), key)
            int(event["epoch"]), int(event["seq"])
        except (ValueError, KeyError, TypeError) as e:
            _LOGGER.warning("unusable event on %s: %s", message.topic.value, e)
            return
        self._inbox.put_nowait(event)

    async def _store_loop(self) -> None:
        assert self._db is not None
        while True:
            batch = [await self._inbox.get()]
            try:
                async with asyncio.timeout(self._batch_window):
                    while len(batch) < 200:
                        batch.append(await self._inbox.get())
            except TimeoutError:
                pass
            outcomes = await self._db_call(self._db.insert, batch)
            touched: set[Stream] = set()
            for event, outcome in outcomes:
                stream = (event["store"], event["register"], int(event["epoch"]))
                state = self._streams.setdefault(stream, _StreamState())
                if outcome == "conflict":
                    await self._db_call(self._db.alarm, event["store"], event["register"],
                                        "conflict", f"seq {event['seq']} differs from stored")
                    continue
                if outcome == "new":
                    self.stored += 1
                    if event["seq"] > state.contiguous:
                        state.waiting[int(event["seq"])] = (event["prev_hash"], event["hash"])
                touched.add(stream)
            for stream in touched:
                await self._advance(stream)

    async def _advance(self, stream: Stream) -> None:
        assert self._db is not None
        state = self._streams[stream]
        while (nxt := state.waiting.pop(state.contiguous + 1, None)) is not None:
            prev_hash, digest = nxt
            if prev_hash != state.head_hash:
                await self._db_call(self._db.alarm, stream[0], stream[1], "chain",
                                    f"seq {state.contiguous + 1} does not chain to its parent")
            state.contiguous += 1
            state.head_hash = digest
        state.gap_since = (asyncio.get_running_loop().time()
                           if state.waiting and state.gap_since is None else
                           state.gap_since if state.waiting else None)
        await self._send_ack(stream)

    async def _send_ack(self, stream: Stream) -> None:
        state = self._streams[stream]
        if state.contiguous == 0:
            return
        store, register, epoch = stream
        topics = RegisterTopics(store, register)
        body = json.dumps({"epoch": epoch, "upto_seq": state.contiguous, "ts": utc_timestamp()})
        try:
            await self._link.publish(topics.ack(self.consumer), body, qos=1, retain=True)
        except (NotConnected, PublishFailed):
            return  # acked again on the next connection
        if state.contiguous > state.acked:
            state.acked = state.contiguous
            self.progress.set()

    async def _gap_watch(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            await asyncio.sleep(self._reorder_timeout / 2)
            for (store, register, _), state in list(self._streams.items()):
                if state.gap_since is not None and (
                        loop.time() - state.gap_since > self._reorder_timeout):
                    state.gap_since = loop.time()
                    topic = f"{PREFIX}/{store}/{register}/ctl/resync"
                    _LOGGER.info("gap after seq %s of %s/%s: asking resync", state.contiguous,
                                 store, register)
                    with contextlib.suppress(NotConnected, PublishFailed):
                        await self._link.publish(
                            topic, json.dumps({"from_seq": state.contiguous + 1}), qos=1)
