"""The register's journal: SQLite in WAL mode with ``synchronous=FULL``, one owning thread.

Tables:

- ``events``: append-only (triggers refuse UPDATE and DELETE); ``seq`` gapless from 1 within
  the journal's epoch; ``body`` is the canonical JSON of the envelope with its ``hash``.
- ``commands``: one row per ``cmd_id`` (the idempotency key): status ``rejected``,
  ``executing`` (the write-ahead intent), ``done``, ``failed`` or ``indeterminate``, with the
  replies already sent so a resend gets the same answer.
- ``consumer_acks``: each consumer's cumulative ack, so a restart resumes from it.
- ``meta``: schema version, store, register, epoch, connection counter.

Every method here runs in the journal thread (see :class:`Journal`); a command's row and its
events are written in one ``BEGIN IMMEDIATE`` transaction.
"""

from __future__ import annotations

import json
import secrets
import sqlite3
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..contract.events import GENESIS_HASH, canonical_json, event_hash

SCHEMA_VERSION = 2  # 2: print_jobs

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS events (
    seq        INTEGER PRIMARY KEY,
    event_id   TEXT NOT NULL UNIQUE,
    type       TEXT NOT NULL,
    session_id TEXT,
    ts         TEXT NOT NULL,
    hash       TEXT NOT NULL,
    body       TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS events_session ON events(session_id);
CREATE TRIGGER IF NOT EXISTS events_no_update BEFORE UPDATE ON events
    BEGIN SELECT RAISE(ABORT, 'the journal is append-only'); END;
CREATE TRIGGER IF NOT EXISTS events_no_delete BEFORE DELETE ON events
    BEGIN SELECT RAISE(ABORT, 'the journal is append-only'); END;
CREATE TABLE IF NOT EXISTS commands (
    cmd_id         TEXT PRIMARY KEY,
    command        TEXT,
    requester      TEXT,
    status         TEXT NOT NULL,
    received_at    TEXT NOT NULL,
    updated_at     TEXT NOT NULL,
    response_topic TEXT,
    ack            TEXT,
    result         TEXT
);
CREATE INDEX IF NOT EXISTS commands_status ON commands(status);
CREATE TABLE IF NOT EXISTS print_jobs (
    job_id      TEXT PRIMARY KEY,
    state       TEXT NOT NULL,
    reason      TEXT,
    created_at  TEXT NOT NULL,
    expires_at  INTEGER NOT NULL,  -- Unix time, milliseconds
    data        BLOB NOT NULL,
    info        TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS print_jobs_state ON print_jobs(state);
CREATE TABLE IF NOT EXISTS consumer_acks (
    consumer TEXT PRIMARY KEY,
    epoch    INTEGER NOT NULL,
    upto_seq INTEGER NOT NULL,
    ts       TEXT NOT NULL
);
"""


class JournalError(Exception):
    """The journal cannot be written or read (disk full, I/O error, corrupt file)."""


class JournalMismatch(JournalError):
    """The journal belongs to another store or register than the configuration says."""


@dataclass(frozen=True, slots=True)
class EventDraft:
    """An event before the journal gives it its place (epoch, seq, hash)."""

    type: str
    ts: str
    session_id: str | None = None
    data: dict[str, Any] | None = None
    cause: dict[str, Any] | None = None
    actor: dict[str, Any] | None = None


@dataclass(frozen=True, slots=True)
class SealedEvent:
    seq: int
    type: str
    hash: str
    body: str  # canonical JSON, ``hash`` included, ``replayed`` not


@dataclass(frozen=True, slots=True)
class CommandRecord:
    cmd_id: str
    command: str | None
    requester: str | None
    status: str
    received_at: str
    updated_at: str
    response_topic: str | None
    ack: dict[str, Any] | None
    result: dict[str, Any] | None

    def as_json(self) -> dict[str, Any]:
        return {
            "cmd_id": self.cmd_id, "command": self.command, "requester": self.requester,
            "status": self.status, "received_at": self.received_at,
            "updated_at": self.updated_at, "ack": self.ack, "result": self.result,
        }


def _loads(text: str | None) -> dict[str, Any] | None:
    return None if text is None else dict(json.loads(text))


def _row_to_command(row: tuple[Any, ...]) -> CommandRecord:
    return CommandRecord(row[0], row[1], row[2], row[3], row[4], row[5], row[6],
                         _loads(row[7]), _loads(row[8]))


_COMMAND_COLUMNS = ("cmd_id, command, requester, status, received_at, updated_at, "
                    "response_topic, ack, result")


class JournalFile:
    """The SQLite file and its head (epoch, last seq, last hash). Used from one thread only."""

    def __init__(self, path: Path, store: str, register: str, boot_id: str) -> None:
        self.path = path
        self.store = store
        self.register = register
        self.boot_id = boot_id
        self.last_seq = 0
        self.last_hash = GENESIS_HASH
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            # check_same_thread=False: the connection is created here but used only by the
            # journal thread afterwards (Journal serialises every call onto it).
            self._db = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=FULL")
            self._db.execute("PRAGMA busy_timeout=5000")
            self._db.executescript(_SCHEMA)
        except sqlite3.Error as e:
            raise JournalError(f"{path}: cannot open the journal: {e}") from e
        except OSError as e:
            raise JournalError(f"{path}: cannot create the journal: {e.strerror}") from e
        self.epoch, self.created = self._init_meta()
        row = self._db.execute("SELECT seq, hash FROM events ORDER BY seq DESC LIMIT 1").fetchone()
        if row:
            self.last_seq, self.last_hash = int(row[0]), str(row[1])

    def close(self) -> None:
        self._db.close()

    @contextmanager
    def _transaction(self) -> Iterator[sqlite3.Connection]:
        """``BEGIN IMMEDIATE`` … ``COMMIT``; rolls back and restores the head on any error."""
        head = (self.last_seq, self.last_hash)
        try:
            self._db.execute("BEGIN IMMEDIATE")
        except sqlite3.Error as e:
            raise JournalError(f"cannot start a journal transaction: {e}") from e
        try:
            yield self._db
            self._db.execute("COMMIT")
        except BaseException as e:
            if self._db.in_transaction:
                self._db.execute("ROLLBACK")
            self.last_seq, self.last_hash = head
            if isinstance(e, sqlite3.Error):
                raise JournalError(f"journal write failed: {e}") from e
            raise

    def _init_meta(self) -> tuple[int, bool]:
        meta = dict(self._db.execute("SELECT key, value FROM meta").fetchall())
        if not meta:
            # Creation time in the high bits (epochs sort by age), 20 random bits so a journal
            # recreated in the same second or after the clock went back still gets a new one.
            epoch = int(time.time()) * 2**20 + secrets.randbelow(2**20)
            with self._transaction() as db:
                db.executemany("INSERT INTO meta(key, value) VALUES (?, ?)", [
                    ("schema_version", str(SCHEMA_VERSION)), ("store", self.store),
                    ("register", self.register), ("epoch", str(epoch)), ("conn_seq", "0"),
                ])
            return epoch, True
        if (meta.get("store"), meta.get("register")) != (self.store, self.register):
            raise JournalMismatch(
                f"{self.path} is the journal of register {meta.get('store')}/"
                f"{meta.get('register')}, not {self.store}/{self.register}; "
                "point journal.path at this register's own file"
            )
        version = int(meta.get("schema_version", "0"))
        if version > SCHEMA_VERSION:
            raise JournalError(f"{self.path} was written by a newer kassad (schema "
                               f"{meta['schema_version']} > {SCHEMA_VERSION})")
        if version < SCHEMA_VERSION:  # the tables were added by CREATE … IF NOT EXISTS
            with self._transaction() as db:
                db.execute("UPDATE meta SET value = ? WHERE key = 'schema_version'",
                           (str(SCHEMA_VERSION),))
        return int(meta["epoch"]), False

    # -- events -------------------------------------------------------------------------------

    def _seal(self, db: sqlite3.Connection, draft: EventDraft) -> SealedEvent:
        seq = self.last_seq + 1
        event: dict[str, Any] = {
            "v": 1, "event_id": str(uuid.uuid4()), "store": self.store,
            "register": self.register, "epoch": self.epoch, "seq": seq, "type": draft.type,
            "ts": draft.ts, "boot_id": self.boot_id, "session_id": draft.session_id,
            "cause": draft.cause, "actor": draft.actor, "data": draft.data or {},
            "prev_hash": self.last_hash,
        }
        event["hash"] = digest = event_hash(event)
        body = canonical_json(event)
        db.execute(
            "INSERT INTO events(seq, event_id, type, session_id, ts, hash, body) "
            "VALUES (?, ?, ?, ?, ?, ?, ?)",
            (seq, event["event_id"], draft.type, draft.session_id, draft.ts, digest, body),
        )
        self.last_seq, self.last_hash = seq, digest
        return SealedEvent(seq, draft.type, digest, body)

    def append(self, drafts: list[EventDraft]) -> list[SealedEvent]:
        with self._transaction() as db:
            return [self._seal(db, d) for d in drafts]

    def read_events(self, from_seq: int, limit: int) -> list[tuple[int, str]]:
        return self._db.execute(
            "SELECT seq, body FROM events WHERE seq >= ? ORDER BY seq LIMIT ?", (from_seq, limit)
        ).fetchall()

    def session_bodies(self, session_id: str) -> list[str]:
        rows = self._db.execute(
            "SELECT body FROM events WHERE session_id = ? ORDER BY seq", (session_id,)
        ).fetchall()
        return [r[0] for r in rows]

    def iter_bodies(self, batch: int = 1000) -> Iterator[str]:
        seq = 1
        while rows := self.read_events(seq, batch):
            for _, body in rows:
                yield body
            seq = rows[-1][0] + 1

    # -- commands -----------------------------------------------------------------------------

    def get_command(self, cmd_id: str) -> CommandRecord | None:
        row = self._db.execute(
            f"SELECT {_COMMAND_COLUMNS} FROM commands WHERE cmd_id = ?", (cmd_id,)  # noqa: S608
        ).fetchone()
        return None if row is None else _row_to_command(row)

    def start_command(
        self,
        record: CommandRecord,
        decide: Callable[[], tuple[CommandRecord, list[EventDraft]]],
    ) -> tuple[CommandRecord, bool, list[SealedEvent]]:
        """In one transaction: return the stored row of a known ``cmd_id`` (``True``), or call
        ``decide`` and store the row it returns (``rejected`` or ``executing``) with its events.
        """
        return self.start_commands([record], lambda _: decide())[0]

    def start_commands(
        self,
        records: list[CommandRecord],
        decide: Callable[[int], tuple[CommandRecord, list[EventDraft]] | None],
    ) -> list[tuple[CommandRecord, bool, list[SealedEvent]]]:
        """:meth:`start_command` for several commands in one transaction (group commit: one
        fsync for all). In order: a known ``cmd_id`` gives its stored row (one earlier in
        this same group included); otherwise ``decide(i)`` gives the row to store with its
        events, or None to stop there — that command and the ones after it are not taken,
        and the list returned is shorter."""
        taken: list[tuple[CommandRecord, bool, list[SealedEvent]]] = []
        with self._transaction() as db:
            for i, record in enumerate(records):
                existing = self.get_command(record.cmd_id)
                if existing is not None:
                    taken.append((existing, True, []))
                    continue
                decided = decide(i)
                if decided is None:
                    break
                row, drafts = decided
                self._put_command(db, row)
                taken.append((row, False, [self._seal(db, d) for d in drafts]))
        return taken

    def finish_command(self, record: CommandRecord,
                       drafts: list[EventDraft]) -> list[SealedEvent]:
        """Store a command's final row and its events in one transaction."""
        return self.finish_commands([(record, drafts)])[0]

    def finish_commands(self, results: list[tuple[CommandRecord, list[EventDraft]]],
                        ) -> list[list[SealedEvent]]:
        """Store several commands' final rows, each with its events, in one transaction."""
        sealed: list[list[SealedEvent]] = []
        with self._transaction() as db:
            for record, drafts in results:
                sealed.append([self._seal(db, d) for d in drafts])
                self._put_command(db, record)
        return sealed

    def _put_command(self, db: sqlite3.Connection, r: CommandRecord) -> None:
        db.execute(
            f"INSERT OR REPLACE INTO commands({_COMMAND_COLUMNS}) "  # noqa: S608
            "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (r.cmd_id, r.command, r.requester, r.status, r.received_at, r.updated_at,
             r.response_topic, None if r.ack is None else json.dumps(r.ack),
             None if r.result is None else json.dumps(r.result)),
        )

    def interrupted_commands(self) -> list[CommandRecord]:
        rows = self._db.execute(
            f"SELECT {_COMMAND_COLUMNS} FROM commands WHERE status = 'executing' "  # noqa: S608
            "ORDER BY received_at"
        ).fetchall()
        return [_row_to_command(r) for r in rows]

    # -- delivery bookkeeping -----------------------------------------------------------------

    def save_ack(self, consumer: str, epoch: int, upto_seq: int, ts: str) -> None:
        with self._transaction() as db:
            db.execute(
                "INSERT INTO consumer_acks(consumer, epoch, upto_seq, ts) VALUES (?, ?, ?, ?) "
                "ON CONFLICT(consumer) DO UPDATE SET epoch=excluded.epoch, "
                "upto_seq=excluded.upto_seq, ts=excluded.ts",
                (consumer, epoch, upto_seq, ts),
            )

    def load_acks(self) -> dict[str, int]:
        rows = self._db.execute(
            "SELECT consumer, upto_seq FROM consumer_acks WHERE epoch = ?", (self.epoch,)
        ).fetchall()
        return {consumer: min(upto, self.last_seq) for consumer, upto in rows}

    def next_conn_seq(self, above: int = 0) -> int:
        """The next connection's number: above the last journaled one and above ``above`` (one
        numbered in memory while the journal could not be written)."""
        with self._transaction() as db:
            db.execute("UPDATE meta SET value = MAX(CAST(value AS INTEGER), ?) + 1 "
                       "WHERE key = 'conn_seq'", (above,))
            row = db.execute("SELECT value FROM meta WHERE key = 'conn_seq'").fetchone()
            return int(row[0])

    # -- print jobs ---------------------------------------------------------------------------

    def put_job(self, job: PrintJobRecord, drafts: list[EventDraft]) -> list[SealedEvent]:
        """Store a job (new, or its new state) with the events that say so, in one transaction."""
        with self._transaction() as db:
            db.execute(
                "INSERT OR REPLACE INTO print_jobs(job_id, state, reason, created_at, expires_at,"
                " data, info) VALUES (?, ?, ?, ?, ?, ?, ?)",
                (job.job_id, job.state, job.reason, job.created_at, job.expires_at_ms, job.data,
                 json.dumps(job.info)))
            return [self._seal(db, d) for d in drafts]

    def unfinished_jobs(self) -> list[PrintJobRecord]:
        rows = self._db.execute(
            "SELECT job_id, state, reason, created_at, expires_at, data, info FROM print_jobs "
            "WHERE state IN ('accepted', 'waiting', 'printing') ORDER BY created_at").fetchall()
        return [PrintJobRecord(r[0], r[1], r[2], r[3], int(r[4]), bytes(r[5]),
                               dict(json.loads(r[6]))) for r in rows]

    def get_job(self, job_id: str) -> PrintJobRecord | None:
        r = self._db.execute(
            "SELECT job_id, state, reason, created_at, expires_at, data, info FROM print_jobs "
            "WHERE job_id = ?", (job_id,)).fetchone()
        return None if r is None else PrintJobRecord(r[0], r[1], r[2], r[3], int(r[4]),
                                                     bytes(r[5]), dict(json.loads(r[6])))


@dataclass(frozen=True, slots=True)
class PrintJobRecord:
    """A durable print job: ``job_id`` is the command id; ``expires_at_ms`` is Unix time in
    milliseconds (an integer: exact, and no float near money code)."""

    job_id: str
    state: str  # accepted, waiting, printing, printed, failed, expired, indeterminate
    reason: str | None
    created_at: str
    expires_at_ms: int
    data: bytes
    info: dict[str, Any]
