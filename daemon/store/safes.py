"""Safes and two-sided cash transfers, as the store aggregator keeps them: pure rules, no I/O.

A transfer is one side of a cash movement: a register's ``cash.transferred_out`` (a safe drop,
cash to another register) or ``cash.transferred_in`` (a float entry), or a safe's own
``receipt`` (in, from a register) or ``float_issued`` (out, to a register). An *out* and an
*in* pair up:

- automatically (by the role ``system``) when the *in* names the *out* (``of_transfer``), the
  amounts are equal and each names the other's owner as its party;
- by hand, by a manager: a pair, or one transfer with no counterpart; a reason is required
  when the pair does not balance (other amounts or parties) and always for a lone transfer;
- a reconciled pair is unreconciled by a manager with a reason, until a register session that
  holds one of its transfers has closed.

A safe's ledger is its steps: ``declare_start`` (counted start amount, once: a one-sided
transfer in from outside the store, reconciled by hand as the seed's day does), ``receipt`` (+),
``float_issued`` (−), ``bank_deposit`` (−) and ``count`` (a tender declaration: counted against
the expected amount, the difference is the discrepancy). Expected = start + receipts − floats
issued − bank deposits, per currency.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace
from typing import Any, Literal

from .storage.base import CashStep, TransferRow

Amounts = dict[str, int]
SAFE_STEPS = ("declare_start", "receipt", "float_issued", "bank_deposit", "count")
_CURRENCY = re.compile(r"^[A-Z]{3}$")


class CashRuleError(ValueError):
    """A request the rules refuse; ``status`` is the HTTP status that says why."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


def clean_amounts(amounts: Mapping[str, Any], what: str = "amounts", *,
                  allow_zero: bool = False) -> Amounts:
    """Integer minor units per ISO 4217 code; positive (or ≥ 0 for a count); not empty."""
    if not amounts:
        raise CashRuleError(422, f"{what}: at least one currency")
    out: Amounts = {}
    for currency, value in amounts.items():
        if not _CURRENCY.match(currency):
            raise CashRuleError(422, f"{what}: {currency!r} is not an ISO 4217 code")
        if isinstance(value, bool) or not isinstance(value, int):
            raise CashRuleError(422, f"{what}.{currency}: an integer of minor units")
        if value < 0 or (value == 0 and not allow_zero):
            raise CashRuleError(422, f"{what}.{currency}: must be {'≥' if allow_zero else '>'} 0")
        out[currency] = value
    return out


def add(a: Mapping[str, int], b: Mapping[str, int], sign: int = 1) -> Amounts:
    out = dict(a)
    for currency, value in b.items():
        out[currency] = out.get(currency, 0) + sign * value
    return out


def nonzero(a: Mapping[str, int]) -> Amounts:
    return {c: v for c, v in sorted(a.items()) if v}


def same_amounts(a: Mapping[str, int], b: Mapping[str, int]) -> bool:
    return nonzero(a) == nonzero(b)


# -- transfers ------------------------------------------------------------------------------------


def party_of(row: TransferRow) -> dict[str, str]:
    """How the other side names this transfer's owner."""
    return {"kind": row.side, "id": row.owner}


def balanced(out: TransferRow, into: TransferRow) -> bool:
    """Same amounts and each names the other's owner."""
    return (same_amounts(out.amounts, into.amounts) and out.party == party_of(into)
            and into.party == party_of(out))


def auto_match(new: TransferRow, known: Iterable[TransferRow]) -> TransferRow | None:
    """The transfer that ``new`` reconciles with by itself: the *in* names the *out*, both open
    and balanced. ``known``: the store's other transfers (the *out* it names, or the *ins*
    naming it)."""
    if new.status != "unreconciled":
        return None
    for other in known:
        if other.transfer_id == new.transfer_id or other.status != "unreconciled":
            continue
        out, into = (new, other) if new.direction == "out" else (other, new)
        if (out.direction == "out" and into.direction == "in"
                and into.of_transfer == out.transfer_id and balanced(out, into)):
            return other
    return None


def reconciled(row: TransferRow, counterpart: str | None, by: dict[str, Any],
               reason: str | None) -> TransferRow:
    return replace(row, status="reconciled", counterpart=counterpart, by=by, reason=reason)


def unreconciled(row: TransferRow, by: dict[str, Any], reason: str | None) -> TransferRow:
    return replace(row, status="unreconciled", counterpart=None, by=by, reason=reason)


def plan_manual_reconcile(rows: list[TransferRow], reason: str | None) -> list[TransferRow]:
    """Check a manager's reconciliation of one or two transfers (already looked up); the rows
    in the order given. Raises :class:`CashRuleError`."""
    if len(rows) not in (1, 2):
        raise CashRuleError(422, "transfers: one transfer, or a pair (an out and an in)")
    for row in rows:
        if row.status == "reconciled":
            raise CashRuleError(409, f"transfer {row.transfer_id} is already reconciled "
                                     f"(with {row.counterpart}): unreconcile it first")
    text = (reason or "").strip()
    if len(rows) == 1:
        if not text:
            raise CashRuleError(400, f"transfer {rows[0].transfer_id} alone has no "
                                     "counterpart: a reason is required")
        return rows
    a, b = rows
    if a.transfer_id == b.transfer_id:
        raise CashRuleError(422, "transfers: the same transfer twice")
    if {a.direction, b.direction} != {"out", "in"}:
        raise CashRuleError(422, f"transfers {a.transfer_id} and {b.transfer_id} are both "
                                 f"{a.direction}: a pair is an out and an in")
    out, into = (a, b) if a.direction == "out" else (b, a)
    if not balanced(out, into) and not text:
        diff = nonzero(add(into.amounts, out.amounts, -1))
        parties = out.party == party_of(into) and into.party == party_of(out)
        raise CashRuleError(400, (
            f"transfers {out.transfer_id} (out {nonzero(out.amounts)}) and {into.transfer_id} "
            f"(in {nonzero(into.amounts)}) do not balance (in − out {diff}"
            f"{'' if parties else ', and their parties differ'}): a reason is required"))
    return rows


# -- safes ----------------------------------------------------------------------------------------


@dataclass
class SafeFigures:
    safe: str
    declared: bool = False
    start: Amounts = field(default_factory=dict)
    receipts: Amounts = field(default_factory=dict)
    floats_issued: Amounts = field(default_factory=dict)
    bank_deposits: Amounts = field(default_factory=dict)
    last_count: dict[str, Any] | None = None
    steps: int = 0
    transfers_made: int = 0

    @property
    def expected(self) -> Amounts:
        total = add(add(self.start, self.receipts), self.floats_issued, -1)
        return nonzero(add(total, self.bank_deposits, -1)) or {}

    def as_dict(self) -> dict[str, Any]:
        return {"safe": self.safe, "declared": self.declared, "start": nonzero(self.start),
                "receipts": nonzero(self.receipts), "floats_issued": nonzero(self.floats_issued),
                "bank_deposits": nonzero(self.bank_deposits), "expected": self.expected,
                "last_count": self.last_count}


def fold_safe(safe: str, steps: Iterable[CashStep]) -> SafeFigures:
    """A safe's figures from its steps, oldest first."""
    figures = SafeFigures(safe)
    for step in steps:
        kind = step.kind.removeprefix("safe.")
        if step.subject != safe or kind not in SAFE_STEPS:
            continue
        figures.steps += 1
        amounts = {c: int(v) for c, v in (step.data.get("amounts") or {}).items()}
        if kind == "declare_start":
            figures.declared = True
            figures.start = amounts
            if step.data.get("transfer_id"):  # a start amount is a transfer in, from outside
                figures.transfers_made += 1
        elif kind == "receipt":
            figures.receipts = add(figures.receipts, amounts)
            figures.transfers_made += 1
        elif kind == "float_issued":
            figures.floats_issued = add(figures.floats_issued, amounts)
            figures.transfers_made += 1
        elif kind == "bank_deposit":
            figures.bank_deposits = add(figures.bank_deposits, amounts)
        else:
            figures.last_count = {"ts": step.ts, "employee": step.employee,
                                  "counted": step.data.get("counted"),
                                  "expected": step.data.get("expected"),
                                  "discrepancy": step.data.get("discrepancy")}
    return figures


SafeAction = Literal["declare_start", "receipt", "float", "bank_deposit", "count"]


def plan_safe_step(figures: SafeFigures, action: SafeAction, amounts: Mapping[str, Any]
                   ) -> dict[str, Any]:
    """The data of a safe's next step, or :class:`CashRuleError`: a start declared once and
    first; no float or deposit beyond what the safe should hold."""
    if action == "declare_start":
        if figures.declared:
            raise CashRuleError(409, f"safe {figures.safe}: the start amount is already "
                                     "declared")
        if figures.steps:
            raise CashRuleError(409, f"safe {figures.safe}: declare the start amount before "
                                     "anything else")
        return {"amounts": clean_amounts(amounts, allow_zero=True)}
    if action == "count":
        counted = clean_amounts(amounts, "counted", allow_zero=True)
        expected = figures.expected
        currencies = sorted(set(counted) | set(expected))
        return {"counted": counted, "expected": expected,
                "discrepancy": nonzero({c: counted.get(c, 0) - expected.get(c, 0)
                                        for c in currencies})}
    money = clean_amounts(amounts)
    if action in ("float", "bank_deposit"):
        expected = figures.expected
        short = {c: v for c, v in money.items() if v > expected.get(c, 0)}
        if short:
            raise CashRuleError(409, (
                f"safe {figures.safe} should hold {expected or {}}: cannot take out "
                f"{short}"))
    return {"amounts": money}


def safe_transfer_id(safe: str, figures: SafeFigures) -> str:
    """A safe's transfers are ``{safe}-S{n}`` (a register's are ``{register}-T{n}``)."""
    return f"{safe}-S{figures.transfers_made + 1}"
