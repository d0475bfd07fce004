"""Ingest: the registers' event streams into storage, once each, verified, acknowledged.

Per batch of messages (any order, any duplicates): verify each event's own hash, store the
new ones in one transaction, then for every stream touched walk forward from the last folded
seq over what storage holds without a gap — checking each ``prev_hash`` against the previous
``hash`` (a break is an alarm with the evidence) — fold the events with the register's own
ledger module into session rows, check a register's close figures against the fold (a mismatch
is an alarm), and only then acknowledge ``ack/{consumer}`` up to that seq. Walking from
storage, not from memory, is what lets several aggregator instances share one register's
stream through a shared subscription: each acknowledges what the database holds.
A gap that stays open past the reorder timeout is asked for with ``ctl/resync``.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from ..contract.events import GENESIS_HASH, event_hash, utc_timestamp
from ..ledger.session import LedgerEvent, LedgerState, Session, apply
from .storage.base import Alarm, EventRow, InsertResult, SessionRow, Storage, StreamKey

_LOGGER = logging.getLogger(__name__)

Publish = Callable[[str, dict[str, Any], bool], Awaitable[None]]  # topic, body, retain
HOOK_TYPES = frozenset({"cash.transferred_out", "cash.transferred_in"})
CLOSE_FIGURES = ("counted", "expected", "discrepancy", "left_in_drawer", "removed")


class BadEvent(ValueError):
    """A message on an evt topic that is not a verifiable event."""


def parse_event(topic_store: str, topic_register: str, payload: bytes) -> EventRow:
    try:
        event = json.loads(payload)
    except ValueError as e:
        raise BadEvent(f"not JSON: {e}") from None
    if not isinstance(event, dict):
        raise BadEvent("not a JSON object")
    try:
        row = EventRow(
            store=str(event["store"]), register=str(event["register"]),
            epoch=int(event["epoch"]), seq=int(event["seq"]), event_id=str(event["event_id"]),
            type=str(event["type"]), ts=str(event["ts"]),
            session_id=None if event.get("session_id") is None else str(event["session_id"]),
            prev_hash=str(event["prev_hash"]), hash=str(event["hash"]),
            body=json.dumps({k: v for k, v in event.items() if k != "replayed"},
                            sort_keys=True, separators=(",", ":"), ensure_ascii=False))
    except (KeyError, TypeError, ValueError) as e:
        raise BadEvent(f"envelope incomplete: {e}") from None
    if event_hash(event) != row.hash:
        raise BadEvent(f"seq {row.seq}: hash does not match the content")
    if (row.store, row.register) != (topic_store, topic_register):
        raise BadEvent(f"event of {row.store}/{row.register} on the topic of "
                       f"{topic_store}/{topic_register}")
    if row.seq < 1 or row.epoch < 0:
        raise BadEvent(f"seq {row.seq} / epoch {row.epoch} out of range")
    return row


@dataclass
class StreamFold:
    """How far one stream is verified and folded, and the register's ledger at that point."""

    key: StreamKey
    folded: int = 0
    head_hash: str = GENESIS_HASH
    ledger: LedgerState = field(default_factory=LedgerState)
    gap_since: float | None = None
    acked: int = 0


def session_row(store: str, register: str, session: Session) -> SessionRow:
    summary = session.summary()
    closed = session.closed
    return SessionRow(
        store=store, register=register, session_id=session.session_id,
        number=session.number, status="open" if closed is None else "closed",
        opened_at=session.opened_at, closed_at=closed.closed_at if closed else None,
        opened_by=session.opened_by, closed_by=closed.closed_by if closed else None,
        discrepancy_start=session.discrepancy_at_start,
        discrepancy_end=dict(closed.discrepancy or {}) if closed else {},
        cash_gross=session.cash_sales, cash_refunds=dict(session.cash_refunds),
        summary=summary)


class Ingest:
    def __init__(self, storage: Storage, *, consumer: str, publish: Publish,
                 clock: Callable[[], float], reorder_timeout: float = 2.0,
                 page: int = 1000,
                 on_events: Callable[[list[EventRow]], Awaitable[None]] | None = None) -> None:
        self.storage = storage
        # Hook (issue 9, the cash book): folded rows of HOOK_TYPES, after their sessions.
        self.on_events = on_events
        self._hooked: list[EventRow] = []
        self.consumer = consumer
        self._publish = publish
        self._clock = clock
        self.reorder_timeout = reorder_timeout
        self._page = page
        self.streams: dict[StreamKey, StreamFold] = {}
        self.stored = 0
        self.duplicates = 0
        # Sessions a fold changed, upserted once the batch is folded; alarms found by folds.
        self._dirty: dict[StreamKey, dict[str, Session]] = {}
        self._pending_alarms: list[Alarm] = []

    async def start(self) -> None:
        """Fold what storage already holds (after a restart) so acks and views go on."""
        for head in await self.storage.heads():
            await self._advance(self._stream(head.key))

    def _stream(self, key: StreamKey) -> StreamFold:
        stream = self.streams.get(key)
        if stream is None:
            stream = self.streams[key] = StreamFold(key)
        return stream

    async def take(self, rows: list[EventRow]) -> None:
        """Store a batch, then advance, fold and acknowledge every stream it touched."""
        if not rows:
            return
        results = await self.storage.insert_events(rows)
        touched: set[StreamKey] = set()
        for row, result in zip(rows, results, strict=True):
            if result is InsertResult.CONFLICT:
                await self.alarm(row.store, row.register, "conflict", {
                    "epoch": row.epoch, "seq": row.seq, "event_id": row.event_id,
                    "hash": row.hash, "evidence": json.loads(row.body)})
                continue
            if result is InsertResult.NEW:
                self.stored += 1
            else:
                self.duplicates += 1
            touched.add(row.key)
        advanced = [await self._advance(self._stream(key), ack=False) for key in touched]
        # Acks are cumulative and retained: send them together, not one round trip each.
        await asyncio.gather(*(self._ack(s) for s in advanced if s.folded > s.acked))

    async def _advance(self, stream: StreamFold, *, ack: bool = True) -> StreamFold:
        start = stream.folded
        while True:
            rows = await self.storage.events_after(stream.key, stream.folded, self._page)
            progressed = False
            for row in rows:
                if row.seq != stream.folded + 1:
                    break  # a gap: wait for it (or ask for it)
                if row.prev_hash != stream.head_hash:
                    await self._chain_broken(stream, row)
                self._fold(stream, row)
                stream.folded, stream.head_hash = row.seq, row.hash
                progressed = True
            if not progressed or len(rows) < self._page:
                break
        beyond = await self.storage.events_after(stream.key, stream.folded, 1)
        if not beyond:
            stream.gap_since = None
        elif stream.gap_since is None or stream.folded > start:
            # A gap counts from when the stream last moved: with a shared subscription the
            # other instance fills most holes within a batch.
            stream.gap_since = self._clock()
        if stream.folded > start:
            await self._upsert_sessions(stream)
        if ack and stream.folded > stream.acked:
            await self._ack(stream)
        return stream

    def _fold(self, stream: StreamFold, row: EventRow) -> None:
        if self.on_events is not None and row.type in HOOK_TYPES:
            self._hooked.append(row)
        event = json.loads(row.body)
        ledger = stream.ledger
        try:
            before_open = ledger.open_session
            apply(ledger, LedgerEvent.from_envelope(event))
        except (ValueError, KeyError, TypeError) as e:
            _LOGGER.warning("%s/%s seq %s does not fold: %s", row.store, row.register, row.seq, e)
            self._pending_alarms.append(Alarm(utc_timestamp(), row.store, row.register,
                                              "ledger", {"seq": row.seq, "error": str(e)}))
            return
        # The last closed session changes after its close too (a correction, a Z copy).
        for touched in (ledger.open_session, ledger.last_closed):
            if touched is not None:
                self._dirty.setdefault(stream.key, {})[touched.session_id] = touched
        if before_open is not None and before_open is not ledger.open_session:
            self._dirty.setdefault(stream.key, {})[before_open.session_id] = before_open
        if row.type == "session.closed" and ledger.last_closed is not None:
            self._check_close(row, event, ledger.last_closed)

    def _check_close(self, row: EventRow, event: dict[str, Any], session: Session) -> None:
        """The register's own figures in its close event must equal our fold of its events."""
        closed = session.closed
        assert closed is not None
        ours = {"counted": closed.counted, "expected": closed.expected,
                "discrepancy": closed.discrepancy, "left_in_drawer": closed.left_in_drawer,
                "removed": closed.removed}
        theirs = {k: event["data"].get(k) for k in CLOSE_FIGURES}
        if ours != theirs:
            self._pending_alarms.append(Alarm(utc_timestamp(), row.store, row.register,
                                              "close_mismatch", {
                                                  "session_id": session.session_id,
                                                  "seq": row.seq, "register_says": theirs,
                                                  "events_say": ours}))

    async def _upsert_sessions(self, stream: StreamFold) -> None:
        for session in self._dirty.pop(stream.key, {}).values():
            await self.storage.upsert_session(
                session_row(stream.key.store, stream.key.register, session))
        alarms, self._pending_alarms = self._pending_alarms, []
        for alarm in alarms:
            await self.storage.add_alarm(alarm)
        hooked, self._hooked = self._hooked, []
        if hooked and self.on_events is not None:
            await self.on_events(hooked)

    async def _chain_broken(self, stream: StreamFold, row: EventRow) -> None:
        await self.alarm(row.store, row.register, "chain_broken", {
            "epoch": row.epoch, "seq": row.seq, "prev_hash": row.prev_hash,
            "expected_prev_hash": stream.head_hash, "evidence": json.loads(row.body)})

    async def alarm(self, store: str | None, register: str | None, kind: str,
                    detail: dict[str, Any]) -> None:
        _LOGGER.error("alarm %s for %s/%s: %s", kind, store, register,
                      {k: v for k, v in detail.items() if k != "evidence"})
        await self.storage.add_alarm(Alarm(utc_timestamp(), store, register, kind, detail))

    async def _ack(self, stream: StreamFold) -> None:
        key = stream.key
        topic = f"kassad/v1/{key.store}/{key.register}/ack/{self.consumer}"
        body = {"epoch": key.epoch, "upto_seq": stream.folded, "ts": utc_timestamp()}
        try:
            await self._publish(topic, body, True)
        except ConnectionError as e:  # acked again on the next batch or reconnect
            _LOGGER.info("ack for %s/%s not sent: %s", key.store, key.register, e)
            return
        stream.acked = stream.folded

    async def ack_all(self) -> None:
        """After a reconnect: tell every register where we are (the broker may have lost the
        retained acks)."""
        for stream in list(self.streams.values()):  # a batch may add streams meanwhile
            if stream.folded:
                stream.acked = 0
                await self._ack(stream)

    async def ask_for_gaps(self) -> None:
        now = self._clock()
        for stream in list(self.streams.values()):  # a batch may add streams meanwhile
            if stream.gap_since is not None and now - stream.gap_since >= self.reorder_timeout:
                # Another instance may have stored the hole meanwhile: look before asking.
                await self._advance(stream)
                if stream.gap_since is None or now - stream.gap_since < self.reorder_timeout:
                    continue
                stream.gap_since = now
                key = stream.key
                _LOGGER.info("gap after seq %s of %s/%s: resync", stream.folded, key.store,
                             key.register)
                with contextlib.suppress(ConnectionError):  # asked again after the timeout
                    await self._publish(f"kassad/v1/{key.store}/{key.register}/ctl/resync",
                                        {"from_seq": stream.folded + 1}, False)
