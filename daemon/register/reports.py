"""X and Z reports and cash slips as ``print.receipt`` documents, from the register's journal.

Pure: a session summary (``Session.summary()`` JSON) and a few facts the register knows
(letterhead, Z number, grand totals, the journal's chain head, the time) in, a
:class:`ReceiptDocument` as JSON out. No clock, no I/O; the same input prints the same paper.

Layout: the Swedish X/Z-dagrapport fields (SKVFS 2014:9, research §5.1; Norway's Z as a
superset, §5.3), in one column of label/amount rows. Rows are ``columns`` blocks, so the
encoder fits them to the model's width (48 characters on a TM-T20II, 42 on a TM-T88V); long
text wraps there too. Only characters of the printers' code page (CP858) are used: "..." not
an ellipsis, "-" not a minus sign, so nothing prints as "?".

Amounts: :func:`~kassad.daemon.ledger.money.format_decimal` in the currency's exponent, then
written the register language's way: Swedish ``1 234,50`` (space between thousands, decimal
comma), English ``1,234.50``. A report of one currency names it once in its head and prints
bare amounts; with several currencies every amount carries its code (``12,00 EUR``), one row
per currency, the base currency first.

Times are printed in the store's time zone as ``YYYY-MM-DD HH:MM``.
"""

from __future__ import annotations

import unicodedata
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Literal, Protocol
from urllib.parse import urlencode
from zoneinfo import ZoneInfo

from kassad.daemon.ledger.money import format_decimal
from kassad.drivers.escpos.document import MAX_BLOCKS, ReceiptDocument

Language = Literal["sv", "en"]
ReportKind = Literal["x", "z"]
SlipKind = Literal["adjustment", "cash_removed"]

#: Adjustments listed one by one on a report; the rest are summed (a document holds at most
#: MAX_BLOCKS blocks, and a session with hundreds of float changes must still print its Z).
MAX_LISTED_ADJUSTMENTS = 40
#: Payment types listed one by one; the rest are summed as "other".
MAX_LISTED_TYPES = 12
#: Characters kept of a free-text note, an employee id, an org.nr … on paper.
MAX_NOTE = 500
MAX_NAME = 40
HASH_SHOWN = 16  # hex digits of the chain head printed as text (the QR code has all of it)

# Payment types and drawer-opening causes in the order a report lists them; others follow
# in alphabetical order.
_TYPE_ORDER = ("cash", "card", "gift_card")
_CAUSE_ORDER = ("sale", "refund", "adjustment", "count", "no_sale", "unexpected", "found_open")

TEXTS: Mapping[Language, Mapping[str, str]] = {
    "sv": {
        "x_title": "X-DAGRAPPORT",
        "z_title": "Z-DAGRAPPORT",
        "z_number": "Z-nr {n}",
        "training": "*** ÖVNING ***",
        "training_unnumbered": "Övningspass, ej numrerad",
        "copy": "*** KOPIA {n} ***",
        "org_number": "Org.nr {v}",
        "store": "Butik",
        "register": "Kassaregister",
        "session": "Kassapass nr",
        "opened": "Öppnad",
        "closed": "Stängd",
        "printed": "Utskriven",
        "opened_by": "Öppnad av",
        "closed_by": "Stängd av",
        "automatic": "automatiskt",
        "automatic_close": "automatisk stängning",
        "currency": "Valuta",
        "currencies": "Valutor",
        "x_reports": "X-rapporter i passet",
        "sales_title": "FÖRSÄLJNING PER BETALSÄTT",
        "type.cash": "Kontant",
        "type.card": "Kort",
        "type.gift_card": "Presentkort",
        "type.other": "Övriga",
        "sales_total": "Totalt netto",
        "refunds": "Returer kontant ({n})",
        "rounding": "Öresavrundning",
        "drawer_title": "LÅDÖPPNINGAR",
        "no_sale": "Lådöppningar utan köp",
        "cause.sale": "Försäljning",
        "cause.refund": "Retur",
        "cause.adjustment": "Ändring av växelkassa",
        "cause.count": "Räkning",
        "cause.no_sale": "Utan köp",
        "cause.unexpected": "Oväntad",
        "cause.found_open": "Öppen vid start",
        "openings_total": "Totalt",
        "float_title": "VÄXELKASSA",
        "starting_float": "Ingående växelkassa",
        "start_difference": "Differens vid start",
        "changes": "Ändringar av växelkassan",
        "none": "inga",
        "add": "Insättning",
        "remove": "Uttag",
        "more": "... och {n} till",
        "transfers": "Överföringar",
        "transfer.out": "Till {party}",
        "transfer.in": "Från {party}",
        "transfer.safe": "kassaskåp {id}",
        "transfer.register": "kassa {id}",
        "transfer.open": "ej avstämd",
        "transfers_out_total": "Summa överfört ut",
        "transfers_in_total": "Summa överfört in",
        "added_total": "Summa insättningar",
        "removed_total": "Summa uttag",
        "expected": "Förväntat kontantbelopp",
        "counted": "Räknat",
        "not_counted": "ej räknat",
        "discrepancy": "Differens",
        "unknown": "okänd",
        "left": "Kvar i lådan",
        "removed": "Uttaget",
        "recounts": "Omräkningar",
        "approved_by": "Godkänt av",
        "role.manager": "chef",
        "reason": "Orsak: {v}",
        "note": "Anteckning: {v}",
        "balances_title": "SALDO PER BETALSÄTT",
        "balance.opening": "Ingående",
        "balance.payments": "Betalningar",
        "balance.deposits": "Insättningar",
        "balance.withdrawals": "Uttag",
        "balance.balance": "Saldo",
        "corrections_title": "KORRIGERINGAR",
        "counted_before": "Räknat före",
        "counted_after": "Räknat nu",
        "grand_sales": "Grand total försäljning",
        "grand_returns": "Grand total returer",
        "grand_net": "Grand total netto",
        "grand_training": "Övning ingår ej i grand total",
        "chain": "Kontrollkedja",
        "slip.adjustment": "VÄXELKASSA ÄNDRAD",
        "slip.cash_removed": "KONTANTER UTTAGNA",
        "time": "Tid",
        "employee": "Anställd",
        "signature": "Signatur: ____________________",
    },
    "en": {
        "x_title": "X REPORT",
        "z_title": "Z REPORT",
        "z_number": "Z no. {n}",
        "training": "*** TRAINING ***",
        "training_unnumbered": "Training session, not numbered",
        "copy": "*** COPY {n} ***",
        "org_number": "Org. no. {v}",
        "store": "Store",
        "register": "Register",
        "session": "Session no.",
        "opened": "Opened",
        "closed": "Closed",
        "printed": "Printed",
        "opened_by": "Opened by",
        "closed_by": "Closed by",
        "automatic": "automatically",
        "automatic_close": "automatic close",
        "currency": "Currency",
        "currencies": "Currencies",
        "x_reports": "X reports this session",
        "sales_title": "SALES BY PAYMENT TYPE",
        "type.cash": "Cash",
        "type.card": "Card",
        "type.gift_card": "Gift card",
        "type.other": "Other",
        "sales_total": "Total, net",
        "refunds": "Cash refunds ({n})",
        "rounding": "Cash rounding",
        "drawer_title": "DRAWER OPENINGS",
        "no_sale": "No-sale openings",
        "cause.sale": "Sale",
        "cause.refund": "Refund",
        "cause.adjustment": "Float change",
        "cause.count": "Count",
        "cause.no_sale": "No sale",
        "cause.unexpected": "Unexpected",
        "cause.found_open": "Found open",
        "openings_total": "Total",
        "float_title": "CHANGE FUND",
        "starting_float": "Starting float",
        "start_difference": "Difference at start",
        "changes": "Changes to the float",
        "none": "none",
        "transfers": "Transfers",
        "transfer.out": "To {party}",
        "transfer.in": "From {party}",
        "transfer.safe": "safe {id}",
        "transfer.register": "register {id}",
        "transfer.open": "not reconciled",
        "transfers_out_total": "Total transferred out",
        "transfers_in_total": "Total transferred in",
        "add": "Added",
        "remove": "Removed",
        "more": "... and {n} more",
        "added_total": "Total added",
        "removed_total": "Total removed",
        "expected": "Expected cash",
        "counted": "Counted",
        "not_counted": "not counted",
        "discrepancy": "Discrepancy",
        "unknown": "unknown",
        "left": "Left in drawer",
        "removed": "Cash removed",
        "recounts": "Recounts",
        "approved_by": "Approved by",
        "role.manager": "manager",
        "reason": "Reason: {v}",
        "note": "Note: {v}",
        "balances_title": "BALANCES BY PAYMENT TYPE",
        "balance.opening": "Opening",
        "balance.payments": "Payments",
        "balance.deposits": "Deposits",
        "balance.withdrawals": "Withdrawals",
        "balance.balance": "Balance",
        "corrections_title": "CORRECTIONS",
        "counted_before": "Counted before",
        "counted_after": "Counted now",
        "grand_sales": "Grand total sales",
        "grand_returns": "Grand total returns",
        "grand_net": "Grand total net",
        "grand_training": "Training is not in the grand totals",
        "chain": "Journal chain",
        "slip.adjustment": "FLOAT CHANGED",
        "slip.cash_removed": "CASH REMOVED",
        "time": "Time",
        "employee": "Employee",
        "signature": "Signature: ____________________",
    },
}


class HeaderSource(Protocol):
    """Who the report is from: ``ReportsConfig`` has these, and so has :class:`Letterhead`."""

    @property
    def company(self) -> str | None: ...

    @property
    def org_number(self) -> str | None: ...

    @property
    def address(self) -> Sequence[str]: ...


@dataclass(frozen=True, slots=True)
class Letterhead:
    company: str | None = None
    org_number: str | None = None
    address: Sequence[str] = ()


def render_report(
    kind: ReportKind,
    summary: Mapping[str, Any],
    *,
    register: str,
    store: str,
    language: Language,
    header: HeaderSource,
    base_currency: str,
    printed_at: str,
    timezone: str = "UTC",
    z_number: int | None = None,
    copy_number: int = 0,
    x_number: int | None = None,
    grand_totals: Mapping[str, Mapping[str, int]] | None = None,
    chain_head: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """An X report (``kind="x"``, the open session so far) or a Z report (``"z"``, a closed
    session) as a ``print.receipt`` document (JSON, valid as :class:`ReceiptDocument`).

    ``z_number``: the Z's number (falls back to ``summary["reports"]["z_number"]``); required
    for a Z of a real session, never printed for a training session. ``copy_number``: 0 for
    the original, n for the n-th reprint (marked "KOPIA n"/"COPY n" at top and bottom).
    ``x_number``: which X of this session this is (printed as a count). ``grand_totals``:
    ``{"sales"|"returns"|"net": {cur: minor}}``. ``chain_head``: ``{"seq", "hash"}`` (and
    ``"epoch"``) of the journal when the report was made. ``printed_at``: ISO 8601.

    Raises ValueError for a Z of an open session, an X of a closed one, or a Z without number.
    """
    status = summary.get("status")
    if kind == "z" and status != "closed":
        raise ValueError("a Z report is of a closed session")
    if kind == "x" and status != "open":
        raise ValueError("an X report is of an open session")
    if copy_number < 0:
        raise ValueError("copy_number is 0 for the original, n for the n-th copy")
    training = bool(summary.get("training", False))
    reports = summary.get("reports") or {}
    if z_number is None:
        z_number = reports.get("z_number")
    if kind == "z" and not training and z_number is None:
        raise ValueError("a Z report of a real session needs its z_number")

    t = TEXTS[language]
    r = _Report(language, _currency_order(summary, base_currency), ZoneInfo(timezone),
                _spans_days(summary, printed_at, timezone))
    closing = kind == "z"

    r.marks(copy_number, training)
    r.title(t["z_title"] if closing else t["x_title"])
    if closing:
        r.centered(t["training_unnumbered"] if training else t["z_number"].format(n=z_number),
                   bold=True)
    r.letterhead(header)
    r.rule()

    r.row(t["store"], store)
    r.row(t["register"], register)
    r.row(t["session"], str(summary.get("number", "")))
    r.row(t["opened"], r.when(summary.get("opened_at")))
    if closing:
        r.row(t["closed"], r.when(summary.get("closed_at")))
    r.row(t["printed"], r.when(printed_at))
    opener = _clean(summary.get("opened_by"), MAX_NAME)
    if summary.get("automatic"):
        opener = f"{opener} ({t['automatic']})" if opener else t["automatic"]
    r.row(t["opened_by"], opener or "-")
    if closing:
        closer = _clean(summary.get("closed_by"), MAX_NAME)
        if summary.get("system_close"):
            closer = f"{closer} ({t['automatic_close']})" if closer else t["automatic_close"]
        r.row(t["closed_by"], closer or "-")
    several = len(r.currencies) > 1
    r.row(t["currencies"] if several else t["currency"], ", ".join(r.currencies))
    x_count = x_number if not closing else reports.get("x_printed")
    if x_count is not None:
        r.row(t["x_reports"], str(x_count))
    r.rule()

    _sales(r, summary)
    r.rule()
    _drawer(r, summary)
    r.rule()
    _float(r, summary, closing)
    balances = summary.get("balances") or {}
    if balances:
        r.rule()
        _balances(r, balances)
    corrections = summary.get("corrections") or []
    if closing and corrections:
        r.rule()
        _corrections(r, corrections)
    r.rule()
    if training:
        r.text(t["grand_training"])
    elif grand_totals is not None:
        r.money(t["grand_sales"], grand_totals.get("sales"))
        r.money(t["grand_returns"], grand_totals.get("returns"))
        r.money(t["grand_net"], grand_totals.get("net"), bold=True)
    if chain_head is not None:
        r.rule()
        r.chain(chain_head, store, register)
    r.marks(copy_number, training)
    r.cut()
    return r.document()


def render_slip(
    kind: SlipKind,
    data: Mapping[str, Any],
    *,
    language: Language,
    header: HeaderSource,
    register: str,
    store: str,
    base_currency: str,
    session_number: int | None,
    employee: str | None,
    ts: str,
    timezone: str = "UTC",
    training: bool = False,
    chain_head: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """A slip to sign for cash that moved: ``"adjustment"`` (a change of the float: the
    ``session.adjusted`` data, ``direction`` add | remove, ``amount`` Money, ``note``) or
    ``"cash_removed"`` (at a close: ``removed`` {cur: minor}, optionally ``left_in_drawer``
    and ``note`` / ``close_note``; a closed session's summary will do). ``ts``: ISO 8601."""
    t = TEXTS[language]
    if kind == "adjustment":
        direction = data.get("direction")
        if direction not in ("add", "remove"):
            raise ValueError(f"an adjustment is add or remove, not {direction!r}")
        money = data["amount"]
        amounts = {str(money["currency"]): int(money["amount"])}
        rows = [(t[direction], amounts)]
        note = data.get("note")
    elif kind == "cash_removed":
        amounts = dict(data["removed"])
        rows = [(t["removed"], amounts)]
        if data.get("left_in_drawer") is not None:
            rows.append((t["left"], dict(data["left_in_drawer"])))
        note = data.get("note", data.get("close_note"))
    else:
        raise ValueError(f"no slip of kind {kind!r}")
    currencies = _ordered({c for _, totals in rows for c in totals}, base_currency)
    # A slip is one amount or two: each with its code, and always the date.
    r = _Report(language, currencies, ZoneInfo(timezone), True, codes=True)

    r.marks(0, training)
    r.title(t[f"slip.{kind}"])
    r.letterhead(header)
    r.rule()
    r.row(t["store"], store)
    r.row(t["register"], register)
    if session_number is not None:
        r.row(t["session"], str(session_number))
    r.row(t["time"], r.when(ts))
    r.row(t["employee"], _clean(employee, MAX_NAME) or "-")
    r.rule()
    for label, totals in rows:
        r.money(label, totals, bold=True)
    if note:
        r.text(t["note"].format(v=_clean(note, MAX_NOTE)))
    r.feed(2)
    r.text(t["signature"])
    if chain_head is not None:
        r.rule()
        r.chain(chain_head, store, register)
    r.marks(0, training)
    r.cut()
    return r.document()


# --- sections ------------------------------------------------------------------------------


def _sales(r: _Report, summary: Mapping[str, Any]) -> None:
    t = r.t
    by_type: Mapping[str, Mapping[str, int]] = summary.get("payments_by_type") or {}
    counts: Mapping[str, int] = summary.get("payment_counts") or {}
    r.section(t["sales_title"])
    types = _ordered_keys(set(by_type) | set(counts), _TYPE_ORDER)
    listed, rest = types[:MAX_LISTED_TYPES], types[MAX_LISTED_TYPES:]
    for name in listed:
        r.money(f"{r.payment_type(name)} ({counts.get(name, 0)})", by_type.get(name))
    if rest:
        other: dict[str, int] = {}
        for name in rest:
            for cur, amount in (by_type.get(name) or {}).items():
                other[cur] = other.get(cur, 0) + amount
        n = sum(counts.get(name, 0) for name in rest)
        r.money(f"{t['type.other']} ({n})", other)
    r.money(t["sales_total"], summary.get("total_sales"), bold=True)
    r.money(t["refunds"].format(n=summary.get("cash_refunds_count", 0)),
            summary.get("cash_refunds"))
    r.money(t["rounding"], summary.get("rounding"))


def _drawer(r: _Report, summary: Mapping[str, Any]) -> None:
    t = r.t
    openings: Mapping[str, int] = summary.get("drawer_openings") or {}
    no_sale = summary.get("no_sale_openings", openings.get("no_sale", 0))
    r.section(t["drawer_title"])
    r.row(t["no_sale"], str(no_sale), bold=True)
    for cause in _ordered_keys(set(openings), _CAUSE_ORDER):
        label = t.get(f"cause.{cause}") or _clean(cause, MAX_NAME)
        r.row(f"  {label}", str(openings[cause]))
    r.row(f"  {t['openings_total']}", str(sum(openings.values())))


def _float(r: _Report, summary: Mapping[str, Any], closing: bool) -> None:
    t = r.t
    r.section(t["float_title"])
    r.money(t["starting_float"], summary.get("starting_float"))
    if summary.get("discrepancy_at_start"):
        r.money(t["start_difference"], summary["discrepancy_at_start"])
    adjustments: Sequence[Mapping[str, Any]] = summary.get("adjustments") or []
    if not adjustments:
        r.row(t["changes"], t["none"])
    else:
        r.text(t["changes"])
        for adjustment in adjustments[:MAX_LISTED_ADJUSTMENTS]:
            _adjustment_row(r, adjustment)
        if len(adjustments) > MAX_LISTED_ADJUSTMENTS:
            r.text(f"  {t['more'].format(n=len(adjustments) - MAX_LISTED_ADJUSTMENTS)}")
        if summary.get("adjustments_added"):
            r.money(t["added_total"], summary["adjustments_added"])
        if summary.get("adjustments_removed"):
            r.money(t["removed_total"], _negated(summary["adjustments_removed"]))
    _transfers(r, summary.get("transfers") or [])
    expected = summary.get("expected") if closing else None
    if expected is None:
        expected = summary.get("expected_cash")
    if expected is not None:  # a blind X may leave it out
        r.money(t["expected"], expected, bold=True)
    if not closing:
        return
    counted = summary.get("counted")
    if counted is None:  # a system close counts nothing
        r.row(t["counted"], t["not_counted"])
    else:
        r.money(t["counted"], counted)
    discrepancy = summary.get("discrepancy")
    if discrepancy is None or counted is None:
        r.row(t["discrepancy"], t["unknown"], bold=True)
    else:
        r.money(t["discrepancy"], discrepancy, bold=True)
    r.money(t["left"], summary.get("left_in_drawer"))
    r.money(t["removed"], summary.get("removed"))
    if summary.get("recounts"):
        r.row(t["recounts"], str(summary["recounts"]))
    _approval(r, summary.get("approval"))
    if summary.get("close_note"):
        r.text(t["note"].format(v=_clean(summary["close_note"], MAX_NOTE)))


def _transfers(r: _Report, transfers: Sequence[Mapping[str, Any]]) -> None:
    """Two-sided movements (safe drops, floats from the safe): each with its other side and
    whether the store has reconciled it, then the totals each way."""
    if not transfers:
        return
    t = r.t
    r.text(t["transfers"])
    totals: dict[str, dict[str, int]] = {"out": {}, "in": {}}
    for item in transfers[:MAX_LISTED_ADJUSTMENTS]:
        party = item.get("party") or {}
        kind = "safe" if party.get("kind") == "safe" else "register"
        where = t[f"transfer.{kind}"].format(id=_clean(party.get("id"), MAX_NAME))
        direction = "out" if item.get("direction") == "out" else "in"
        label = t[f"transfer.{direction}"].format(party=where)
        if item.get("status") != "reconciled":
            label += f" ({t['transfer.open']})"
        amounts = {str(c): int(a) for c, a in (item.get("amounts") or {}).items()}
        r.money(f"  {label}", _negated(amounts) if direction == "out" else amounts)
    for item in transfers:
        side = totals["out" if item.get("direction") == "out" else "in"]
        for currency, amount in (item.get("amounts") or {}).items():
            side[str(currency)] = side.get(str(currency), 0) + int(amount)
    if len(transfers) > MAX_LISTED_ADJUSTMENTS:
        r.text(f"  {t['more'].format(n=len(transfers) - MAX_LISTED_ADJUSTMENTS)}")
    if totals["in"]:
        r.money(t["transfers_in_total"], totals["in"])
    if totals["out"]:
        r.money(t["transfers_out_total"], _negated(totals["out"]))


def _approval(r: _Report, approval: Mapping[str, Any] | None) -> None:
    if not approval:
        return
    t = r.t
    who = _clean(approval.get("employee"), MAX_NAME) or "-"
    role = _clean(approval.get("role"), MAX_NAME)
    role = t.get(f"role.{role}", role)
    r.row(t["approved_by"], f"{who} ({role})" if role else who)
    if approval.get("reason"):
        r.text(f"  {t['reason'].format(v=_clean(approval['reason'], MAX_NOTE))}")


def _adjustment_row(r: _Report, adjustment: Mapping[str, Any]) -> None:
    t = r.t
    direction = adjustment.get("direction")
    money = adjustment.get("amount") or {}
    amount = int(money.get("amount", 0))
    label = t["add"] if direction == "add" else t["remove"]
    who = _clean(adjustment.get("employee"), MAX_NAME)
    left = f"  {r.when(adjustment.get('ts'), short=True)} {label}" + (f" ({who})" if who else "")
    cur = str(money.get("currency", r.currencies[0]))
    r.row(left, r.amount(-amount if direction == "remove" else amount, cur))
    if adjustment.get("note"):
        r.text(f"    {_clean(adjustment['note'], MAX_NOTE)}")


def _balances(r: _Report, balances: Mapping[str, Mapping[str, Mapping[str, int]]]) -> None:
    t = r.t
    r.section(t["balances_title"])
    for name in _ordered_keys(set(balances), _TYPE_ORDER)[:MAX_LISTED_TYPES]:
        figures = balances[name]
        r.text(r.payment_type(name))
        for key in ("opening", "payments", "deposits", "withdrawals"):
            # Only what moved: a card balance is its payments; cash shows all four.
            if any(figures.get(key, {}).values()):
                totals = figures[key]
                r.money(f"  {t['balance.' + key]}",
                        _negated(totals) if key == "withdrawals" else totals)
        if figures.get("balance") is not None:  # a blind reply's summary leaves cash's out
            r.money(f"  {t['balance.balance']}", figures["balance"], bold=True)


def _corrections(r: _Report, corrections: Sequence[Mapping[str, Any]]) -> None:
    """Recounts of the closed session's cash (``session.corrected``): the figures above are
    already the corrected ones, so each says what was counted before and by whose approval."""
    t = r.t
    r.section(t["corrections_title"])
    for correction in corrections[:MAX_LISTED_ADJUSTMENTS]:
        who = _clean(correction.get("employee"), MAX_NAME)
        r.text(r.when(correction.get("ts")) + (f" ({who})" if who else ""))
        before = correction.get("counted_before")
        if before is None:
            r.row(f"  {t['counted_before']}", t["not_counted"])
        else:
            r.money(f"  {t['counted_before']}", before)
        r.money(f"  {t['counted_after']}", correction.get("counted"))
        _approval(r, correction.get("approval"))


# --- layout --------------------------------------------------------------------------------


class _Report:
    """Blocks in the making, with the language, currencies and time zone to write them in."""

    def __init__(self, language: Language, currencies: list[str], zone: ZoneInfo,
                 long_dates: bool, *, codes: bool | None = None) -> None:
        self.t = TEXTS[language]
        self.language = language
        self.currencies = currencies
        self.zone = zone
        self.long_dates = long_dates
        # With one currency its code is said once in the head; with several, on every amount.
        self.codes = len(currencies) > 1 if codes is None else codes
        self.blocks: list[dict[str, Any]] = []

    def document(self) -> dict[str, Any]:
        doc = {"blocks": self.blocks}
        if len(self.blocks) > MAX_BLOCKS:
            raise ValueError(f"the report would take {len(self.blocks)} blocks, "
                             f"a receipt holds {MAX_BLOCKS}")
        ReceiptDocument.model_validate(doc)  # fail here, not at the printer
        return doc

    # blocks

    def title(self, text: str) -> None:
        self.blocks.append({"type": "text", "text": text, "bold": True, "align": "center",
                            "double_height": True})

    def centered(self, text: str, bold: bool = False) -> None:
        block: dict[str, Any] = {"type": "text", "text": text, "align": "center"}
        if bold:
            block["bold"] = True
        self.blocks.append(block)

    def section(self, text: str) -> None:
        self.blocks.append({"type": "text", "text": text, "bold": True})

    def text(self, text: str) -> None:
        self.blocks.append({"type": "text", "text": text})

    def row(self, left: str, right: str, bold: bool = False) -> None:
        block: dict[str, Any] = {"type": "columns", "left": left, "right": right[:60]}
        if bold:
            block["bold"] = True
        self.blocks.append(block)

    def rule(self) -> None:
        self.blocks.append({"type": "rule"})

    def feed(self, lines: int) -> None:
        self.blocks.append({"type": "feed", "lines": lines})

    def cut(self) -> None:
        self.blocks.append({"type": "cut", "mode": "partial"})

    def marks(self, copy_number: int, training: bool) -> None:
        """What must not be missed, at the top and again at the bottom of the paper."""
        if copy_number:
            self.title(self.t["copy"].format(n=copy_number))
        if training:
            self.title(self.t["training"])

    def letterhead(self, header: HeaderSource) -> None:
        if header.company:
            self.centered(_clean(header.company, MAX_NAME * 2), bold=True)
        if header.org_number:
            self.centered(self.t["org_number"].format(v=_clean(header.org_number, MAX_NAME)))
        for line in header.address:
            if line:
                self.centered(_clean(line, MAX_NAME * 2))

    def money(self, label: str, totals: Mapping[str, int] | None, bold: bool = False) -> None:
        """``label`` and its amount; one row per currency, the label on the first only."""
        present = [c for c in self.currencies if totals and c in totals]
        present += sorted(set(totals or {}) - set(present))
        if not present:
            self.row(label, self.amount(0, self.currencies[0]), bold)
            return
        for i, cur in enumerate(present):
            assert totals is not None
            self.row(label if i == 0 else "", self.amount(int(totals[cur]), cur), bold)

    def chain(self, head: Mapping[str, Any], store: str, register: str) -> None:
        """The journal's head: where this paper sits in the hash chain, for an auditor to
        check against the journal (research §8 items 2 and 15)."""
        seq, digest = int(head["seq"]), _clean(head.get("hash"), 128)
        self.row(self.t["chain"], f"seq {seq}")
        self.row("", f"{digest[:HASH_SHOWN]}..." if len(digest) > HASH_SHOWN else digest)
        query: dict[str, Any] = {"store": store, "register": register}
        if head.get("epoch") is not None:
            query["epoch"] = head["epoch"]
        query.update(seq=seq, hash=digest)
        self.blocks.append({"type": "qr", "data": f"kassad:chain?{urlencode(query)}",
                            "size": 4, "ec": "M"})

    # words

    def payment_type(self, name: str) -> str:
        return self.t.get(f"type.{name}") or _clean(name, MAX_NAME)

    def amount(self, minor: int, currency: str) -> str:
        text = format_amount(minor, currency, self.language)
        return f"{text} {currency}" if self.codes else text

    def when(self, ts: str | None, short: bool = False) -> str:
        if not ts:
            return "-"
        local = _instant(ts).astimezone(self.zone)
        return local.strftime("%H:%M" if short and not self.long_dates else "%Y-%m-%d %H:%M")


def format_amount(minor: int, currency: str, language: Language) -> str:
    """Minor units as the register's language writes money: sv ``-1 234,50``, en ``-1,234.50``
    (digits from :func:`format_decimal`, so the currency's exponent rules)."""
    text = format_decimal(minor, currency)
    sign = "-" if text.startswith("-") else ""
    whole, _, frac = text.lstrip("-").partition(".")
    groups = [whole[max(0, i - 3):i] for i in range(len(whole), 0, -3)][::-1]
    thousands, point = (" ", ",") if language == "sv" else (",", ".")
    return sign + thousands.join(groups) + (point + frac if frac else "")


# --- helpers -------------------------------------------------------------------------------


def _clean(value: Any, limit: int) -> str:
    """Text from the journal made printable: control characters (a note's newline or tab)
    would make the document invalid, so they become spaces; cut to ``limit`` characters."""
    if value is None:
        return ""
    text = "".join(" " if unicodedata.category(ch) == "Cc" else ch for ch in str(value))
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _negated(totals: Mapping[str, int]) -> dict[str, int]:
    return {c: -int(a) for c, a in totals.items()}


def _ordered(currencies: Iterable[str], base: str) -> list[str]:
    return [base, *sorted(set(currencies) - {base})]


def _ordered_keys(keys: set[str], first: Sequence[str]) -> list[str]:
    return [k for k in first if k in keys] + sorted(keys - set(first))


def _currency_order(summary: Mapping[str, Any], base: str) -> list[str]:
    """Every currency the report mentions, the base currency first (always there)."""
    found: set[str] = set()
    for key in ("starting_float", "cash_sales", "cash_refunds", "total_sales", "expected_cash",
                "counted", "expected", "left_in_drawer", "removed", "rounding",
                "adjustments_added", "adjustments_removed", "transfers_in", "transfers_out"):
        found |= set(summary.get(key) or {})
    for totals in (summary.get("payments_by_type") or {}).values():
        found |= set(totals)
    for figures in (summary.get("balances") or {}).values():
        for totals in figures.values():
            found |= set(totals or {})
    return _ordered(found, base)


def _spans_days(summary: Mapping[str, Any], printed_at: str, timezone: str) -> bool:
    """Whether the session runs over more than one local day (then adjustment times carry
    their date; otherwise the time of day says it)."""
    zone = ZoneInfo(timezone)
    days = set()
    for ts in (summary.get("opened_at"), summary.get("closed_at") or printed_at):
        if ts:
            days.add(_instant(ts).astimezone(zone).date())
    return len(days) > 1


def _instant(ts: str) -> datetime:
    moment = datetime.fromisoformat(ts)
    # The journal writes UTC ("…Z"); a time without an offset is taken as UTC too.
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)
