"""What the aggregator stores, behind one interface that SQLite and PostgreSQL both implement.

Events are stored once, keyed by (store, register, epoch, seq) with ``event_id`` unique too;
a second copy with the same key and hash is a duplicate, one with a different hash or event_id
is a conflict (kept as an alarm, never stored over the first). Sessions and registers are
derived rows the ingest rebuilds from the events (with the register's own ledger module) and
upserts; the views read them. Every method is one transaction.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum
from typing import Any, Literal


class InsertResult(StrEnum):
    NEW = "new"
    DUPLICATE = "duplicate"  # same key, same hash: the broker or a resend delivered it again
    CONFLICT = "conflict"  # same key (or event_id), different content: corruption or a fork


@dataclass(frozen=True, slots=True)
class StreamKey:
    store: str
    register: str
    epoch: int


@dataclass(frozen=True, slots=True)
class EventRow:
    store: str
    register: str
    epoch: int
    seq: int
    event_id: str
    type: str
    ts: str  # the register's clock, RFC 3339; order by seq, never by ts
    session_id: str | None
    prev_hash: str
    hash: str
    body: str  # canonical JSON without "replayed"

    @property
    def key(self) -> StreamKey:
        return StreamKey(self.store, self.register, self.epoch)


@dataclass(frozen=True, slots=True)
class StreamHead:
    """How far a register's stream is stored without gaps, and the hash at that point."""

    key: StreamKey
    contiguous: int
    head_hash: str


@dataclass(frozen=True, slots=True)
class Alarm:
    ts: str
    store: str | None
    register: str | None
    kind: str  # chain_broken, fork, conflict, close_mismatch, epoch_lost_events, device …
    detail: dict[str, Any]


@dataclass(frozen=True, slots=True)
class SessionRow:
    """One cash session as the store sees it (the register's fold of its own events)."""

    store: str
    register: str
    session_id: str
    number: int
    status: Literal["open", "closed"]
    opened_at: str
    closed_at: str | None
    opened_by: str | None
    closed_by: str | None
    # Per currency, minor units: the figures the summaries add up.
    discrepancy_start: dict[str, int]
    discrepancy_end: dict[str, int]
    cash_gross: dict[str, int]
    cash_refunds: dict[str, int]
    # Everything the session detail shows (Session.summary()); from sessions() with
    # summary_keys, only those keys.
    summary: dict[str, Any]


@dataclass(frozen=True, slots=True)
class RegisterRow:
    store: str
    register: str
    online: bool
    last_seen: str | None
    status: dict[str, Any] = field(default_factory=dict)  # the retained status message
    devices: dict[str, Any] = field(default_factory=dict)  # from the retained state
    alarms: list[str] = field(default_factory=list)  # active device alarms: paper_out …


@dataclass(frozen=True, slots=True)
class TransferRow:
    """One side of a two-sided cash movement (issue 9): a register's ``cash.transferred_out``
    / ``cash.transferred_in`` or a safe's receipt / float issued, and its reconciliation."""

    store: str
    transfer_id: str  # unique in the store: "{register}-T{n}", a safe's "{safe}-S{n}"
    side: Literal["register", "safe"]  # who recorded it
    owner: str  # that register's or safe's id
    direction: Literal["out", "in"]
    party: dict[str, str]  # the other side, {"kind": "safe"|"register", "id": …}
    amounts: dict[str, int]
    ts: str
    of_transfer: str | None = None  # an in: the out it names
    session_id: str | None = None  # a register's: the session that holds it
    employee: str | None = None
    bag: str | None = None
    seal: str | None = None
    note: str | None = None
    status: Literal["unreconciled", "reconciled"] = "unreconciled"
    counterpart: str | None = None
    by: dict[str, Any] | None = None  # who (re/un)reconciled it last: {employee, role}
    reason: str | None = None


@dataclass(frozen=True, slots=True)
class CashStep:
    """An append-only step of the store's cash book, with who and why: a safe's ledger
    (``safe.declare_start`` … ``safe.count``, subject: the safe) or a transfer's
    (``transfer.recorded`` / ``reconciled`` / ``unreconciled``, subject: the transfer)."""

    store: str
    ts: str
    kind: str
    subject: str
    data: dict[str, Any]
    employee: str | None = None
    role: str | None = None
    reason: str | None = None
    id: int | None = None  # given by storage; steps are read in this order


SessionSort = Literal["start", "end", "discrepancy"]


class Storage(ABC):
    """The aggregator's database. ``open()`` creates or migrates the schema itself."""

    @abstractmethod
    async def open(self) -> None: ...

    @abstractmethod
    async def close(self) -> None: ...

    @abstractmethod
    async def insert_events(self, rows: list[EventRow]) -> list[InsertResult]:
        """Store what is new, in one transaction; one result per row, in order."""

    @abstractmethod
    async def heads(self) -> list[StreamHead]:
        """Every stream's contiguous mark (computed from the stored events at start-up)."""

    @abstractmethod
    async def events_after(self, key: StreamKey, after_seq: int, limit: int) -> list[EventRow]:
        """Stored events of one stream with seq > after_seq, in seq order."""

    @abstractmethod
    async def add_alarm(self, alarm: Alarm) -> None: ...

    @abstractmethod
    async def alarms(self, store: str | None = None, limit: int = 500) -> list[Alarm]:
        """Newest first."""

    @abstractmethod
    async def upsert_session(self, row: SessionRow) -> None: ...

    @abstractmethod
    async def session(self, session_id: str) -> SessionRow | None: ...

    @abstractmethod
    async def sessions(self, stores: list[str] | None, start: datetime | None,
                       end: datetime | None, sort: SessionSort = "start",
                       descending: bool = False, limit: int = 10_000, *,
                       summary_keys: Sequence[str] | None = None) -> list[SessionRow]:
        """Sessions of these stores (None: all) that overlap [start, end): opened before
        ``end`` and not closed before ``start``; sort "discrepancy" orders by the sum of the
        absolute end discrepancies. With ``summary_keys``, each row's ``summary`` holds only
        those of its keys (the ones it has, values as stored), for a caller that reads no
        others: the whole summary is most of a row and of the time to read it."""

    @abstractmethod
    async def upsert_register(self, row: RegisterRow) -> None: ...

    @abstractmethod
    async def registers(self, store: str | None = None) -> list[RegisterRow]: ...

    # -- the cash book of safes and transfers (issue 9) -------------------------------------

    @abstractmethod
    async def save_cash(self, transfers: list[TransferRow], steps: list[CashStep], *,
                        new: str | None = None, expect: Mapping[str, str] | None = None,
                        ) -> bool:
        """Upsert these transfers (by store and transfer_id) and append these steps, in one
        transaction — only if the transfer ``new`` (one of them) is not stored yet and each
        transfer in ``expect`` is stored with that status (in the store of the first
        transfer); else write nothing and return False. Several aggregators on one database
        thereby neither record a transfer twice nor act on a status another one changed."""

    @abstractmethod
    async def transfer(self, store: str, transfer_id: str) -> TransferRow | None: ...

    @abstractmethod
    async def transfers(self, store: str, *, status: str | None = None,
                        of_transfer: str | None = None, limit: int = 10_000
                        ) -> list[TransferRow]:
        """Oldest first (by ts, then transfer_id)."""

    @abstractmethod
    async def cash_steps(self, store: str, subject: str | None = None,
                         limit: int = 100_000) -> list[CashStep]:
        """Oldest first (in the order stored)."""
