"""Session commands decided against the ledger: refuse with a code, or say which events follow.

Pure like the fold: the caller passes the state, the money policy and fresh ids, and journals
the returned events; folding them then gives the new state. Nothing here changes ``state``.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from ..contract.commands import (
    CashCount,
    MoneyIn,
    PaymentKind,
    PaymentRecordParams,
    SessionAdjustParams,
    SessionCloseParams,
    SessionOpenParams,
)
from ..contract.errors import CommandRefused, ErrorCode
from .denominations import (
    DEFAULT_DENOMINATIONS,
    Count,
    CountError,
    Denomination,
    check_count,
    count_total,
    counts_from_json,
    counts_to_json,
)
from .money import format_money, is_iso_currency
from .session import LedgerState, Session, close_figures


@dataclass(frozen=True, slots=True)
class MoneyPolicy:
    base_currency: str
    accepted: frozenset[str]
    max_amount: int  # per single amount, in minor units of any currency
    denominations: Mapping[str, tuple[Denomination, ...]] = field(
        default_factory=lambda: dict(DEFAULT_DENOMINATIONS))
    low_change_pieces: int = 5  # warn when a denomination given as change falls below this

    def denominations_of(self, currency: str) -> tuple[Denomination, ...]:
        return tuple(self.denominations.get(currency, ()))


@dataclass(frozen=True, slots=True)
class PlannedEvent:
    type: str
    session_id: str | None
    data: dict[str, Any]


def check_money(policy: MoneyPolicy, money: MoneyIn, field: str) -> None:
    if not is_iso_currency(money.currency):
        raise CommandRefused(
            ErrorCode.CURRENCY_NOT_ACCEPTED,
            f"{field}: {money.currency} is not an ISO 4217 currency code",
            {"field": field, "currency": money.currency},
        )
    if money.currency not in policy.accepted:
        raise CommandRefused(
            ErrorCode.CURRENCY_NOT_ACCEPTED,
            f"{field}: this register does not accept {money.currency} "
            f"(accepted: {', '.join(sorted(policy.accepted))})",
            {"field": field, "currency": money.currency, "accepted": sorted(policy.accepted)},
        )
    if money.amount > policy.max_amount:
        raise CommandRefused(
            ErrorCode.AMOUNT_OUT_OF_RANGE,
            f"{field}: {format_money(money.amount, money.currency)} is more than the register's "
            f"limit for one amount ({format_money(policy.max_amount, money.currency)})",
            {"field": field, "amount": money.amount, "max": policy.max_amount},
        )


def _as_totals(items: list[MoneyIn]) -> dict[str, int]:
    return {m.currency: m.amount for m in items}


def _checked_counts(policy: MoneyPolicy, currency: str, raw: Mapping[str, int],
                    field: str) -> Count:
    if currency in policy.accepted and not policy.denominations_of(currency):
        raise CommandRefused(ErrorCode.INVALID_PAYLOAD,
                             f"{field}: no denominations are configured for {currency}; "
                             "give an amount instead", {"field": field})
    try:
        return check_count(currency, counts_from_json(raw), policy.denominations_of(currency))
    except CountError as e:
        raise CommandRefused(ErrorCode.INVALID_PAYLOAD, f"{field}: {e}", {"field": field}) from e


@dataclass(frozen=True, slots=True)
class Cash:
    """Per-currency cash as a command gave it, resolved: totals, counts where known, and
    where each currency's figure came from (``person`` or the counter's name)."""

    totals: dict[str, int]
    counts: dict[str, Count]
    sources: dict[str, str]

    def counts_json(self) -> dict[str, dict[str, int]]:
        return {c: counts_to_json(n) for c, n in sorted(self.counts.items())}


def resolve_cash(policy: MoneyPolicy, items: list[CashCount], field: str,
                 session: Session | None = None,
                 runs: Mapping[str, Mapping[str, Any]] | None = None) -> Cash:
    """Totals from amounts, counts by denomination, or the session's last counter run."""
    totals: dict[str, int] = {}
    counts: dict[str, Count] = {}
    sources: dict[str, str] = {}
    for i, item in enumerate(items):
        where = f"{field}[{i}]"
        currency = item.currency
        if item.from_counter is not None:
            known = session.counter_runs if session is not None else (runs or {})
            run = known.get(currency)
            if run is None or run["device"] != item.from_counter:
                raise CommandRefused(
                    ErrorCode.INVALID_PAYLOAD,
                    f"{where}.from_counter: counter {item.from_counter} has counted no "
                    f"{currency} {'in this session' if session else 'since the last close'}; "
                    "run counter.count first",
                    {"field": f"{where}.from_counter"})
            counts[currency] = dict(run["counts"])
            totals[currency] = count_total(counts[currency])
            sources[currency] = item.from_counter
        else:
            if item.counts is not None:
                counts[currency] = _checked_counts(policy, currency, item.counts,
                                                   f"{where}.counts")
                total = count_total(counts[currency])
                if item.amount is not None and item.amount != total:
                    raise CommandRefused(
                        ErrorCode.AMOUNT_OUT_OF_RANGE,
                        f"{where}: amount {format_money(item.amount, currency)} is not the "
                        f"{format_money(total, currency)} the counts add up to",
                        {"field": where, "amount": item.amount, "counts_total": total})
                totals[currency] = total
            else:
                assert item.amount is not None
                totals[currency] = item.amount
            sources[currency] = "person"
        check_money(policy, MoneyIn(amount=totals[currency], currency=currency), where)
    return Cash(totals, counts, sources)


def _money_json(money: MoneyIn) -> dict[str, Any]:
    return {"amount": money.amount, "currency": money.currency}


def _open_event(state: LedgerState, session_id: str, starting_float: dict[str, int],
                automatic: bool, note: str | None, cash: Cash | None = None) -> PlannedEvent:
    data: dict[str, Any] = {
        "number": state.sessions_opened + 1,
        "automatic": automatic,
        "starting_float": starting_float,
        "expected_start": state.next_expected_start(),
        "note": note,
    }
    if cash is not None and cash.counts:
        data["counts"] = cash.counts_json()
    elif automatic and state.last_left_counts:
        # The amount left was counted by denomination: the drawer starts with those pieces.
        data["counts"] = {c: counts_to_json(n) for c, n in state.last_left_counts.items()}
    return PlannedEvent("session.opened", session_id, data)


def plan_open(state: LedgerState, policy: MoneyPolicy, params: SessionOpenParams,
              new_session_id: str) -> list[PlannedEvent]:
    if state.open_session is not None:
        s = state.open_session
        raise CommandRefused(
            ErrorCode.SESSION_ALREADY_OPEN,
            f"session {s.number} ({s.session_id}) is already open since {s.opened_at}; "
            "close it before opening another",
            {"session_id": s.session_id, "number": s.number},
        )
    cash = resolve_cash(policy, params.starting_float, "starting_float",
                        runs=state.counter_runs)
    return [_open_event(state, new_session_id, cash.totals, False, params.note, cash)]


def _session_or_refuse(state: LedgerState, what: str) -> Session:
    if state.open_session is None:
        raise CommandRefused(
            ErrorCode.SESSION_NOT_OPEN,
            f"no cash session is open on this register, so it cannot {what}; "
            "send session.open first",
        )
    return state.open_session


def _refuse_below_zero(session: Session, money: MoneyIn, field: str, what: str) -> None:
    in_drawer = session.expected_cash().get(money.currency, 0)
    if money.amount > in_drawer:
        raise CommandRefused(
            ErrorCode.AMOUNT_OUT_OF_RANGE,
            f"{field}: cannot {what} {format_money(money.amount, money.currency)}: the drawer is "
            f"expected to hold only {format_money(in_drawer, money.currency)}",
            {"field": field, "amount": money.amount, "expected_cash": in_drawer},
        )


def plan_payment(state: LedgerState, policy: MoneyPolicy, params: PaymentRecordParams,
                 new_session_id: str) -> list[PlannedEvent]:
    data: dict[str, Any] = {"kind": params.kind.value, "reference": params.reference}
    if params.kind is PaymentKind.CASH_SALE:
        if params.tendered is None:
            raise CommandRefused(ErrorCode.INVALID_PAYLOAD,
                                 "params.tendered: a cash sale needs the amount tendered",
                                 {"field": "tendered"})
        tendered = params.tendered
        change = params.change or MoneyIn(amount=0, currency=tendered.currency)
        check_money(policy, tendered, "tendered")
        check_money(policy, change, "change")
        if change.currency != tendered.currency:
            raise CommandRefused(
                ErrorCode.CURRENCY_NOT_ACCEPTED,
                f"change: given in {change.currency} for a payment tendered in "
                f"{tendered.currency}; change in another currency is not supported yet",
                {"field": "change"})
        if change.amount > tendered.amount:
            raise CommandRefused(
                ErrorCode.AMOUNT_OUT_OF_RANGE,
                f"change: {format_money(change.amount, change.currency)} is more than the "
                f"{format_money(tendered.amount, tendered.currency)} tendered",
                {"field": "change", "change": change.amount, "tendered": tendered.amount})
        net = tendered.amount - change.amount
        if params.amount is not None:
            check_money(policy, params.amount, "amount")
            if (params.amount.currency, params.amount.amount) != (tendered.currency, net):
                raise CommandRefused(
                    ErrorCode.AMOUNT_OUT_OF_RANGE,
                    f"amount: {format_money(params.amount.amount, params.amount.currency)} does "
                    f"not equal tendered − change ({format_money(net, tendered.currency)})",
                    {"field": "amount", "amount": params.amount.amount, "expected": net})
        data.update(payment_type="cash", tendered=_money_json(tendered),
                    change=_money_json(change),
                    amount={"amount": net, "currency": tendered.currency})
    else:
        if params.amount is None:
            raise CommandRefused(ErrorCode.INVALID_PAYLOAD,
                                 f"params.amount: a {params.kind.value} payment needs an amount",
                                 {"field": "amount"})
        check_money(policy, params.amount, "amount")
        if params.kind is PaymentKind.OTHER:
            if not params.payment_type or params.payment_type == "cash":
                raise CommandRefused(
                    ErrorCode.INVALID_PAYLOAD,
                    "params.payment_type: an other payment names its type (card, gift_card …), "
                    "and it is not cash", {"field": "payment_type"})
            data["payment_type"] = params.payment_type
        else:
            data["payment_type"] = "cash"
        data["amount"] = _money_json(params.amount)

    events: list[PlannedEvent] = []
    session = state.open_session
    if session is None:
        if params.kind is PaymentKind.OTHER:
            _session_or_refuse(state, "record a non-cash payment")
        # Automatic start: the previous session's amount left becomes the starting float.
        opened = _open_event(state, new_session_id, state.next_expected_start() or {}, True, None)
        events.append(opened)
        session = Session(new_session_id, 0, "", None, True, None,
                          dict(opened.data["starting_float"]), None)
        session.inventory = {c: counts_from_json(n)
                             for c, n in opened.data.get("counts", {}).items()}
    if params.kind is PaymentKind.CASH_REFUND and params.amount is not None:
        _refuse_below_zero(session, params.amount, "amount", "refund")
    if params.kind is not PaymentKind.OTHER:
        data.update(_pieces(policy, session, params, data))
    events.append(PlannedEvent("payment.recorded", session.session_id, data))
    return events


def _pieces(policy: MoneyPolicy, session: Session, params: PaymentRecordParams,
            data: dict[str, Any]) -> dict[str, Any]:
    """Tendered and change by denomination: checked against the amounts and the drawer's
    inventory; denominations given as change that run low are reported."""
    if params.tendered_counts is None and params.change_counts is None:
        return {}
    currency = str(data["amount"]["currency"])
    out: dict[str, Any] = {}
    given_in = (params.tendered_counts or {}) if params.kind is PaymentKind.CASH_SALE else {}
    tendered = _checked_counts(policy, currency, given_in, "tendered_counts")
    change = _checked_counts(policy, currency, params.change_counts or {}, "change_counts")
    expect_in = int(data["tendered"]["amount"]) if "tendered" in data else 0
    expect_out = (int(data["change"]["amount"]) if "change" in data
                  else int(data["amount"]["amount"]))
    for field_name, counts, expected in (("tendered_counts", tendered, expect_in),
                                         ("change_counts", change, expect_out)):
        if (field_name == "tendered_counts" and params.tendered_counts is None) or (
                field_name == "change_counts" and params.change_counts is None):
            continue
        if count_total(counts) != expected:
            raise CommandRefused(
                ErrorCode.AMOUNT_OUT_OF_RANGE,
                f"{field_name}: the pieces add up to "
                f"{format_money(count_total(counts), currency)}, not "
                f"{format_money(expected, currency)}", {"field": field_name})
        out[field_name] = counts_to_json(counts)
    inventory = session.inventory.get(currency)
    if inventory is None:
        return out
    after = {v: inventory.get(v, 0) + tendered.get(v, 0) - change.get(v, 0)
             for v in set(inventory) | set(tendered) | set(change)}
    short = sorted(v for v, pieces in after.items() if pieces < 0)
    if short:
        raise CommandRefused(
            ErrorCode.AMOUNT_OUT_OF_RANGE,
            f"change_counts: the drawer holds only "
            f"{', '.join(f'{inventory.get(v, 0)} × {format_money(v, currency)}' for v in short)}",
            {"field": "change_counts"})
    low = [{"currency": currency, "value": v, "pieces": after[v]} for v in sorted(change)
           if after[v] < policy.low_change_pieces]
    if low:
        out["low_change"] = low
    return out


def plan_adjust(state: LedgerState, policy: MoneyPolicy,
                params: SessionAdjustParams) -> list[PlannedEvent]:
    session = _session_or_refuse(state, "adjust the cash")
    check_money(policy, params.amount, "amount")
    if params.direction.value == "remove":
        _refuse_below_zero(session, params.amount, "amount", "remove")
    return [PlannedEvent("session.adjusted", session.session_id, {
        "direction": params.direction.value,
        "amount": _money_json(params.amount),
        "note": params.note,
    })]


def plan_close(state: LedgerState, policy: MoneyPolicy,
               params: SessionCloseParams) -> list[PlannedEvent]:
    session = _session_or_refuse(state, "close")
    cash = resolve_cash(policy, params.counted, "counted", session)
    kept = resolve_cash(policy, params.leave_in_drawer, "leave_in_drawer")
    counted, left = cash.totals, kept.totals
    missing = sorted(c for c, a in session.expected_cash().items() if a and c not in counted)
    if missing:
        raise CommandRefused(
            ErrorCode.INVALID_PAYLOAD,
            f"params.counted: the drawer holds {', '.join(missing)} that was not counted; "
            "count every currency (0 if none is there)",
            {"field": "counted", "missing": missing})
    for currency, amount in left.items():
        if amount > counted.get(currency, 0):
            raise CommandRefused(
                ErrorCode.AMOUNT_OUT_OF_RANGE,
                f"leave_in_drawer: {format_money(amount, currency)} is more than the "
                f"{format_money(counted.get(currency, 0), currency)} counted",
                {"field": "leave_in_drawer", "currency": currency, "leave": amount,
                 "counted": counted.get(currency, 0)})
    figures = close_figures(session, counted, left)
    data: dict[str, Any] = {**figures, "note": params.note, "counted_by": cash.sources}
    if cash.counts:
        data["counts"] = cash.counts_json()
    if kept.counts:
        data["left_counts"] = kept.counts_json()
    # A counter's run and a person's count of the same currency are both kept, with the
    # difference between them.
    by_counter = {c: run["total"] for c, run in session.counter_runs.items()
                  if cash.sources.get(c) == "person"}
    if by_counter:
        data["counter_counted"] = by_counter
        data["person_minus_counter"] = {c: counted.get(c, 0) - t for c, t in by_counter.items()}
    return [PlannedEvent("session.closed", session.session_id, data)]
