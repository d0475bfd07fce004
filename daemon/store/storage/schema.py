"""The store database's tables and queries, shared by the SQLite and PostgreSQL backends.

Tables (the same schema version in both; only column types differ, see :class:`Dialect`):

- ``meta``: ``schema_version``; created before the migration steps, which it counts.
- ``events``: each event once, primary key (store, register, epoch, seq), ``event_id`` unique;
  ``body`` is the canonical JSON the hash covers, kept as text byte for byte (JSONB would
  reorder keys and refuses ``\\u0000``).
- ``streams``: one row per (store, register, epoch) with a stored event, and a contiguous mark
  (seq, hash). Events are never deleted, so a mark once true stays true: ``heads()`` scans only
  the events above it and moves it up, and start-up does not re-read a year of events.
- ``transfers`` (a row per side of a cash movement, the whole row as JSON ``body`` with the
  columns looked up beside it) and ``cash_steps`` (append-only: safes' ledgers and every
  reconciliation step, with who and why): issue 9's cash book, kept by the aggregator.
- ``alarms``, ``sessions``, ``registers``: the derived rows. Timestamps that are filtered or
  sorted on get a normalised UTC key column (``*_key``) next to the text as given.
"""

# ruff: noqa: S608 - the queries here are put together from this module's own column names and
# the driver's placeholders; every value goes in as a parameter.
from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from ...contract.events import canonical_json
from .base import (
    Alarm,
    CashStep,
    EventRow,
    InsertResult,
    RegisterRow,
    SessionRow,
    SessionSort,
    TransferRow,
)


class StorageError(Exception):
    """The store database cannot be opened, migrated, written or read."""


@dataclass(frozen=True, slots=True)
class Dialect:
    param: str  # the driver's placeholder
    id: str  # store, register, event and session ids: compared and sorted byte by byte
    int: str
    bool: str
    json: str
    ts: str
    serial: str
    json_out: str  # how a JSON column is selected so that both drivers return text
    # A JSON object column cut down to the keys in {keys} (placeholders) that it has, as text;
    # the values as stored (SQLite's json_each gives true and false as 1 and 0: put back).
    json_subset: str


SQLITE = Dialect(param="?", id="TEXT", int="INTEGER", bool="INTEGER", json="TEXT", ts="TEXT",
                 serial="INTEGER PRIMARY KEY", json_out="{}",
                 json_subset=("(SELECT json_group_object(key, CASE type WHEN 'true' THEN "
                              "json('true') WHEN 'false' THEN json('false') ELSE value END) "
                              "FROM json_each({column}) WHERE key IN ({keys}))"))
POSTGRES = Dialect(param="%s", id='TEXT COLLATE "C"', int="BIGINT", bool="BOOLEAN",
                   json="JSONB", ts="TIMESTAMPTZ",
                   serial="BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY",
                   json_out="{}::text",
                   json_subset=("(SELECT COALESCE(jsonb_object_agg(key, value), '{{}}')::text "
                                "FROM jsonb_each({column}) WHERE key IN ({keys}))"))

META_DDL = "CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL)"

# Ordered steps: step n brings the schema from version n-1 to n. Append, never edit: a
# database already at version n has run step n as it was written then.
_STEPS: tuple[tuple[str, ...], ...] = (
    (
        """CREATE TABLE events (
            store {id} NOT NULL, register {id} NOT NULL, epoch {int} NOT NULL,
            seq {int} NOT NULL CHECK (seq >= 1), event_id {id} NOT NULL UNIQUE,
            type TEXT NOT NULL, ts TEXT NOT NULL, session_id {id}, prev_hash TEXT NOT NULL,
            hash TEXT NOT NULL, body TEXT NOT NULL,
            PRIMARY KEY (store, register, epoch, seq))""",
        """CREATE TABLE streams (
            store {id} NOT NULL, register {id} NOT NULL, epoch {int} NOT NULL,
            contiguous {int} NOT NULL, head_hash TEXT NOT NULL,
            PRIMARY KEY (store, register, epoch))""",
        """CREATE TABLE alarms (
            id {serial}, ts TEXT NOT NULL, ts_key {ts} NOT NULL, store {id}, register {id},
            kind TEXT NOT NULL, detail {json} NOT NULL)""",
        "CREATE INDEX alarms_newest ON alarms (ts_key, id)",
        "CREATE INDEX alarms_store_newest ON alarms (store, ts_key, id)",
        """CREATE TABLE sessions (
            session_id {id} PRIMARY KEY, store {id} NOT NULL, register {id} NOT NULL,
            number {int} NOT NULL, status TEXT NOT NULL, opened_at TEXT NOT NULL,
            closed_at TEXT, opened_by TEXT, closed_by TEXT,
            discrepancy_start {json} NOT NULL, discrepancy_end {json} NOT NULL,
            cash_gross {json} NOT NULL, cash_refunds {json} NOT NULL, summary {json} NOT NULL,
            opened_key {ts} NOT NULL, closed_key {ts}, discrepancy_abs {int} NOT NULL)""",
        "CREATE INDEX sessions_store_opened ON sessions (store, opened_key)",
        "CREATE INDEX sessions_opened ON sessions (opened_key)",
        """CREATE TABLE registers (
            store {id} NOT NULL, register {id} NOT NULL, online {bool} NOT NULL,
            last_seen TEXT, status {json} NOT NULL, devices {json} NOT NULL,
            alarms {json} NOT NULL, PRIMARY KEY (store, register))""",
    ),
    (  # 2: issue 9, safes and two-sided transfers
        """CREATE TABLE transfers (
            store {id} NOT NULL, transfer_id {id} NOT NULL, status TEXT NOT NULL,
            of_transfer {id}, ts_key {ts} NOT NULL, body {json} NOT NULL,
            PRIMARY KEY (store, transfer_id))""",
        "CREATE INDEX transfers_of ON transfers (store, of_transfer)",
        "CREATE INDEX transfers_status ON transfers (store, status, ts_key)",
        """CREATE TABLE cash_steps (
            id {serial}, store {id} NOT NULL, ts TEXT NOT NULL, kind TEXT NOT NULL,
            subject {id} NOT NULL, employee TEXT, role TEXT, reason TEXT, data {json} NOT NULL)""",
        "CREATE INDEX cash_steps_subject ON cash_steps (store, subject, id)",
    ),
)

SCHEMA_VERSION = len(_STEPS)


def pending_steps(dialect: Dialect, current: int, where: str) -> list[tuple[int, list[str]]]:
    """The steps after ``current``, rendered for the dialect; refuses a newer database."""
    if current > SCHEMA_VERSION:
        raise StorageError(f"{where} was written by a newer kassad (schema {current} > "
                           f"{SCHEMA_VERSION}); upgrade this aggregator")
    return [
        (n, [s.format(id=dialect.id, int=dialect.int, bool=dialect.bool, json=dialect.json,
                      ts=dialect.ts, serial=dialect.serial) for s in _STEPS[n - 1]])
        for n in range(current + 1, SCHEMA_VERSION + 1)
    ]


# -- timestamps ---------------------------------------------------------------------------------


def moment_key(moment: datetime) -> str:
    """Fixed-width UTC with microseconds: sorts as text in SQLite, casts in PostgreSQL."""
    if moment.tzinfo is None:
        # A naive time would be read as UTC here and as local time by whoever wrote it.
        raise ValueError(f"{moment!r} has no time zone; pass an aware datetime")
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def ts_key(text: str) -> str:
    """The sort key of an RFC 3339 timestamp given as text (any offset)."""
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        raise ValueError(f"{text!r} is not an RFC 3339 timestamp") from None
    return moment_key(moment)


# -- events -------------------------------------------------------------------------------------

EVENT_COLUMNS = ("store, register, epoch, seq, event_id, type, ts, session_id, prev_hash, "
                 "hash, body")


def event_values(r: EventRow) -> tuple[Any, ...]:
    return (r.store, r.register, r.epoch, r.seq, r.event_id, r.type, r.ts, r.session_id,
            r.prev_hash, r.hash, r.body)


def event_from_row(t: Sequence[Any]) -> EventRow:
    return EventRow(str(t[0]), str(t[1]), int(t[2]), int(t[3]), str(t[4]), str(t[5]),
                    str(t[6]), t[7], str(t[8]), str(t[9]), str(t[10]))


def key_order(rows: Sequence[EventRow]) -> list[int]:
    """Row indexes in (stream, seq, position) order: every writer takes the unique-index locks
    in the same order (no deadlock between two aggregators) and both backends agree on which
    of two rows in one batch that disagree is stored."""
    return sorted(range(len(rows)),
                  key=lambda i: (rows[i].store, rows[i].register, rows[i].epoch, rows[i].seq, i))


def classify(row: EventRow, stored: Sequence[Any] | None) -> InsertResult:
    """A row that was not inserted, against the (event_id, hash) stored under its key."""
    if stored is not None and (stored[0], stored[1]) == (row.event_id, row.hash):
        return InsertResult.DUPLICATE
    # Another event under this key, or this event_id under another key: never overwritten.
    return InsertResult.CONFLICT


def advance_sql(d: Dialect) -> str:
    """The end of the gapless run just above a stream's mark: seq - row_number() stays equal
    to the mark exactly while no seq is missing."""
    p = d.param
    return (
        "SELECT seq, hash FROM (SELECT seq, hash, seq - ROW_NUMBER() OVER (ORDER BY seq) AS off"
        f" FROM events WHERE store = {p} AND register = {p} AND epoch = {p} AND seq > {p}) AS run"
        f" WHERE off = {p} ORDER BY seq DESC LIMIT 1"
    )


# -- alarms -------------------------------------------------------------------------------------


def alarm_values(a: Alarm) -> tuple[Any, ...]:
    return (a.ts, ts_key(a.ts), a.store, a.register, a.kind, canonical_json(a.detail))


def alarms_sql(d: Dialect, store: str | None, limit: int) -> tuple[str, list[Any]]:
    where, args = ("", []) if store is None else (f"WHERE store = {d.param} ", [store])
    sql = (f"SELECT ts, store, register, kind, {d.json_out.format('detail')} FROM alarms "
           f"{where}ORDER BY ts_key DESC, id DESC LIMIT {d.param}")
    return sql, [*args, limit]


def alarm_from_row(t: Sequence[Any]) -> Alarm:
    return Alarm(str(t[0]), t[1], t[2], str(t[3]), dict(json.loads(t[4])))


# -- sessions -----------------------------------------------------------------------------------

_SESSION_COLUMNS = ("session_id", "store", "register", "number", "status", "opened_at",
                    "closed_at", "opened_by", "closed_by", "discrepancy_start",
                    "discrepancy_end", "cash_gross", "cash_refunds", "summary")
_SESSION_JSON = frozenset(_SESSION_COLUMNS[9:])
_SESSION_KEYS = ("opened_key", "closed_key", "discrepancy_abs")
_SESSION_SORT: dict[SessionSort, str] = {
    "start": "opened_key", "end": "closed_key", "discrepancy": "discrepancy_abs",
}


def discrepancy_abs(row: SessionRow) -> int:
    """What "sort by discrepancy" orders by: a shortfall counts as much as a surplus."""
    return sum(abs(v) for v in row.discrepancy_end.values())


def upsert_session_sql(d: Dialect) -> str:
    columns = (*_SESSION_COLUMNS, *_SESSION_KEYS)
    updates = ", ".join(f"{c} = excluded.{c}" for c in columns[1:])
    return (f"INSERT INTO sessions ({', '.join(columns)}) "
            f"VALUES ({', '.join([d.param] * len(columns))}) "
            f"ON CONFLICT (session_id) DO UPDATE SET {updates}")


def session_values(r: SessionRow) -> tuple[Any, ...]:
    return (r.session_id, r.store, r.register, r.number, r.status, r.opened_at, r.closed_at,
            r.opened_by, r.closed_by, canonical_json(r.discrepancy_start),
            canonical_json(r.discrepancy_end), canonical_json(r.cash_gross),
            canonical_json(r.cash_refunds), canonical_json(r.summary), ts_key(r.opened_at),
            None if r.closed_at is None else ts_key(r.closed_at), discrepancy_abs(r))


def _session_select(d: Dialect, summary_keys: Sequence[str] | None = None,
                    ) -> tuple[str, list[Any]]:
    """The columns of ``session_from_row`` and their parameters; with ``summary_keys``, only
    those keys of the summary (the ones it has), cut out by the database. A summary (1-2 kB of
    JSON for a busy session) is most of a row: decoding it whole was most of the time a month's
    listing took, and the list views read a handful of its keys."""
    columns = [d.json_out.format(c) if c in _SESSION_JSON else c for c in _SESSION_COLUMNS]
    if summary_keys is None:
        return f"SELECT {', '.join(columns)} FROM sessions", []
    if isinstance(summary_keys, str):  # would be read as one key per character
        raise TypeError(f"summary_keys: a sequence of keys, not the text {summary_keys!r}")
    keys = list(summary_keys)
    columns[-1] = (d.json_subset.format(column="summary", keys=", ".join([d.param] * len(keys)))
                   if keys else "'{}'")
    return f"SELECT {', '.join(columns)} FROM sessions", keys


def session_sql(d: Dialect) -> str:
    return f"{_session_select(d)[0]} WHERE session_id = {d.param}"


def sessions_sql(d: Dialect, stores: list[str] | None, start: datetime | None,
                 end: datetime | None, sort: SessionSort, descending: bool,
                 limit: int, summary_keys: Sequence[str] | None = None,
                 ) -> tuple[str, list[Any]]:
    """The filter and order of ``Storage.sessions``; open sessions count as ending last."""
    select, args = _session_select(d, summary_keys)
    conditions: list[str] = []
    if stores is not None:
        if not stores:
            conditions.append("1 = 0")
        else:
            conditions.append(f"store IN ({', '.join([d.param] * len(stores))})")
            args.extend(stores)
    if end is not None:
        conditions.append(f"opened_key < {d.param}")
        args.append(moment_key(end))
    if start is not None:
        conditions.append(f"(closed_key IS NULL OR closed_key >= {d.param})")
        args.append(moment_key(start))
    where = f" WHERE {' AND '.join(conditions)}" if conditions else ""
    # Ties broken by start, then session_id, in the same direction: descending is exactly
    # ascending reversed, so paging and CSV exports are stable.
    direction, nulls = ("DESC", "FIRST") if descending else ("ASC", "LAST")
    order = (f"{_SESSION_SORT[sort]} {direction} NULLS {nulls}, opened_key {direction}, "
             f"session_id {direction}")
    return f"{select}{where} ORDER BY {order} LIMIT {d.param}", [*args, limit]


# json.loads without its checks for a byte order mark and surrounding space, which cost as
# much as decoding a small object (five columns a row, a month of rows per listing): the
# columns are JSON as this module wrote it or as the database prints it, with neither.
_decode_json = json.JSONDecoder().raw_decode


def session_from_row(t: Sequence[Any]) -> SessionRow:
    return SessionRow(
        session_id=str(t[0]), store=str(t[1]), register=str(t[2]), number=int(t[3]),
        status="closed" if t[4] == "closed" else "open", opened_at=str(t[5]),
        closed_at=t[6], opened_by=t[7], closed_by=t[8],
        discrepancy_start=_decode_json(t[9])[0], discrepancy_end=_decode_json(t[10])[0],
        cash_gross=_decode_json(t[11])[0], cash_refunds=_decode_json(t[12])[0],
        summary=_decode_json(t[13])[0],
    )


# -- registers ----------------------------------------------------------------------------------


def upsert_register_sql(d: Dialect) -> str:
    p = d.param
    return ("INSERT INTO registers (store, register, online, last_seen, status, devices, alarms)"
            f" VALUES ({p}, {p}, {p}, {p}, {p}, {p}, {p}) ON CONFLICT (store, register) DO UPDATE"
            " SET online = excluded.online, last_seen = excluded.last_seen,"
            " status = excluded.status, devices = excluded.devices, alarms = excluded.alarms")


def register_values(r: RegisterRow) -> tuple[Any, ...]:
    return (r.store, r.register, r.online, r.last_seen, canonical_json(r.status),
            canonical_json(r.devices), canonical_json(r.alarms))


def registers_sql(d: Dialect, store: str | None) -> tuple[str, list[Any]]:
    j = d.json_out
    where, args = ("", []) if store is None else (f" WHERE store = {d.param}", [store])
    return (f"SELECT store, register, online, last_seen, {j.format('status')}, "
            f"{j.format('devices')}, {j.format('alarms')} FROM registers{where} "
            "ORDER BY store, register", args)


def register_from_row(t: Sequence[Any]) -> RegisterRow:
    return RegisterRow(str(t[0]), str(t[1]), bool(t[2]), t[3], dict(json.loads(t[4])),
                       dict(json.loads(t[5])), list(json.loads(t[6])))


# -- transfers and cash steps -------------------------------------------------------------------

_TRANSFER_FIELDS = tuple(TransferRow.__dataclass_fields__)


def upsert_transfer_sql(d: Dialect) -> str:
    p = d.param
    return ("INSERT INTO transfers (store, transfer_id, status, of_transfer, ts_key, body) "
            f"VALUES ({p}, {p}, {p}, {p}, {p}, {p}) ON CONFLICT (store, transfer_id) DO UPDATE "
            "SET status = excluded.status, of_transfer = excluded.of_transfer, "
            "ts_key = excluded.ts_key, body = excluded.body")


def insert_new_transfer_sql(d: Dialect) -> str:
    p = d.param
    return ("INSERT INTO transfers (store, transfer_id, status, of_transfer, ts_key, body) "
            f"VALUES ({p}, {p}, {p}, {p}, {p}, {p}) ON CONFLICT (store, transfer_id) DO NOTHING")


def transfer_status_sql(d: Dialect, lock: bool) -> str:
    return (f"SELECT status FROM transfers WHERE store = {d.param} AND transfer_id = {d.param}"
            + (" FOR UPDATE" if lock else ""))


def transfer_values(r: TransferRow) -> tuple[Any, ...]:
    body = {name: getattr(r, name) for name in _TRANSFER_FIELDS}
    return (r.store, r.transfer_id, r.status, r.of_transfer, ts_key(r.ts), canonical_json(body))


def transfers_sql(d: Dialect, store: str, transfer_id: str | None = None,
                  status: str | None = None, of_transfer: str | None = None,
                  limit: int = 10_000) -> tuple[str, list[Any]]:
    p = d.param
    conditions, args = [f"store = {p}"], [store]
    for column, value in (("transfer_id", transfer_id), ("status", status),
                          ("of_transfer", of_transfer)):
        if value is not None:
            conditions.append(f"{column} = {p}")
            args.append(value)
    return (f"SELECT {d.json_out.format('body')} FROM transfers WHERE "
            f"{' AND '.join(conditions)} ORDER BY ts_key, transfer_id LIMIT {p}", [*args, limit])


def transfer_from_row(t: Sequence[Any]) -> TransferRow:
    body = json.loads(t[0])
    return TransferRow(**{k: v for k, v in body.items() if k in _TRANSFER_FIELDS})


def insert_step_sql(d: Dialect) -> str:
    p = d.param
    return ("INSERT INTO cash_steps (store, ts, kind, subject, employee, role, reason, data) "
            f"VALUES ({p}, {p}, {p}, {p}, {p}, {p}, {p}, {p})")


def step_values(s: CashStep) -> tuple[Any, ...]:
    return (s.store, s.ts, s.kind, s.subject, s.employee, s.role, s.reason,
            canonical_json(s.data))


def steps_sql(d: Dialect, store: str, subject: str | None, limit: int) -> tuple[str, list[Any]]:
    p = d.param
    where, args = f"store = {p}", [store]
    if subject is not None:
        where += f" AND subject = {p}"
        args.append(subject)
    return (f"SELECT id, store, ts, kind, subject, employee, role, reason, "
            f"{d.json_out.format('data')} FROM cash_steps WHERE {where} ORDER BY id LIMIT {p}",
            [*args, limit])


def step_from_row(t: Sequence[Any]) -> CashStep:
    return CashStep(store=str(t[1]), ts=str(t[2]), kind=str(t[3]), subject=str(t[4]),
                    employee=t[5], role=t[6], reason=t[7], data=dict(json.loads(t[8])),
                    id=int(t[0]))
