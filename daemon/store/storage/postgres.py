"""The store database in PostgreSQL (psycopg 3, asyncio): for several aggregator processes.

One connection per storage, used by one call at a time (an ``asyncio.Lock``); every call is one
transaction at READ COMMITTED, so a statement sees what other processes committed before it.
The tables live in their own PostgreSQL schema (``search_path`` is set to it, nothing else).

Several processes may share the database (a shared subscription spreads one register's events
over them): inserts rely on the unique constraints with ``ON CONFLICT DO NOTHING`` and then read
back what is stored, each batch in (stream, seq) order so two writers lock rows in the same
order; a deadlock that still happens is retried. Migration runs under an advisory lock, so two
processes starting together migrate once.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
from collections.abc import Awaitable, Callable, Mapping, Sequence
from datetime import datetime
from typing import Any, TypeVar

import psycopg
from psycopg import errors, sql
from psycopg.pq import TransactionStatus

from ...contract.events import GENESIS_HASH
from .base import (
    Alarm,
    CashStep,
    EventRow,
    InsertResult,
    RegisterRow,
    SessionRow,
    SessionSort,
    Storage,
    StreamHead,
    StreamKey,
    TransferRow,
)
from .schema import (
    EVENT_COLUMNS,
    META_DDL,
    POSTGRES,
    StorageError,
    advance_sql,
    alarm_from_row,
    alarm_values,
    alarms_sql,
    classify,
    event_from_row,
    event_values,
    insert_new_transfer_sql,
    insert_step_sql,
    key_order,
    pending_steps,
    register_from_row,
    register_values,
    registers_sql,
    session_from_row,
    session_sql,
    session_values,
    sessions_sql,
    step_from_row,
    step_values,
    steps_sql,
    transfer_from_row,
    transfer_status_sql,
    transfer_values,
    transfers_sql,
    upsert_register_sql,
    upsert_session_sql,
    upsert_transfer_sql,
)

_LOGGER = logging.getLogger(__name__)
_T = TypeVar("_T")
_Conn = psycopg.AsyncConnection[tuple[Any, ...]]
_ATTEMPTS = 5  # a deadlock between two writers is rare and resolves on the next attempt

# The batch arrives as one array per column (one round trip, whatever its size); the arrays
# are already in key order and ORDER BY ord keeps it.
_INSERT = (
    f"INSERT INTO events ({EVENT_COLUMNS}) SELECT {EVENT_COLUMNS} FROM unnest("  # noqa: S608
    "%s::text[], %s::text[], %s::bigint[], %s::bigint[], %s::text[], %s::text[], %s::text[], "
    "%s::text[], %s::text[], %s::text[], %s::text[]) WITH ORDINALITY "
    f"AS b({EVENT_COLUMNS}, ord) ORDER BY ord ON CONFLICT DO NOTHING "
    "RETURNING store, register, epoch, seq, event_id, hash"
)
_STORED = (
    "SELECT store, register, epoch, seq, event_id, hash FROM events JOIN unnest("
    "%s::text[], %s::text[], %s::bigint[], %s::bigint[]) AS k(store, register, epoch, seq) "
    "USING (store, register, epoch, seq)"
)
_NEW_STREAMS = (
    "INSERT INTO streams (store, register, epoch, contiguous, head_hash) "
    "SELECT store, register, epoch, 0, %s FROM unnest(%s::text[], %s::text[], %s::bigint[]) "
    "WITH ORDINALITY AS k(store, register, epoch, ord) ORDER BY ord ON CONFLICT DO NOTHING"
)
_ADVANCE = advance_sql(POSTGRES)


def _lock_key(schema: str) -> int:
    """The advisory lock of one schema's migration: a stable signed 64-bit number."""
    digest = hashlib.sha256(f"kassad.store.migrate:{schema}".encode()).digest()
    return int.from_bytes(digest[:8], "big", signed=True)


async def _migrate(conn: _Conn, schema: str) -> None:
    ident = sql.Identifier(schema)
    async with conn.transaction():
        # Held to the end of this transaction: a second process starting now waits here and
        # then finds the schema current.
        await conn.execute("SELECT pg_advisory_xact_lock(%s)", (_lock_key(schema),))
        await conn.execute(sql.SQL("CREATE SCHEMA IF NOT EXISTS {}").format(ident))
        # Not SET LOCAL: the path stays for the session (and is undone if this rolls back).
        await conn.execute(sql.SQL("SET search_path TO {}").format(ident))
        await conn.execute(META_DDL)
        cur = await conn.execute("SELECT value FROM meta WHERE key = 'schema_version'")
        row = await cur.fetchone()
        steps = pending_steps(POSTGRES, int(row[0]) if row else 0, f"schema {schema}")
        for version, statements in steps:
            _LOGGER.info("store database: migrating schema %s to version %d", schema, version)
            for statement in statements:
                await conn.execute(statement)
        if steps:
            await conn.execute(
                "INSERT INTO meta (key, value) VALUES ('schema_version', %s) "
                "ON CONFLICT (key) DO UPDATE SET value = excluded.value", (str(steps[-1][0]),))


def _columns(rows: list[EventRow], indexes: list[int], width: int) -> list[list[Any]]:
    """The first ``width`` columns of these rows, one list per column (for unnest)."""
    values = [event_values(rows[i]) for i in indexes]
    return [[v[c] for v in values] for c in range(width)]


async def _insert_events(conn: _Conn, rows: list[EventRow]) -> list[InsertResult]:
    order = key_order(rows)
    cur = await conn.execute(_INSERT, _columns(rows, order, 11))
    inserted = {tuple(r) for r in await cur.fetchall()}
    results: list[InsertResult] = [InsertResult.CONFLICT] * len(rows)
    others: list[int] = []
    new_streams: dict[StreamKey, None] = {}  # ordered: streams rows locked in key order too
    for i in order:
        r = rows[i]
        ident = (r.store, r.register, r.epoch, r.seq, r.event_id, r.hash)
        if ident in inserted:
            inserted.discard(ident)  # the same row twice in a batch: the second is a duplicate
            results[i] = InsertResult.NEW
            new_streams[r.key] = None
        else:
            others.append(i)
    if others:
        # What made each of them lose: committed by another process (we waited for it) or by
        # this batch; READ COMMITTED lets this statement see both.
        cur = await conn.execute(_STORED, _columns(rows, others, 4))
        stored = {tuple(r[:4]): r[4:] for r in await cur.fetchall()}
        for i in others:
            r = rows[i]
            results[i] = classify(r, stored.get((r.store, r.register, r.epoch, r.seq)))
    if new_streams:
        keys = list(new_streams)
        await conn.execute(_NEW_STREAMS, (GENESIS_HASH, [k.store for k in keys],
                                          [k.register for k in keys], [k.epoch for k in keys]))
    return results


async def _heads(conn: _Conn) -> list[StreamHead]:
    cur = await conn.execute("SELECT store, register, epoch, contiguous, head_hash FROM streams "
                             "ORDER BY store, register, epoch")
    heads: list[StreamHead] = []
    for store, register, epoch, mark, mark_hash in await cur.fetchall():
        run = await (await conn.execute(_ADVANCE, (store, register, epoch, mark, mark))).fetchone()
        if run is not None:
            mark, mark_hash = int(run[0]), str(run[1])
            # "contiguous < mark": another process may have moved it further meanwhile.
            await conn.execute(
                "UPDATE streams SET contiguous = %s, head_hash = %s WHERE store = %s "
                "AND register = %s AND epoch = %s AND contiguous < %s",
                (mark, mark_hash, store, register, epoch, mark))
        heads.append(StreamHead(StreamKey(store, register, int(epoch)), int(mark), str(mark_hash)))
    return heads


class PostgresStorage(Storage):
    """:class:`Storage` in the PostgreSQL schema ``schema`` (created if missing) at ``dsn``."""

    def __init__(self, dsn: str, *, schema: str = "kassad", connect_timeout: int = 10) -> None:
        self.schema = schema
        self._dsn = dsn
        self._connect_timeout = connect_timeout
        self._lock = asyncio.Lock()
        self._conn: _Conn | None = None
        self._open = False

    async def _connect(self) -> _Conn:
        try:
            conn = await psycopg.AsyncConnection.connect(
                self._dsn, autocommit=True, connect_timeout=self._connect_timeout)
        except psycopg.Error as e:  # the message names host and port, never the password
            raise StorageError(f"cannot connect to the store database: {e}") from e
        try:
            await _migrate(conn, self.schema)
        except BaseException as e:
            await conn.close()
            if isinstance(e, psycopg.Error):
                raise StorageError(f"schema {self.schema}: cannot migrate: {e}") from e
            raise
        self._conn = conn
        return conn

    async def _transaction(self, work: Callable[[_Conn], Awaitable[_T]]) -> _T:
        """Run ``work`` in one transaction; reconnects first if the connection was lost."""
        if not self._open:
            raise StorageError(f"schema {self.schema}: the store database is not open")
        async with self._lock:
            attempt = 0
            while True:
                attempt += 1
                conn = self._conn or await self._connect()
                try:
                    async with conn.transaction():
                        return await work(conn)
                except (errors.DeadlockDetected, errors.SerializationFailure) as e:
                    if attempt >= _ATTEMPTS:
                        raise StorageError(f"schema {self.schema}: {e}") from e
                    _LOGGER.info("store database: %s; trying again", e)
                except psycopg.Error as e:
                    if conn.broken or conn.closed:
                        await self._drop(conn)  # the next call connects anew
                    raise StorageError(f"schema {self.schema}: {e}") from e
                except BaseException:
                    # Cancelled mid-statement (psycopg cancels the query): if the connection is
                    # not back to idle, its state is unknown; the next call starts over.
                    if conn.info.transaction_status != TransactionStatus.IDLE:
                        await self._drop(conn)
                    raise

    async def _drop(self, conn: _Conn) -> None:
        self._conn = None
        await conn.close()

    async def open(self) -> None:
        async with self._lock:
            if self._open:
                raise StorageError(f"schema {self.schema}: already open")
            await self._connect()
            self._open = True

    async def close(self) -> None:
        async with self._lock:
            self._open = False
            if self._conn is not None:
                await self._drop(self._conn)

    async def _fetch(self, query: str, args: list[Any] | tuple[Any, ...]) -> list[Any]:
        async def work(conn: _Conn) -> list[Any]:
            cur = await conn.execute(query, args)
            return await cur.fetchall() if cur.description is not None else []

        return await self._transaction(work)

    async def insert_events(self, rows: list[EventRow]) -> list[InsertResult]:
        if not rows:
            return []
        return await self._transaction(lambda conn: _insert_events(conn, rows))

    async def heads(self) -> list[StreamHead]:
        return await self._transaction(_heads)

    async def events_after(self, key: StreamKey, after_seq: int, limit: int) -> list[EventRow]:
        rows = await self._fetch(
            f"SELECT {EVENT_COLUMNS} FROM events WHERE store = %s AND register = %s "  # noqa: S608
            "AND epoch = %s AND seq > %s ORDER BY seq LIMIT %s",
            (key.store, key.register, key.epoch, after_seq, limit))
        return [event_from_row(r) for r in rows]

    async def add_alarm(self, alarm: Alarm) -> None:
        await self._fetch("INSERT INTO alarms (ts, ts_key, store, register, kind, detail) "
                          "VALUES (%s, %s, %s, %s, %s, %s)", alarm_values(alarm))

    async def alarms(self, store: str | None = None, limit: int = 500) -> list[Alarm]:
        return [alarm_from_row(r) for r in await self._fetch(*alarms_sql(POSTGRES, store, limit))]

    async def upsert_session(self, row: SessionRow) -> None:
        await self._fetch(upsert_session_sql(POSTGRES), session_values(row))

    async def session(self, session_id: str) -> SessionRow | None:
        rows = await self._fetch(session_sql(POSTGRES), [session_id])
        return session_from_row(rows[0]) if rows else None

    async def sessions(self, stores: list[str] | None, start: datetime | None,
                       end: datetime | None, sort: SessionSort = "start",
                       descending: bool = False, limit: int = 10_000, *,
                       summary_keys: Sequence[str] | None = None) -> list[SessionRow]:
        query = sessions_sql(POSTGRES, stores, start, end, sort, descending, limit,
                             summary_keys)
        return [session_from_row(r) for r in await self._fetch(*query)]

    async def upsert_register(self, row: RegisterRow) -> None:
        await self._fetch(upsert_register_sql(POSTGRES), register_values(row))

    async def registers(self, store: str | None = None) -> list[RegisterRow]:
        return [register_from_row(r) for r in await self._fetch(*registers_sql(POSTGRES, store))]

    async def save_cash(self, transfers: list[TransferRow], steps: list[CashStep], *,
                        new: str | None = None, expect: Mapping[str, str] | None = None,
                        ) -> bool:
        async def work(conn: _Conn) -> bool:
            if expect and transfers:
                for transfer_id in sorted(expect):  # rows locked in one order by everyone
                    cur = await conn.execute(transfer_status_sql(POSTGRES, lock=True),
                                             (transfers[0].store, transfer_id))
                    found = await cur.fetchone()
                    if found is None or found[0] != expect[transfer_id]:
                        return False
            first = [t for t in transfers if t.transfer_id == new]
            if first:
                cur = await conn.execute(insert_new_transfer_sql(POSTGRES),
                                         transfer_values(first[0]))
                if cur.rowcount != 1:
                    return False
            # In transfer order: two writers lock the same rows in the same order.
            for row in sorted(transfers, key=lambda t: (t.store, t.transfer_id)):
                await conn.execute(upsert_transfer_sql(POSTGRES), transfer_values(row))
            for step in steps:
                await conn.execute(insert_step_sql(POSTGRES), step_values(step))
            return True

        return await self._transaction(work)

    async def transfer(self, store: str, transfer_id: str) -> TransferRow | None:
        rows = await self._fetch(*transfers_sql(POSTGRES, store, transfer_id))
        return transfer_from_row(rows[0]) if rows else None

    async def transfers(self, store: str, *, status: str | None = None,
                        of_transfer: str | None = None, limit: int = 10_000
                        ) -> list[TransferRow]:
        query = transfers_sql(POSTGRES, store, None, status, of_transfer, limit)
        return [transfer_from_row(r) for r in await self._fetch(*query)]

    async def cash_steps(self, store: str, subject: str | None = None,
                         limit: int = 100_000) -> list[CashStep]:
        return [step_from_row(r) for r in await self._fetch(*steps_sql(POSTGRES, store,
                                                                        subject, limit))]
