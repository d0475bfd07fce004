"""The store database in one SQLite file: WAL, ``synchronous=FULL``, one owning thread.

Every sqlite3 call runs on the storage's own thread (a one-worker executor), never on the event
loop; the connection is made there too, so sqlite3's same-thread check guards that rule. Calls
run in the order they were made. Writes are ``BEGIN IMMEDIATE`` transactions: a second process
on the same file waits (``busy_timeout``) at the start instead of failing half-way. The schema
is created and migrated by :meth:`SqliteStorage.open` (see :mod:`.schema`).
"""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import Callable, Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from datetime import datetime
from pathlib import Path
from typing import Any, Concatenate, ParamSpec, TypeVar

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
    SQLITE,
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

_P = ParamSpec("_P")
_T = TypeVar("_T")

_INSERT_EVENT = (f"INSERT INTO events ({EVENT_COLUMNS}) "  # noqa: S608 - constants only
                 "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT DO NOTHING")
_STORED = ("SELECT event_id, hash FROM events "
           "WHERE store = ? AND register = ? AND epoch = ? AND seq = ?")
_ADVANCE = advance_sql(SQLITE)


@contextmanager
def _transaction(db: sqlite3.Connection) -> Iterator[sqlite3.Connection]:
    db.execute("BEGIN IMMEDIATE")
    try:
        yield db
    except BaseException:
        if db.in_transaction:
            db.execute("ROLLBACK")
        raise
    db.execute("COMMIT")


def _connect(path: Path, busy_timeout: float) -> sqlite3.Connection:
    path.parent.mkdir(parents=True, exist_ok=True)
    # isolation_level=None: the module starts no transactions of its own; ours are explicit.
    db = sqlite3.connect(path, isolation_level=None)
    try:
        mode = db.execute("PRAGMA journal_mode=WAL").fetchone()
        if mode is None or str(mode[0]).lower() != "wal":
            raise StorageError(f"{path}: cannot switch to WAL (journal_mode is {mode})")
        db.execute("PRAGMA synchronous=FULL")  # a committed event survives a power cut
        db.execute(f"PRAGMA busy_timeout={int(busy_timeout * 1000)}")
        with _transaction(db):
            db.execute(META_DDL)
            row = db.execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchone()
            current = int(row[0]) if row else 0
            steps = pending_steps(SQLITE, current, str(path))
            for _, statements in steps:
                for statement in statements:
                    db.execute(statement)
            if steps:
                db.execute("INSERT INTO meta (key, value) VALUES ('schema_version', ?) "
                           "ON CONFLICT (key) DO UPDATE SET value = excluded.value",
                           (str(steps[-1][0]),))
    except BaseException:
        db.close()
        raise
    return db


def _insert_events(db: sqlite3.Connection, rows: list[EventRow]) -> list[InsertResult]:
    results: list[InsertResult] = [InsertResult.CONFLICT] * len(rows)
    new_streams: set[StreamKey] = set()
    with _transaction(db):
        for i in key_order(rows):
            row = rows[i]
            if db.execute(_INSERT_EVENT, event_values(row)).rowcount == 1:
                results[i] = InsertResult.NEW
                new_streams.add(row.key)
            else:
                stored = db.execute(_STORED, (row.store, row.register, row.epoch,
                                              row.seq)).fetchone()
                results[i] = classify(row, stored)
        db.executemany(
            "INSERT INTO streams (store, register, epoch, contiguous, head_hash) "
            "VALUES (?, ?, ?, 0, ?) ON CONFLICT DO NOTHING",
            [(k.store, k.register, k.epoch, GENESIS_HASH) for k in new_streams])
    return results


def _heads(db: sqlite3.Connection) -> list[StreamHead]:
    heads: list[StreamHead] = []
    with _transaction(db):
        streams = db.execute("SELECT store, register, epoch, contiguous, head_hash FROM streams "
                             "ORDER BY store, register, epoch").fetchall()
        for store, register, epoch, mark, mark_hash in streams:
            run = db.execute(_ADVANCE, (store, register, epoch, mark, mark)).fetchone()
            if run is not None:
                mark, mark_hash = int(run[0]), str(run[1])
                db.execute("UPDATE streams SET contiguous = ?, head_hash = ? WHERE store = ? "
                           "AND register = ? AND epoch = ? AND contiguous < ?",
                           (mark, mark_hash, store, register, epoch, mark))
            heads.append(StreamHead(StreamKey(store, register, int(epoch)), int(mark),
                                    str(mark_hash)))
    return heads


def _events_after(db: sqlite3.Connection, key: StreamKey, after_seq: int,
                  limit: int) -> list[EventRow]:
    rows = db.execute(
        f"SELECT {EVENT_COLUMNS} FROM events WHERE store = ? AND register = ? AND epoch = ? "  # noqa: S608
        "AND seq > ? ORDER BY seq LIMIT ?",
        (key.store, key.register, key.epoch, after_seq, limit)).fetchall()
    return [event_from_row(r) for r in rows]


def _add_alarm(db: sqlite3.Connection, alarm: Alarm) -> None:
    db.execute("INSERT INTO alarms (ts, ts_key, store, register, kind, detail) "
               "VALUES (?, ?, ?, ?, ?, ?)", alarm_values(alarm))


def _save_cash(db: sqlite3.Connection, transfers: list[TransferRow], steps: list[CashStep],
               new: str | None, expect: Mapping[str, str] | None) -> bool:
    with _transaction(db):  # BEGIN IMMEDIATE: no other writer until the commit
        if expect and transfers:
            for transfer_id, status in expect.items():
                row = db.execute(transfer_status_sql(SQLITE, lock=False),
                                 (transfers[0].store, transfer_id)).fetchone()
                if row is None or row[0] != status:
                    return False
        first = [t for t in transfers if t.transfer_id == new]
        if first and db.execute(insert_new_transfer_sql(SQLITE),
                                transfer_values(first[0])).rowcount != 1:
            return False
        db.executemany(upsert_transfer_sql(SQLITE), [transfer_values(t) for t in transfers])
        db.executemany(insert_step_sql(SQLITE), [step_values(s) for s in steps])
    return True


def _execute(db: sqlite3.Connection, sql: str, args: list[Any]) -> list[Any]:
    return db.execute(sql, args).fetchall()


class SqliteStorage(Storage):
    """:class:`Storage` in the SQLite file ``path`` (created with its folder if missing)."""

    def __init__(self, path: Path, *, busy_timeout: float = 5.0) -> None:
        self.path = path
        self._busy_timeout = busy_timeout
        self._executor: ThreadPoolExecutor | None = None
        self._db: sqlite3.Connection | None = None

    async def _run(self, fn: Callable[_P, _T], *args: _P.args, **kwargs: _P.kwargs) -> _T:
        if self._executor is None:
            raise StorageError(f"{self.path}: the store database is not open")

        def guarded() -> _T:
            try:
                return fn(*args, **kwargs)
            except sqlite3.Error as e:
                raise StorageError(f"{self.path}: {e}") from e
            except OSError as e:
                raise StorageError(f"{self.path}: {e.strerror or e}") from e

        # A cancelled caller does not stop the call: it still runs (and commits) on the
        # thread, before any later call. Inserting again then answers DUPLICATE.
        return await asyncio.get_running_loop().run_in_executor(self._executor, guarded)

    async def _db_call(self, fn: Callable[Concatenate[sqlite3.Connection, _P], _T],
                       *args: _P.args, **kwargs: _P.kwargs) -> _T:
        db = self._db
        if db is None:
            raise StorageError(f"{self.path}: the store database is not open")
        return await self._run(fn, db, *args, **kwargs)

    async def open(self) -> None:
        if self._executor is not None:
            raise StorageError(f"{self.path}: already open")
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="kassad-store-db")
        try:
            self._db = await self._run(_connect, self.path, self._busy_timeout)
        except BaseException:
            self._executor.shutdown(wait=False)
            self._executor = None
            raise

    async def close(self) -> None:
        executor, db = self._executor, self._db
        if executor is None:
            return
        try:
            if db is not None:
                await self._run(db.close)
        finally:
            self._executor = self._db = None
            # The worker is idle once db.close() has returned: this join is immediate.
            executor.shutdown(wait=True)

    async def insert_events(self, rows: list[EventRow]) -> list[InsertResult]:
        if not rows:
            return []
        return await self._db_call(_insert_events, rows)

    async def heads(self) -> list[StreamHead]:
        return await self._db_call(_heads)

    async def events_after(self, key: StreamKey, after_seq: int, limit: int) -> list[EventRow]:
        return await self._db_call(_events_after, key, after_seq, limit)

    async def add_alarm(self, alarm: Alarm) -> None:
        await self._db_call(_add_alarm, alarm)

    async def alarms(self, store: str | None = None, limit: int = 500) -> list[Alarm]:
        sql, args = alarms_sql(SQLITE, store, limit)
        return [alarm_from_row(r) for r in await self._db_call(_execute, sql, args)]

    async def upsert_session(self, row: SessionRow) -> None:
        await self._db_call(_execute, upsert_session_sql(SQLITE), list(session_values(row)))

    async def session(self, session_id: str) -> SessionRow | None:
        rows = await self._db_call(_execute, session_sql(SQLITE), [session_id])
        return session_from_row(rows[0]) if rows else None

    async def sessions(self, stores: list[str] | None, start: datetime | None,
                       end: datetime | None, sort: SessionSort = "start",
                       descending: bool = False, limit: int = 10_000, *,
                       summary_keys: Sequence[str] | None = None) -> list[SessionRow]:
        sql, args = sessions_sql(SQLITE, stores, start, end, sort, descending, limit,
                                 summary_keys)
        return [session_from_row(r) for r in await self._db_call(_execute, sql, args)]

    async def upsert_register(self, row: RegisterRow) -> None:
        await self._db_call(_execute, upsert_register_sql(SQLITE), list(register_values(row)))

    async def registers(self, store: str | None = None) -> list[RegisterRow]:
        sql, args = registers_sql(SQLITE, store)
        return [register_from_row(r) for r in await self._db_call(_execute, sql, args)]

    async def save_cash(self, transfers: list[TransferRow], steps: list[CashStep], *,
                        new: str | None = None, expect: Mapping[str, str] | None = None,
                        ) -> bool:
        return await self._db_call(_save_cash, transfers, steps, new, expect)

    async def transfer(self, store: str, transfer_id: str) -> TransferRow | None:
        rows = await self._db_call(_execute, *transfers_sql(SQLITE, store, transfer_id))
        return transfer_from_row(rows[0]) if rows else None

    async def transfers(self, store: str, *, status: str | None = None,
                        of_transfer: str | None = None, limit: int = 10_000
                        ) -> list[TransferRow]:
        sql, args = transfers_sql(SQLITE, store, None, status, of_transfer, limit)
        return [transfer_from_row(r) for r in await self._db_call(_execute, sql, args)]

    async def cash_steps(self, store: str, subject: str | None = None,
                         limit: int = 100_000) -> list[CashStep]:
        sql, args = steps_sql(SQLITE, store, subject, limit)
        return [step_from_row(r) for r in await self._db_call(_execute, sql, args)]
