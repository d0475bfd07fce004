"""The cash-session fold: journal events in, session state out. Pure: no I/O, no clock.

This is the one home of the session formulas (product.md); the register and the store
aggregator both fold the same events with it. Per-currency figures are ``{currency: minor}``.

Event data this module reads (``type``: fields):

- ``session.opened``: ``number``, ``automatic``, ``starting_float`` {cur: n},
  ``expected_start`` {cur: n} or null (first session of the register), ``note``,
  ``training``, ``balances_start`` {payment type: {cur: n}} (non-cash balances carried)
- ``payment.recorded``: ``kind`` (cash_sale | cash_refund | other), ``amount`` Money (the cash
  actually taken or paid: rounded), ``tendered`` / ``change`` Money (cash sales; ``tendered``
  may be a foreign currency, with ``exchange_rate``), ``payment_type``, ``reference``,
  ``sale_amount`` Money and ``rounding`` Money (cash rounding: its effect on the drawer, signed)
- ``session.adjusted``: ``direction`` (add | remove), ``amount`` Money, ``note``,
  ``payment_type`` (absent: cash; else a deposit to / withdrawal from that type's balance)
- ``drawer.opened``: ``cause`` (sale, refund, adjustment, no_sale, unexpected …)
- ``session.closed``: ``counted`` {cur: n} (null: a system close, counted unknown),
  ``left_in_drawer`` {cur: n}, ``note``, ``approval``, ``recounts``, ``system``
- ``cmd.rejected`` of ``session.close`` with ``recount_required``: a count attempt
- ``session.corrected``: ``counted`` {cur: n} of the last closed session, ``approval``
- ``report.issued``: ``kind`` (x | z), ``number``, ``copy``
- ``cash.transferred_out`` / ``cash.transferred_in``: ``transfer_id``, ``to`` / ``from``
  {kind, id}, ``amounts`` {cur: n}, ``bag``, ``seal``, ``of_transfer``, ``note``
- ``cash.reconciliation``: ``transfer_id``, ``status``, ``counterpart``, ``by``, ``reason``

Formulas:

- expected = starting float + cash sales (tendered − change) − cash refunds + added − removed
  + transferred in − transferred out
- discrepancy at start = starting float − previous session's amount left (none for the first)
- discrepancy at close = counted − expected
- cash removed at close = counted − amount left in drawer
- a payment type's balance = opening + payments + deposits − withdrawals (cash: the expected
  cash); grand totals (sales, returns, net) never reset and leave training sessions out
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from .denominations import Count, add_counts, count_total, counts_from_json, counts_to_json
from .money import Totals, add_totals, sub_totals

CASH = "cash"


class LedgerError(ValueError):
    """An event that cannot follow the events before it (the journal is inconsistent)."""


@dataclass(frozen=True, slots=True)
class LedgerEvent:
    """What the fold needs of a journal event."""

    type: str
    session_id: str | None
    ts: str
    employee: str | None
    data: Mapping[str, Any]

    @classmethod
    def from_envelope(cls, event: Mapping[str, Any]) -> LedgerEvent:
        actor = event.get("actor") or {}
        return cls(
            type=event["type"],
            session_id=event.get("session_id"),
            ts=event["ts"],
            employee=actor.get("employee"),
            data=event.get("data") or {},
        )


@dataclass(slots=True)
class Adjustment:
    direction: str
    currency: str
    amount: int
    note: str | None
    ts: str
    employee: str | None


@dataclass(slots=True)
class CloseFigures:
    closed_at: str
    closed_by: str | None
    counted: Totals | None  # None: a system close (auto-close), nobody counted
    expected: Totals
    discrepancy: Totals | None
    left_in_drawer: Totals
    removed: Totals
    note: str | None


@dataclass(slots=True)
class Session:
    session_id: str
    number: int
    opened_at: str
    opened_by: str | None
    automatic: bool
    note: str | None
    starting_float: Totals
    expected_start: Totals | None
    cash_tendered: Totals = field(default_factory=dict)
    change_given: Totals = field(default_factory=dict)
    cash_sales_count: int = 0
    cash_refunds: Totals = field(default_factory=dict)
    cash_refunds_count: int = 0
    added: Totals = field(default_factory=dict)
    removed_by_adjustment: Totals = field(default_factory=dict)
    adjustments: list[Adjustment] = field(default_factory=list)
    payments_by_type: dict[str, Totals] = field(default_factory=dict)
    payment_counts: dict[str, int] = field(default_factory=dict)
    drawer_openings: dict[str, int] = field(default_factory=dict)
    closed: CloseFigures | None = None
    # Pieces per denomination, per currency, while every movement said which: a currency
    # drops out as soon as one movement did not (the inventory is exact or absent).
    inventory: dict[str, Count] = field(default_factory=dict)
    opening_counts: dict[str, Count] = field(default_factory=dict)
    # The last counting run of each currency in this session: device, run_id, counts, total.
    counter_runs: dict[str, dict[str, Any]] = field(default_factory=dict)
    close_data: dict[str, Any] = field(default_factory=dict)
    training: bool = False
    rounding: Totals = field(default_factory=dict)
    # Non-cash payment types' balances: carried in, deposited, withdrawn (cash: the drawer).
    balances_start: dict[str, Totals] = field(default_factory=dict)
    deposits: dict[str, Totals] = field(default_factory=dict)
    withdrawals: dict[str, Totals] = field(default_factory=dict)
    recount_attempts: int = 0  # closes refused for the difference
    corrections: list[dict[str, Any]] = field(default_factory=list)
    x_printed: int = 0
    z_number: int | None = None
    z_copies: int = 0
    # Two-sided cash movements (safe drops, floats), by transfer id, in order.
    transfers: dict[str, dict[str, Any]] = field(default_factory=dict)
    transfers_out: Totals = field(default_factory=dict)
    transfers_in: Totals = field(default_factory=dict)

    def unreconciled(self) -> list[str]:
        return [t for t, item in self.transfers.items() if item["status"] != "reconciled"]

    @property
    def is_open(self) -> bool:
        return self.closed is None

    @property
    def discrepancy_at_start(self) -> Totals:
        if self.expected_start is None:
            return {}
        return _nonzero(sub_totals(self.starting_float, self.expected_start))

    @property
    def cash_sales(self) -> Totals:
        """Net cash taken by sales: tendered − change."""
        return sub_totals(self.cash_tendered, self.change_given)

    def expected_cash(self) -> Totals:
        return add_totals(
            self.starting_float,
            self.cash_sales,
            {c: -a for c, a in self.cash_refunds.items()},
            self.added,
            {c: -a for c, a in self.removed_by_adjustment.items()},
            self.transfers_in,
            {c: -a for c, a in self.transfers_out.items()},
        )

    def total_sales(self) -> Totals:
        """Sales of every payment type, net of refunds, per currency."""
        return add_totals(*self.payments_by_type.values())

    def balances(self) -> dict[str, dict[str, Totals]]:
        """Per payment type and currency: opening, payments, deposits, withdrawals, balance."""
        types = sorted({CASH, *self.payments_by_type, *self.balances_start, *self.deposits,
                        *self.withdrawals})
        out: dict[str, dict[str, Totals]] = {}
        for kind in types:
            if kind == CASH:
                parts = {"opening": dict(self.starting_float), "payments": self.cash_sales_net(),
                         "deposits": add_totals(self.added, self.transfers_in),
                         "withdrawals": add_totals(self.removed_by_adjustment,
                                                   self.transfers_out)}
            else:
                parts = {"opening": dict(self.balances_start.get(kind, {})),
                         "payments": dict(self.payments_by_type.get(kind, {})),
                         "deposits": dict(self.deposits.get(kind, {})),
                         "withdrawals": dict(self.withdrawals.get(kind, {}))}
            parts["balance"] = add_totals(parts["opening"], parts["payments"], parts["deposits"],
                                          {c: -a for c, a in parts["withdrawals"].items()})
            out[kind] = parts
        return out

    def cash_sales_net(self) -> Totals:
        """What cash payments did to the drawer: sales (tendered − change) − refunds."""
        return add_totals(self.cash_sales, {c: -a for c, a in self.cash_refunds.items()})

    def currencies(self) -> set[str]:
        """Every currency this session has touched (its close must count each)."""
        found = set(self.expected_cash())
        for totals in self.payments_by_type.values():
            found |= set(totals)
        return found

    def summary(self) -> dict[str, Any]:
        """The session's figures as JSON (command results, ``state``, reports)."""
        out: dict[str, Any] = {
            "session_id": self.session_id,
            "number": self.number,
            "status": "open" if self.is_open else "closed",
            "opened_at": self.opened_at,
            "opened_by": self.opened_by,
            "automatic": self.automatic,
            "note": self.note,
            "starting_float": dict(self.starting_float),
            "expected_start": None if self.expected_start is None else dict(self.expected_start),
            "discrepancy_at_start": self.discrepancy_at_start,
            "cash_sales": self.cash_sales,
            "cash_sales_count": self.cash_sales_count,
            "cash_refunds": dict(self.cash_refunds),
            "cash_refunds_count": self.cash_refunds_count,
            "adjustments_added": dict(self.added),
            "adjustments_removed": dict(self.removed_by_adjustment),
            "adjustments": [
                {"direction": a.direction, "amount": {"amount": a.amount, "currency": a.currency},
                 "note": a.note, "ts": a.ts, "employee": a.employee}
                for a in self.adjustments
            ],
            "payments_by_type": {t: dict(v) for t, v in self.payments_by_type.items()},
            "payment_counts": dict(self.payment_counts),
            "total_sales": self.total_sales(),
            "drawer_openings": dict(self.drawer_openings),
            "expected_cash": self.expected_cash(),
            "opening_counts": {c: counts_to_json(n) for c, n in self.opening_counts.items()},
            "inventory": {c: counts_to_json(n) for c, n in self.inventory.items()},
            "counter_runs": {c: {**run, "counts": counts_to_json(run["counts"])}
                             for c, run in self.counter_runs.items()},
            "training": self.training,
            "rounding": dict(self.rounding),
            "no_sale_openings": self.drawer_openings.get("no_sale", 0),
            "balances": self.balances(),
            "recount_attempts": self.recount_attempts,
            "transfers": [dict(item) for item in self.transfers.values()],
            "transfers_out": dict(self.transfers_out),
            "transfers_in": dict(self.transfers_in),
            "reports": {"x_printed": self.x_printed, "z_number": self.z_number,
                        "z_copies": self.z_copies},
        }
        if self.closed is not None:
            c = self.closed
            out.update(closed_at=c.closed_at, closed_by=c.closed_by, counted=c.counted,
                       expected=c.expected, discrepancy=c.discrepancy,
                       left_in_drawer=c.left_in_drawer, removed=c.removed, close_note=c.note,
                       system_close=bool(self.close_data.get("system")),
                       approval=self.close_data.get("approval"),
                       recounts=int(self.close_data.get("recounts", 0)),
                       corrections=list(self.corrections))
            for key in ("counted_by", "counts", "left_counts", "counter_counted",
                        "person_minus_counter", "reason", "due_at", "business_date"):
                if key in self.close_data:
                    out[key] = self.close_data[key]
        return out


#: What a blind count hides from the people at the till while the session is open.
BLIND_KEYS = ("expected_cash", "inventory")


def blind(summary: dict[str, Any]) -> dict[str, Any]:
    """An open session's summary without the expected cash (count rules: blind close)."""
    if summary.get("status") != "open":
        return summary
    out = {k: v for k, v in summary.items() if k not in BLIND_KEYS}
    balances = {kind: dict(parts) for kind, parts in (summary.get("balances") or {}).items()}
    if CASH in balances:
        balances[CASH].pop("balance", None)
    out["balances"] = balances
    out["blind"] = True
    return out


@dataclass(slots=True)
class LedgerState:
    """A register's sessions as far as the events folded so far tell."""

    open_session: Session | None = None
    last_closed: Session | None = None
    sessions_opened: int = 0
    # The previous session's amount left in drawer; None before the register's first close.
    last_left: Totals | None = None
    last_left_counts: dict[str, Count] = field(default_factory=dict)
    # Counting runs while no session is open (counting the float before opening).
    counter_runs: dict[str, dict[str, Any]] = field(default_factory=dict)
    # Perpetual: never reset by a close (the Swedish Z report's grand totals); no training.
    grand_totals: dict[str, Totals] = field(
        default_factory=lambda: {"sales": {}, "returns": {}, "net": {}})
    z_count: int = 0  # the last Z report's number
    # Non-cash payment types' balances at the last close: the next session opens with them.
    last_balances: dict[str, Totals] = field(default_factory=dict)
    transfers_made: int = 0  # numbers this register's transfer ids

    def next_expected_start(self) -> Totals | None:
        return None if self.last_left is None else dict(self.last_left)


def apply(state: LedgerState, event: LedgerEvent) -> None:
    """Fold one event into ``state`` (in place). Events of other types are ignored."""
    handler = _HANDLERS.get(event.type)
    if handler is not None:
        handler(state, event)


def fold(events: Iterable[LedgerEvent], state: LedgerState | None = None) -> LedgerState:
    state = state or LedgerState()
    for event in events:
        apply(state, event)
    return state


def close_figures(
    session: Session, counted: Mapping[str, int], left_in_drawer: Mapping[str, int]
) -> dict[str, Totals]:
    """Expected, discrepancy and removed for a close with these counts (every currency the
    session touched or that was counted appears, zeros included)."""
    expected = session.expected_cash()
    currencies = sorted(set(expected) | set(counted) | set(left_in_drawer))
    return {
        "counted": {c: counted.get(c, 0) for c in currencies},
        "expected": {c: expected.get(c, 0) for c in currencies},
        "discrepancy": {c: counted.get(c, 0) - expected.get(c, 0) for c in currencies},
        "left_in_drawer": {c: left_in_drawer.get(c, 0) for c in currencies},
        "removed": {c: counted.get(c, 0) - left_in_drawer.get(c, 0) for c in currencies},
    }


def _nonzero(totals: Totals) -> Totals:
    return {c: a for c, a in totals.items() if a != 0}


def _money(value: Mapping[str, Any]) -> tuple[str, int]:
    return value["currency"], int(value["amount"])


def _require_open(state: LedgerState, event: LedgerEvent) -> Session:
    session = state.open_session
    if session is None:
        raise LedgerError(f"{event.type} at {event.ts} with no open session")
    if event.session_id is not None and event.session_id != session.session_id:
        raise LedgerError(
            f"{event.type} for session {event.session_id}, but {session.session_id} is open"
        )
    return session


def _opened(state: LedgerState, event: LedgerEvent) -> None:
    if state.open_session is not None:
        raise LedgerError(f"session opened at {event.ts} while another is open")
    if event.session_id is None:
        raise LedgerError("session.opened without session_id")
    data = event.data
    expected_start = data.get("expected_start")
    state.sessions_opened += 1
    state.counter_runs = {}  # a float counted before opening belongs to this opening
    state.open_session = Session(
        session_id=event.session_id,
        number=int(data.get("number", state.sessions_opened)),
        opened_at=event.ts,
        opened_by=event.employee,
        automatic=bool(data.get("automatic", False)),
        note=data.get("note"),
        starting_float=dict(data["starting_float"]),
        expected_start=None if expected_start is None else dict(expected_start),
        training=bool(data.get("training", False)),
        balances_start={k: dict(v) for k, v in (data.get("balances_start") or {}).items()},
    )
    counts = {c: counts_from_json(n) for c, n in (data.get("counts") or {}).items()}
    state.open_session.opening_counts = counts
    state.open_session.inventory = {c: dict(n) for c, n in counts.items()}


def _payment(state: LedgerState, event: LedgerEvent) -> None:
    session = _require_open(state, event)
    data = event.data
    kind = data["kind"]
    currency, amount = _money(data["amount"])
    _follow_inventory(session, currency, data)
    if kind == "cash_sale":
        t_cur, tendered = _money(data["tendered"])
        c_cur, change = _money(data["change"])
        session.cash_tendered[t_cur] = session.cash_tendered.get(t_cur, 0) + tendered
        session.change_given[c_cur] = session.change_given.get(c_cur, 0) + change
        session.cash_sales_count += 1
        _count_payment(session, CASH, currency, amount)
        _grand(state, session, "sales", currency, amount)
    elif kind == "cash_refund":
        session.cash_refunds[currency] = session.cash_refunds.get(currency, 0) + amount
        session.cash_refunds_count += 1
        _count_payment(session, CASH, currency, -amount)
        _grand(state, session, "returns", currency, amount)
    elif kind == "other":
        _count_payment(session, str(data["payment_type"]), currency, amount)
        _grand(state, session, "sales", currency, amount)
    else:
        raise LedgerError(f"unknown payment kind {kind!r}")
    if data.get("rounding"):
        r_cur, rounding = _money(data["rounding"])
        session.rounding[r_cur] = session.rounding.get(r_cur, 0) + rounding


def _grand(state: LedgerState, session: Session, part: str, currency: str,
           amount: int) -> None:
    if session.training:
        return  # training is journaled and published, never totalled
    totals = state.grand_totals
    totals[part][currency] = totals[part].get(currency, 0) + amount
    sign = 1 if part == "sales" else -1
    totals["net"][currency] = totals["net"].get(currency, 0) + sign * amount


def _follow_inventory(session: Session, currency: str, data: Mapping[str, Any]) -> None:
    if data.get("exchange_rate"):  # foreign cash in, base change out: pieces not followed
        session.inventory.pop(currency, None)
        session.inventory.pop(data["tendered"]["currency"], None)
        return
    if data["kind"] == "other" or currency not in session.inventory:
        return
    if data["kind"] == "cash_sale":
        given_in, given_out = data.get("tendered_counts"), data.get("change_counts")
        if given_out is None and int(data["change"]["amount"]) == 0:
            given_out = {}
    else:
        given_in, given_out = {}, data.get("change_counts")
    if given_in is None or given_out is None:
        del session.inventory[currency]  # a movement without pieces: no longer exact
        return
    session.inventory[currency] = add_counts(
        session.inventory[currency], counts_from_json(given_in),
        {v: -p for v, p in counts_from_json(given_out).items()})


def _count_payment(session: Session, payment_type: str, currency: str, amount: int) -> None:
    totals = session.payments_by_type.setdefault(payment_type, {})
    totals[currency] = totals.get(currency, 0) + amount
    session.payment_counts[payment_type] = session.payment_counts.get(payment_type, 0) + 1


def _adjusted(state: LedgerState, event: LedgerEvent) -> None:
    session = _require_open(state, event)
    direction = event.data["direction"]
    currency, amount = _money(event.data["amount"])
    kind = event.data.get("payment_type") or CASH
    if kind != CASH:  # a deposit to or withdrawal from a non-cash balance: no drawer effect
        if direction not in ("add", "remove"):
            raise LedgerError(f"unknown adjustment direction {direction!r}")
        book = session.deposits if direction == "add" else session.withdrawals
        totals = book.setdefault(kind, {})
        totals[currency] = totals.get(currency, 0) + amount
        return
    if direction == "add":
        session.added[currency] = session.added.get(currency, 0) + amount
    elif direction == "remove":
        session.removed_by_adjustment[currency] = (
            session.removed_by_adjustment.get(currency, 0) + amount
        )
    else:
        raise LedgerError(f"unknown adjustment direction {direction!r}")
    session.adjustments.append(
        Adjustment(direction, currency, amount, event.data.get("note"), event.ts, event.employee)
    )
    session.inventory.pop(currency, None)  # adjustments say no pieces


def _drawer_opened(state: LedgerState, event: LedgerEvent) -> None:
    session = state.open_session
    if session is not None:  # drawer openings between sessions are audited, not summed
        cause = str(event.data.get("cause", "unknown"))
        session.drawer_openings[cause] = session.drawer_openings.get(cause, 0) + 1


def _closed(state: LedgerState, event: LedgerEvent) -> None:
    session = _require_open(state, event)
    counted = event.data["counted"]
    figures = close_figures(session, counted or {}, event.data["left_in_drawer"])
    session.closed = CloseFigures(
        closed_at=event.ts, closed_by=event.employee, note=event.data.get("note"), **figures
    )
    if counted is None:  # a system close: nobody counted; the expected amount carries on
        session.closed.counted = session.closed.discrepancy = None
        session.closed.removed = {c: 0 for c in figures["removed"]}
    session.close_data = {k: v for k, v in event.data.items()
                          if k in ("counted_by", "counts", "left_counts", "counter_counted",
                                   "person_minus_counter", "system", "reason", "due_at",
                                   "business_date", "approval", "recounts")}
    state.last_balances = {kind: parts["balance"] for kind, parts in session.balances().items()
                           if kind != CASH and any(parts["balance"].values())}
    state.open_session = None
    state.last_closed = session
    state.last_left = dict(figures["left_in_drawer"])
    state.last_left_counts = {c: counts_from_json(n)
                              for c, n in (event.data.get("left_counts") or {}).items()}


def _counter_counted(state: LedgerState, event: LedgerEvent) -> None:
    session = state.open_session
    runs = session.counter_runs if session is not None else state.counter_runs
    for currency, counts in (event.data.get("counts") or {}).items():
        parsed = counts_from_json(counts)
        runs[currency] = {
            "device": event.data.get("device"), "run_id": event.data.get("run_id"),
            "counts": parsed, "total": count_total(parsed)}


def _rejected(state: LedgerState, event: LedgerEvent) -> None:
    session = state.open_session
    if (session is not None and event.data.get("command") == "session.close"
            and event.data.get("code") == "recount_required"):
        session.recount_attempts += 1


def _corrected(state: LedgerState, event: LedgerEvent) -> None:
    session = state.last_closed
    if session is None or session.closed is None or session.session_id != event.session_id:
        raise LedgerError(f"session.corrected at {event.ts} for {event.session_id}, which is "
                          "not the last closed session")
    closed = session.closed
    counted = {c: int(a) for c, a in event.data["counted"].items()}
    figures = close_figures(session, counted, closed.left_in_drawer)
    session.corrections.append({
        "ts": event.ts, "employee": event.employee, "approval": event.data.get("approval"),
        "counted_before": closed.counted, "counted": figures["counted"]})
    closed.counted = figures["counted"]
    closed.discrepancy = {c: figures["counted"][c] - closed.expected.get(c, 0)
                          for c in figures["counted"]}
    closed.removed = {c: figures["counted"][c] - closed.left_in_drawer.get(c, 0)
                      for c in figures["counted"]}


def _report(state: LedgerState, event: LedgerEvent) -> None:
    session = state.open_session
    if session is None or session.session_id != event.session_id:
        session = state.last_closed
    if session is None or session.session_id != event.session_id:
        return  # a report of an older session: counted in that session's own history
    if event.data.get("kind") == "x":
        session.x_printed += 1
    elif event.data.get("copy"):
        session.z_copies += 1
    else:
        number = event.data.get("number")
        if number is not None:
            if number != state.z_count + 1:
                raise LedgerError(f"Z report {number} after Z {state.z_count}: not in sequence")
            state.z_count = number
        session.z_number = number


def _transferred(state: LedgerState, event: LedgerEvent) -> None:
    session = _require_open(state, event)
    data = event.data
    outgoing = event.type == "cash.transferred_out"
    amounts = {c: int(a) for c, a in data["amounts"].items()}
    book = session.transfers_out if outgoing else session.transfers_in
    for currency, amount in amounts.items():
        book[currency] = book.get(currency, 0) + amount
        session.inventory.pop(currency, None)  # a transfer says no pieces
    state.transfers_made += 1
    session.transfers[str(data["transfer_id"])] = {
        "transfer_id": data["transfer_id"], "direction": "out" if outgoing else "in",
        "party": data["to"] if outgoing else data["from"], "amounts": amounts,
        "bag": data.get("bag"), "seal": data.get("seal"), "note": data.get("note"),
        "of_transfer": data.get("of_transfer"), "ts": event.ts, "employee": event.employee,
        "status": "unreconciled", "counterpart": None, "by": None, "reason": None}


def _reconciliation(state: LedgerState, event: LedgerEvent) -> None:
    transfer_id = str(event.data["transfer_id"])
    for session in (state.open_session, state.last_closed):
        if session is not None and transfer_id in session.transfers:
            session.transfers[transfer_id].update(
                status=event.data["status"], counterpart=event.data.get("counterpart"),
                by=event.data.get("by"), reason=event.data.get("reason"))
            return


_HANDLERS = {
    "session.opened": _opened,
    "payment.recorded": _payment,
    "session.adjusted": _adjusted,
    "drawer.opened": _drawer_opened,
    "session.closed": _closed,
    "counter.counted": _counter_counted,
    "cmd.rejected": _rejected,
    "session.corrected": _corrected,
    "report.issued": _report,
    "cash.transferred_out": _transferred,
    "cash.transferred_in": _transferred,
    "cash.reconciliation": _reconciliation,
}
