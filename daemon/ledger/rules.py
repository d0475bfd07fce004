"""Session commands decided against the ledger: refuse with a code, or say which events follow.

Pure like the fold: the caller passes the state, the money policy and fresh ids, and journals
the returned events; folding them then gives the new state. Nothing here changes ``state``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from ..contract.commands import (
    MoneyIn,
    PaymentKind,
    PaymentRecordParams,
    SessionAdjustParams,
    SessionCloseParams,
    SessionOpenParams,
)
from ..contract.errors import CommandRefused, ErrorCode
from .money import format_money, is_iso_currency
from .session import LedgerState, Session, close_figures


@dataclass(frozen=True, slots=True)
class MoneyPolicy:
    base_currency: str
    accepted: frozenset[str]
    max_amount: int  # per single amount, in minor units of any currency


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


def _money_json(money: MoneyIn) -> dict[str, Any]:
    return {"amount": money.amount, "currency": money.currency}


def _open_event(state: LedgerState, session_id: str, starting_float: dict[str, int],
                automatic: bool, note: str | None) -> PlannedEvent:
    return PlannedEvent("session.opened", session_id, {
        "number": state.sessions_opened + 1,
        "automatic": automatic,
        "starting_float": starting_float,
        "expected_start": state.next_expected_start(),
        "note": note,
    })


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
    for i, money in enumerate(params.starting_float):
        check_money(policy, money, f"starting_float[{i}]")
    return [_open_event(state, new_session_id, _as_totals(params.starting_float), False,
                        params.note)]


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
    if params.kind is PaymentKind.CASH_REFUND and params.amount is not None:
        _refuse_below_zero(session, params.amount, "amount", "refund")
    events.append(PlannedEvent("payment.recorded", session.session_id, data))
    return events


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
    for i, money in enumerate(params.counted):
        check_money(policy, money, f"counted[{i}]")
    for i, money in enumerate(params.leave_in_drawer):
        check_money(policy, money, f"leave_in_drawer[{i}]")
    counted = _as_totals(params.counted)
    left = _as_totals(params.leave_in_drawer)
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
    return [PlannedEvent("session.closed", session.session_id, {**figures, "note": params.note})]
