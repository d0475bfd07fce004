"""Session commands decided against the ledger: refuse with a code, or say which events follow.

Pure like the fold: the caller passes the state, the money policy and fresh ids, and journals
the returned events; folding them then gives the new state. Nothing here changes ``state``.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

from ..contract.commands import (
    Approval,
    CashCount,
    CashReconciliationParams,
    CashTransferInParams,
    CashTransferOutParams,
    MoneyIn,
    PaymentKind,
    PaymentRecordParams,
    SessionAdjustParams,
    SessionCloseParams,
    SessionCorrectParams,
    SessionOpenParams,
)
from ..contract.errors import CommandRefused, ErrorCode
from .cash_rounding import CashRounding
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
from .exchange import RateError, convert, parse_rate
from .money import format_money, is_iso_currency
from .session import CASH, LedgerState, Session, close_figures


@dataclass(frozen=True, slots=True)
class MoneyPolicy:
    base_currency: str
    accepted: frozenset[str]
    max_amount: int  # per single amount, in minor units of any currency
    denominations: Mapping[str, tuple[Denomination, ...]] = field(
        default_factory=lambda: dict(DEFAULT_DENOMINATIONS))
    low_change_pieces: int = 5  # warn when a denomination given as change falls below this
    rounding: Mapping[str, CashRounding] = field(default_factory=dict)  # cash totals only
    exchange_rates: Mapping[str, Decimal] = field(default_factory=dict)  # base per 1 foreign

    def denominations_of(self, currency: str) -> tuple[Denomination, ...]:
        return tuple(self.denominations.get(currency, ()))


@dataclass(frozen=True, slots=True)
class CountPolicy:
    """Count rules enforced here, not on the POS screen (session.count_rules)."""

    blind: bool = False
    max_difference: Mapping[str, int] = field(default_factory=dict)
    max_recounts: int = 2
    managers: frozenset[str] = frozenset()  # empty: the role the command claims is taken
    allow_unreconciled_close: bool = False  # the store lets a session close with open transfers


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
                automatic: bool, note: str | None, cash: Cash | None = None,
                training: bool = False) -> PlannedEvent:
    data: dict[str, Any] = {
        "number": state.sessions_opened + 1,
        "automatic": automatic,
        "starting_float": starting_float,
        "expected_start": state.next_expected_start(),
        "note": note,
        "training": training,
    }
    if state.last_balances:  # card terminals, gift cards …: their balances carry on
        data["balances_start"] = copy.deepcopy(state.last_balances)
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
    return [_open_event(state, new_session_id, cash.totals, False, params.note, cash,
                        params.training)]


def _session_or_refuse(state: LedgerState, what: str) -> Session:
    if state.open_session is None:
        raise CommandRefused(
            ErrorCode.SESSION_NOT_OPEN,
            f"no cash session is open on this register, so it cannot {what}; "
            "send session.open first",
        )
    return state.open_session


def _refuse_below_zero(session: Session, money: MoneyIn, field: str, what: str,
                       blind: bool = False) -> None:
    in_drawer = session.expected_cash().get(money.currency, 0)
    if money.amount > in_drawer:
        if blind:  # a blind count: the refusal must not tell what the drawer should hold
            raise CommandRefused(
                ErrorCode.AMOUNT_OUT_OF_RANGE,
                f"{field}: cannot {what} {format_money(money.amount, money.currency)}: that is "
                "more than the drawer is expected to hold", {"field": field})
        raise CommandRefused(
            ErrorCode.AMOUNT_OUT_OF_RANGE,
            f"{field}: cannot {what} {format_money(money.amount, money.currency)}: the drawer is "
            f"expected to hold only {format_money(in_drawer, money.currency)}",
            {"field": field, "amount": money.amount, "expected_cash": in_drawer},
        )


def plan_payment(state: LedgerState, policy: MoneyPolicy, params: PaymentRecordParams,
                 new_session_id: str, blind: bool = False) -> list[PlannedEvent]:
    data: dict[str, Any] = {"kind": params.kind.value, "reference": params.reference}
    if params.kind is PaymentKind.CASH_SALE:
        data.update(_cash_sale(policy, params))
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
            data["amount"] = _money_json(params.amount)
        else:
            data["payment_type"] = "cash"
            data.update(_cash_refund(policy, params.amount))

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
    if params.kind is PaymentKind.CASH_REFUND:
        paid = data["amount"]
        _refuse_below_zero(session, MoneyIn(amount=paid["amount"], currency=paid["currency"]),
                           "amount", "refund", blind)
    if params.kind is not PaymentKind.OTHER:
        data.update(_pieces(policy, session, params, data))
    events.append(PlannedEvent("payment.recorded", session.session_id, data))
    return events


def _rounded(policy: MoneyPolicy, amount: int, currency: str) -> int:
    rule = policy.rounding.get(currency)
    return rule.round(amount) if rule is not None else amount


def _refuse_unpayable(policy: MoneyPolicy, amount: int, currency: str, field: str) -> None:
    """Cash the coins cannot pay (149.50 kr where only whole kronor exist) is refused."""
    rule = policy.rounding.get(currency)
    if rule is not None and amount % rule.increment:
        raise CommandRefused(
            ErrorCode.AMOUNT_OUT_OF_RANGE,
            f"{field}: {format_money(amount, currency)} cannot be paid in cash: cash in "
            f"{currency} is rounded to {format_money(rule.increment, currency)}",
            {"field": field, "amount": amount, "increment": rule.increment})


def _cash_sale(policy: MoneyPolicy, params: PaymentRecordParams) -> dict[str, Any]:
    """Tendered, change and the cash taken (``amount``); with a sale total in ``amount``, the
    cash rounding; with foreign cash tendered, the exchange rate and its base value."""
    if params.tendered is None:
        raise CommandRefused(ErrorCode.INVALID_PAYLOAD,
                             "params.tendered: a cash sale needs the amount tendered",
                             {"field": "tendered"})
    tendered = params.tendered
    check_money(policy, tendered, "tendered")
    sale = params.amount
    if sale is not None:
        check_money(policy, sale, "amount")
    currency = sale.currency if sale is not None else (
        params.change.currency if params.change is not None else tendered.currency)
    change = params.change or MoneyIn(amount=0, currency=currency)
    check_money(policy, change, "change")
    if change.currency != currency:
        raise CommandRefused(
            ErrorCode.CURRENCY_NOT_ACCEPTED,
            f"change: given in {change.currency} for a sale in {currency}: change is given in "
            "the currency of the sale", {"field": "change"})
    out: dict[str, Any] = {"payment_type": CASH, "tendered": _money_json(tendered),
                           "change": _money_json(change)}
    value = tendered.amount
    if tendered.currency != currency:  # foreign cash: valued at a rate, change in the base
        if currency != policy.base_currency:
            raise CommandRefused(
                ErrorCode.CURRENCY_NOT_ACCEPTED,
                f"tendered: {tendered.currency} for a sale in {currency}: foreign cash is taken "
                f"for sales in the base currency ({policy.base_currency}) only",
                {"field": "tendered"})
        rate = _rate(policy, params.exchange_rate, tendered.currency)
        value = convert(tendered.amount, tendered.currency, rate, currency)
        out["exchange_rate"] = {"currency": tendered.currency, "base": currency,
                                "rate": str(rate)}
        out["tendered_value"] = {"amount": value, "currency": currency}
    if change.amount > value:
        raise CommandRefused(
            ErrorCode.AMOUNT_OUT_OF_RANGE,
            f"change: {format_money(change.amount, currency)} is more than the "
            f"{format_money(value, currency)} tendered",
            {"field": "change", "change": change.amount, "tendered": value})
    _refuse_unpayable(policy, change.amount, currency, "change")
    taken = value - change.amount
    if sale is not None:
        due = _rounded(policy, sale.amount, currency)
        # Foreign cash: the change is what the base currency's coins can pay of value − due.
        expected = (due if tendered.currency == currency
                    else value - _rounded(policy, value - due, currency))
        if taken != expected:
            rounding = (f" ({format_money(sale.amount, currency)} rounded for cash)"
                        if due != sale.amount else "")
            raise CommandRefused(
                ErrorCode.AMOUNT_OUT_OF_RANGE,
                f"change: tendered − change is {format_money(taken, currency)}, but the sale "
                f"takes {format_money(expected, currency)} in cash{rounding}: change should be "
                f"{format_money(value - expected, currency)}",
                {"field": "change", "expected_change": value - expected, "due": due})
        out["sale_amount"] = _money_json(sale)
        if taken != sale.amount:
            out["rounding"] = {"amount": taken - sale.amount, "currency": currency}
    elif tendered.currency == currency:
        _refuse_unpayable(policy, taken, currency, "tendered − change")
    out["amount"] = {"amount": taken, "currency": currency}
    return out


def _cash_refund(policy: MoneyPolicy, amount: MoneyIn) -> dict[str, Any]:
    paid = _rounded(policy, amount.amount, amount.currency)
    out: dict[str, Any] = {"amount": {"amount": paid, "currency": amount.currency}}
    if paid != amount.amount:
        out["sale_amount"] = _money_json(amount)
        # Its effect on the drawer against the exact amount: paying out more is negative.
        out["rounding"] = {"amount": amount.amount - paid, "currency": amount.currency}
    return out


def _rate(policy: MoneyPolicy, given: str | None, currency: str) -> Decimal:
    if given is not None:
        try:
            return parse_rate(given)
        except RateError as e:
            raise CommandRefused(ErrorCode.INVALID_PAYLOAD, f"exchange_rate: {e}",
                                 {"field": "exchange_rate"}) from e
    rate = policy.exchange_rates.get(currency)
    if rate is None:
        raise CommandRefused(
            ErrorCode.INVALID_PAYLOAD,
            f"exchange_rate: no rate for {currency} is configured (money.exchange_rates); "
            "give the rate the cash was taken at", {"field": "exchange_rate"})
    return rate


def _pieces(policy: MoneyPolicy, session: Session, params: PaymentRecordParams,
            data: dict[str, Any]) -> dict[str, Any]:
    """Tendered and change by denomination: checked against the amounts and the drawer's
    inventory; denominations given as change that run low are reported."""
    if params.tendered_counts is None and params.change_counts is None:
        return {}
    if "exchange_rate" in data:
        raise CommandRefused(ErrorCode.INVALID_PAYLOAD,
                             "tendered_counts, change_counts: not taken with foreign cash "
                             "(give the amounts only)", {"field": "tendered_counts"})
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
                params: SessionAdjustParams, blind: bool = False) -> list[PlannedEvent]:
    session = _session_or_refuse(state, "adjust the cash")
    check_money(policy, params.amount, "amount")
    kind = params.payment_type or CASH
    if params.direction.value == "remove" and kind == CASH:
        _refuse_below_zero(session, params.amount, "amount", "remove", blind)
    data: dict[str, Any] = {"direction": params.direction.value,
                            "amount": _money_json(params.amount), "note": params.note}
    if kind != CASH:
        data["payment_type"] = kind
    return [PlannedEvent("session.adjusted", session.session_id, data)]


def _approval(count: CountPolicy, approval: Approval) -> dict[str, Any]:
    if count.managers and approval.employee not in count.managers:
        raise CommandRefused(
            ErrorCode.NOT_PERMITTED,
            f"approval.employee: {approval.employee} does not have the manager role on this "
            "register (session.count_rules.managers, [roles] manager)",
            {"field": "approval.employee"})
    return approval.model_dump()


def _z_report(state: LedgerState, session: Session) -> PlannedEvent:
    """The Z report of a session being closed: the next number, never one for training."""
    number = None if session.training else state.z_count + 1
    return PlannedEvent("report.issued", session.session_id, {
        "kind": "z", "number": number, "copy": False, "copy_number": 0,
        "training": session.training, "grand_totals": copy.deepcopy(state.grand_totals)})


def plan_close(state: LedgerState, policy: MoneyPolicy, params: SessionCloseParams,
               count: CountPolicy | None = None) -> list[PlannedEvent]:
    count = count or CountPolicy()
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
    open_transfers = session.unreconciled()
    if open_transfers and not count.allow_unreconciled_close:
        raise CommandRefused(
            ErrorCode.UNRECONCILED_TRANSFERS,
            f"{len(open_transfers)} cash transfer(s) of this session are not reconciled "
            f"({', '.join(open_transfers)}): reconcile them in the store view first",
            {"transfers": open_transfers})
    figures = close_figures(session, counted, left)
    _check_difference(session, count, figures, params.approval is not None)
    data: dict[str, Any] = {**figures, "note": params.note, "counted_by": cash.sources,
                            "recounts": session.recount_attempts}
    if params.approval is not None:
        data["approval"] = _approval(count, params.approval)
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
    return [PlannedEvent("session.closed", session.session_id, data), _z_report(state, session)]


def _check_difference(session: Session, count: CountPolicy, figures: Mapping[str, Any],
                      approved: bool) -> None:
    """A count off by more than the limit: count again (up to max_recounts), then only a
    manager's approval with a reason closes. Blind: the refusal says no figure."""
    over = sorted(c for c, d in figures["discrepancy"].items()
                  if c in count.max_difference and abs(d) > count.max_difference[c])
    if not over or approved:
        return
    details: dict[str, Any] = {"currencies": over,
                               "recounts_left": max(0, count.max_recounts
                                                    - session.recount_attempts - 1)}
    limits = ", ".join(format_money(count.max_difference[c], c) for c in over)
    if not count.blind:
        details["discrepancy"] = {c: figures["discrepancy"][c] for c in over}
    if session.recount_attempts < count.max_recounts:
        raise CommandRefused(
            ErrorCode.RECOUNT_REQUIRED,
            f"the count of {', '.join(over)} is off by more than {limits}: count again "
            f"(recount {session.recount_attempts + 1} of {count.max_recounts})", details)
    raise CommandRefused(
        ErrorCode.APPROVAL_REQUIRED,
        f"the count of {', '.join(over)} is still off by more than {limits} after "
        f"{count.max_recounts} recount(s): a manager must approve the close with a reason "
        "(params.approval)", details)


def plan_system_close(state: LedgerState, due_at: str,
                      business_date: str | None = None) -> list[PlannedEvent]:
    """Auto-close: the open session closes with its expected cash left in the drawer, nobody
    having counted; the next session starts from it when the register is next used."""
    session = state.open_session
    if session is None:
        return []
    expected = session.expected_cash()
    figures = close_figures(session, {}, expected)
    data: dict[str, Any] = {
        **figures, "counted": None, "discrepancy": None,
        "removed": {c: 0 for c in figures["removed"]}, "note": None, "counted_by": {},
        "system": True, "reason": "auto_close", "due_at": due_at,
        "recounts": session.recount_attempts}
    if business_date is not None:
        data["business_date"] = business_date
    return [PlannedEvent("session.closed", session.session_id, data), _z_report(state, session)]


def plan_correct(state: LedgerState, policy: MoneyPolicy, params: SessionCorrectParams,
                 count: CountPolicy | None = None) -> list[PlannedEvent]:
    """A closed session's count corrected by an approved event; the close stays as it was."""
    count = count or CountPolicy()
    session = state.last_closed
    if session is None or session.closed is None or session.session_id != params.session_id:
        raise CommandRefused(
            ErrorCode.INVALID_PAYLOAD,
            f"params.session_id: {params.session_id} is not the last closed session of this "
            "register; only that one can be corrected", {"field": "session_id"})
    cash = resolve_cash(policy, params.counted, "counted")
    before = session.closed.counted
    data: dict[str, Any] = {"counted": cash.totals, "counted_before": before,
                            "approval": _approval(count, params.approval)}
    if cash.counts:
        data["counts"] = cash.counts_json()
    return [PlannedEvent("session.corrected", session.session_id, data)]


def _transfer_id(state: LedgerState, register: str) -> str:
    return f"{register}-T{state.transfers_made + 1}"


def plan_transfer_out(state: LedgerState, policy: MoneyPolicy, params: CashTransferOutParams,
                      register: str, blind: bool = False) -> list[PlannedEvent]:
    """A tender removal / safe drop: two-sided, reconciled when the receiver records it."""
    session = _session_or_refuse(state, "transfer cash out")
    if params.to.kind == "register" and params.to.id == register:
        raise CommandRefused(ErrorCode.INVALID_PAYLOAD,
                             "params.to: a register cannot transfer cash to itself",
                             {"field": "to"})
    for i, money in enumerate(params.amount):
        check_money(policy, money, f"amount[{i}]")
        _refuse_below_zero(session, money, f"amount[{i}]", "transfer out", blind)
    return [PlannedEvent("cash.transferred_out", session.session_id, {
        "transfer_id": _transfer_id(state, register), "to": params.to.model_dump(),
        "amounts": _as_totals(params.amount), "bag": params.bag, "seal": params.seal,
        "note": params.note})]


def plan_transfer_in(state: LedgerState, policy: MoneyPolicy, params: CashTransferInParams,
                     register: str) -> list[PlannedEvent]:
    """A float entry / receipt, naming the sender's transfer when it is known."""
    session = _session_or_refuse(state, "take cash in")
    if params.from_.kind == "register" and params.from_.id == register:
        raise CommandRefused(ErrorCode.INVALID_PAYLOAD,
                             "params.from: a register cannot transfer cash to itself",
                             {"field": "from"})
    for i, money in enumerate(params.amount):
        check_money(policy, money, f"amount[{i}]")
    return [PlannedEvent("cash.transferred_in", session.session_id, {
        "transfer_id": _transfer_id(state, register), "from": params.from_.model_dump(),
        "amounts": _as_totals(params.amount), "of_transfer": params.of_transfer,
        "note": params.note})]


def plan_reconciliation(state: LedgerState,
                        params: CashReconciliationParams) -> list[PlannedEvent]:
    """The store aggregator's word on one of this register's transfers, recorded."""
    for session in (state.open_session, state.last_closed):
        if session is not None and params.transfer_id in session.transfers:
            if session.closed is not None:
                raise CommandRefused(
                    ErrorCode.SESSION_NOT_OPEN,
                    f"transfer {params.transfer_id} belongs to session {session.number}, "
                    "which has closed: its reconciliation can no longer change",
                    {"transfer_id": params.transfer_id})
            return [PlannedEvent("cash.reconciliation", session.session_id,
                                 params.model_dump())]
    raise CommandRefused(ErrorCode.INVALID_PAYLOAD,
                         f"params.transfer_id: no transfer {params.transfer_id} in this "
                         "register's open session", {"field": "transfer_id"})
