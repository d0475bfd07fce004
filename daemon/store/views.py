"""The store's views (product.md, "The store"): stored rows in, JSON-ready dicts out. No I/O.

Every amount is ``{currency: minor units}`` with integers only; a view also lists its
``currencies`` with their minor-unit digits so a client can print them (SEK 2: -150 → -1.50).
Each session shows every currency it touched (float, payments, discrepancies), zeros included.

The figures of a date range are those of the sessions that overlap it, whole sessions: a session
open across the range's edge counts with all its payments. Open sessions have no discrepancy at
end yet (``{}`` for it, zeros in totals).

Training sessions (the register's ``training`` flag) are listed, marked ``"training": true``,
and left out of every total: the discrepancy totals, the cash payment summary (its totals and
its per-register figures, which count them in ``training_sessions`` only) and the CSV total
rows. The session list's date range and sort treat them as any other session; its
``training`` filter (``include``, the default, ``exclude`` or ``only``) picks them.

A session closed without a count (a system close, e.g. the daily auto-close) has no discrepancy
at end: it is unknown, not zero. Its ``end`` is ``null`` (empty CSV cells), its ``total`` is its
discrepancy at start alone, and the discrepancy totals leave it out and say how many they left
out (``sessions_without_count``).

CSV (one header row, comma separated, RFC 4180 quoting, ``\\r\\n`` line ends): every money column
comes twice, ``<name>_minor`` as integer minor units and ``<name>`` as the decimal text
(``-150`` and ``-1.50`` in SEK; empty for a code that is not ISO 4217). A row per currency
(``currency``); list views that also show totals mark rows with ``row_type``. Text cells that
a spreadsheet would read as a formula (``=``, ``+``, ``-``, ``@`` …) get a leading ``'``.
"""

from __future__ import annotations

import csv
import io
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta, tzinfo
from typing import Any, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from ..contract.events import canonical_json
from ..ledger.money import ISO_4217_EXPONENTS, Totals, add_totals, format_decimal, sub_totals
from .storage.base import Alarm, RegisterRow, SessionRow

View = dict[str, Any]
RECENT_ALARMS = 10  # stored alarms shown with each register
# The keys of a session's summary that the list views (discrepancy and cash summaries, the
# session list, their CSV) read: the storage loads only these for them. A list view that reads
# another key must add it here (the unit tests compare each list view on whole summaries and
# on these keys alone). The session detail reads the whole summary.
LIST_SUMMARY_KEYS = ("training", "counted", "starting_float", "expected_cash",
                     "cash_sales_count", "cash_refunds_count")


class ViewError(ValueError):
    """A stored row whose figures are not money (a float, a text amount): never shown rounded."""


def totals(value: object, what: str = "amount") -> Totals:
    """``{currency: int}`` from a stored JSON value; ``None`` / missing is empty."""
    if value is None:
        return {}
    if type(value) is not dict and not isinstance(value, Mapping):  # dict: no ABC check
        raise ViewError(f"{what}: {value!r} is not per-currency minor units")
    out: Totals = {}
    for currency, amount in value.items():
        if type(amount) is not int:  # bool is an int subclass, float is not money
            raise ViewError(f"{what}: {currency} {amount!r} is not integer minor units")
        out[str(currency)] = amount
    return out


def _optional_totals(value: object, what: str) -> Totals | None:
    """``totals`` where ``None`` means unknown (a close nobody counted), not empty."""
    return None if value is None else totals(value, what)


def _zero_filled(amounts: Mapping[str, int], currencies: Iterable[str]) -> Totals:
    return {c: amounts.get(c, 0) for c in sorted(set(currencies) | set(amounts))}


def is_training(row: SessionRow) -> bool:
    """A training session: shown, never totalled (the register's fold says so)."""
    return row.summary.get("training") is True


def without_count(row: SessionRow) -> bool:
    """Closed with no counted cash (a system close, not corrected since): its discrepancy at
    end is unknown."""
    return row.status == "closed" and "counted" in row.summary and row.summary["counted"] is None


TrainingFilter = Literal["include", "exclude", "only"]


def filter_training(sessions: Sequence[SessionRow], training: TrainingFilter) -> list[SessionRow]:
    """The session list's ``training`` filter: ``include`` all, ``exclude`` or ``only`` them."""
    if training == "include":
        return list(sessions)
    return [r for r in sessions if is_training(r) == (training == "only")]


def session_currencies(row: SessionRow) -> list[str]:
    """Every currency a session touched: its float, its cash, its discrepancies."""
    return sorted(_currency_set(row))


def _currency_set(row: SessionRow) -> set[str]:
    found: set[str] = set()
    for part in (row.discrepancy_start, row.discrepancy_end, row.cash_gross, row.cash_refunds,
                 row.summary.get("starting_float"), row.summary.get("expected_cash")):
        # A dict (decoded JSON) first: the Mapping check is an ABC's, slow on every row.
        if type(part) is dict or isinstance(part, Mapping):
            found.update(map(str, part))
    return found


def currency_digits(currencies: Iterable[str]) -> dict[str, int | None]:
    """Minor-unit digits per currency (None: not an ISO 4217 code, shown as minor units)."""
    return {c: ISO_4217_EXPONENTS.get(c) for c in sorted(set(currencies))}


def _view_currencies(sessions: Sequence[SessionRow]) -> set[str]:
    found: set[str] = set()
    for row in sessions:
        found |= _currency_set(row)
    return found


def _discrepancies(row: SessionRow) -> tuple[Totals, Totals | None]:
    """At start and at end, zero-filled over the session's currencies; at end ``None`` when
    the session was closed without a count."""
    mine = _currency_set(row)
    start = _zero_filled(totals(row.discrepancy_start, "discrepancy_start"), mine)
    if without_count(row):
        return start, None
    return start, _zero_filled(totals(row.discrepancy_end, "discrepancy_end"), mine)


def _session_head(row: SessionRow) -> View:
    return {"store": row.store, "register": row.register, "session_id": row.session_id,
            "number": row.number, "status": row.status, "opened_at": row.opened_at,
            "closed_at": row.closed_at, "training": is_training(row)}


# -- date ranges --------------------------------------------------------------------------------

_DATE = re.compile(r"^\d{4}-\d{2}-\d{2}$")


class RangeError(ValueError):
    """A query's date range that cannot be read; ``field`` names the parameter."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(message)
        self.field = field


def parse_moment(text: str, zone: tzinfo, *, end: bool) -> datetime:
    """An RFC 3339 time (its offset required), or a date: its first moment in ``zone`` (with
    ``end``: the next day's, so the range holds the whole day); in UTC."""
    text = text.strip()
    try:
        if _DATE.match(text):
            day = date.fromisoformat(text) + timedelta(days=1 if end else 0)
            return datetime.combine(day, time(), zone).astimezone(UTC)
        moment = datetime.fromisoformat(text.upper())
    except (ValueError, OverflowError):
        raise ValueError(f"{text!r} is neither an RFC 3339 time nor a date (YYYY-MM-DD)"
                         ) from None
    if moment.tzinfo is None:
        raise ValueError(f"{text!r} has no UTC offset: write e.g. 2024-05-01T08:00:00Z "
                         "or 2024-05-01T10:00:00+02:00")
    return moment.astimezone(UTC)


def parse_range(start: str | None, end: str | None, tz: str = "UTC") -> Range:
    """[start, end) from a query's ``from`` / ``to`` (either may be absent); dates are days
    in the IANA time zone ``tz``, an end date included."""
    try:
        zone = ZoneInfo(tz)
    except (ZoneInfoNotFoundError, ValueError):
        raise RangeError("tz", f"unknown time zone {tz!r} (IANA name, e.g. Europe/Stockholm)"
                         ) from None
    moments: list[datetime | None] = []
    for field, text in (("from", start), ("to", end)):
        try:
            moments.append(None if text is None else parse_moment(text, zone, end=field == "to"))
        except ValueError as e:
            raise RangeError(field, str(e)) from None
    first, last = moments
    if first is not None and last is not None and first >= last:
        raise RangeError("to", "to must be after from")
    return Range(first, last)


@dataclass(frozen=True, slots=True)
class Range:
    start: datetime | None
    end: datetime | None

    def contains(self, ts: str) -> bool:
        try:
            moment = datetime.fromisoformat(ts)
        except ValueError:
            return False
        if moment.tzinfo is None:
            return False
        return ((self.start is None or moment >= self.start)
                and (self.end is None or moment < self.end))

    def stamp(self) -> str:
        def one(m: datetime | None) -> str:
            return "all" if m is None else m.astimezone(UTC).strftime("%Y%m%dT%H%M%SZ")
        return f"{one(self.start)}_{one(self.end)}"


# -- discrepancy summary --------------------------------------------------------------------------


def discrepancy_summary(sessions: Sequence[SessionRow]) -> View:
    """Discrepancy at start and at end, and their sum, per session and in total, per currency.
    Totals leave out training sessions, and the unknown end of sessions closed uncounted."""
    rows: list[View] = []
    for row in sessions:
        start, end = _discrepancies(row)
        rows.append({**_session_head(row), "start": start, "end": end,
                     "total": add_totals(start, end or {})})
    real = [r for r in rows if not r["training"]]
    every = _view_currencies([row for row in sessions if not is_training(row)])
    start_total = _zero_filled(add_totals(*(r["start"] for r in real)), every)
    end_total = _zero_filled(add_totals(*(r["end"] for r in real if r["end"] is not None)),
                             every)
    return {"sessions": rows,
            "totals": {"start": start_total, "end": end_total,
                       "total": add_totals(start_total, end_total)},
            "training_sessions": len(rows) - len(real),
            "sessions_without_count": sum(1 for r in real if r["end"] is None),
            "currencies": currency_digits(_view_currencies(sessions))}


# -- cash payment summary -------------------------------------------------------------------------


def _count(summary: Mapping[str, Any], key: str) -> int:
    value = summary.get(key, 0)
    return value if type(value) is int else 0


def _cash_figures(group: Sequence[SessionRow]) -> View:
    """The figures of ``group``'s sessions but its training ones, which are only counted."""
    real = [r for r in group if not is_training(r)]
    currencies = _view_currencies(real)
    gross = _zero_filled(add_totals(*(totals(r.cash_gross, "cash_gross") for r in real)),
                         currencies)
    refunds = _zero_filled(add_totals(*(totals(r.cash_refunds, "cash_refunds") for r in real)),
                           currencies)
    return {"sessions": len(real), "training_sessions": len(group) - len(real),
            "gross": gross, "refunds": refunds, "net": sub_totals(gross, refunds),
            "cash_sales_count": sum(_count(r.summary, "cash_sales_count") for r in real),
            "cash_refunds_count": sum(_count(r.summary, "cash_refunds_count") for r in real)}


def cash_summary(sessions: Sequence[SessionRow]) -> View:
    """Gross cash payments (tendered − change), cash refunds and net = gross − refunds, per
    currency, in total and per register (sorted by store, register); training sessions are
    counted in ``training_sessions``, never in the figures."""
    by_register: dict[tuple[str, str], list[SessionRow]] = {}
    for row in sessions:
        by_register.setdefault((row.store, row.register), []).append(row)
    registers = [{"store": store, "register": register, **_cash_figures(group)}
                 for (store, register), group in sorted(by_register.items())]
    return {"totals": _cash_figures(sessions), "registers": registers,
            "currencies": currency_digits(_view_currencies(
                [r for r in sessions if not is_training(r)]))}


# -- session list and detail ----------------------------------------------------------------------


def session_list(sessions: Sequence[SessionRow]) -> View:
    """One row per session, in the given order, training ones marked; ``discrepancy`` = at
    start + at end (``discrepancy_end`` null: closed without a count)."""
    rows: list[View] = []
    for row in sessions:
        start, end = _discrepancies(row)
        rows.append({**_session_head(row), "opened_by": row.opened_by,
                     "closed_by": row.closed_by, "discrepancy_start": start,
                     "discrepancy_end": end, "discrepancy": add_totals(start, end or {})})
    return {"sessions": rows, "currencies": currency_digits(_view_currencies(sessions))}


def discrepancy_weight(row: SessionRow) -> int:
    """What "sort by discrepancy" orders by: the total discrepancy's size, a shortfall as much
    as a surplus, summed over currencies (an order, not an amount; an end nobody counted is
    empty, so it weighs nothing)."""
    total = add_totals(totals(row.discrepancy_start), totals(row.discrepancy_end))
    return sum(abs(v) for v in total.values())


def order_by_discrepancy(sessions: Sequence[SessionRow], descending: bool) -> list[SessionRow]:
    """``sessions`` already ordered by start in the same direction, ordered by discrepancy;
    equal ones keep their order, so descending is exactly ascending reversed."""
    return sorted(sessions, key=discrepancy_weight, reverse=descending)


_DETAIL_TOTALS = ("starting_float", "discrepancy_at_start", "cash_sales", "cash_refunds",
                  "adjustments_added", "adjustments_removed", "total_sales", "expected_cash",
                  "rounding")
# Close figures (null while open); counted and discrepancy stay null after a system close.
_CLOSE_TOTALS = ("expected", "left_in_drawer", "removed")
_UNKNOWN_IF_NULL = ("counted", "discrepancy")
_DETAIL_TEXT = ("opened_by", "closed_by", "note", "close_note")
BALANCE_PARTS = ("opening", "payments", "deposits", "withdrawals", "balance")
_SHOWN = {"session_id", "number", "status", "opened_at", "closed_at", "automatic",
          "expected_start", "adjustments", "payments_by_type", "payment_counts",
          "drawer_openings", "cash_sales_count", "cash_refunds_count", "training",
          "no_sale_openings", "balances", "recount_attempts", "reports", "system_close",
          "approval", "recounts", "corrections",
          *_DETAIL_TOTALS, *_CLOSE_TOTALS, *_UNKNOWN_IF_NULL, *_DETAIL_TEXT}


def session_detail(row: SessionRow) -> View:
    """Everything product.md lists for a closed session (close figures are null while open),
    from the register's own fold (``row.summary``); ``details`` keeps the rest of it (counts
    by denomination, counter runs, a system close's reason and due time).

    A system close (``system_close``) has ``counted`` and ``discrepancy`` null: nobody
    counted. ``balances`` are per payment type (cash included: its balance is the expected
    cash) and currency; ``z_number`` is the session's Z report (null: none yet, or training).
    """
    s = row.summary
    expected_start = s.get("expected_start")
    by_type = s.get("payments_by_type") or {}
    counts = s.get("payment_counts") or {}
    openings = s.get("drawer_openings") or {}
    reports = s.get("reports") or {}
    closed = row.status == "closed"
    detail: View = {
        **_session_head(row),
        "opened_by": row.opened_by, "closed_by": row.closed_by,
        "automatic": bool(s.get("automatic", False)),
        "note": s.get("note"), "close_note": s.get("close_note"),
        **{key: totals(s.get(key), key) for key in _DETAIL_TOTALS},
        "expected_start": None if expected_start is None else totals(expected_start),
        "cash_sales_count": _count(s, "cash_sales_count"),
        "cash_refunds_count": _count(s, "cash_refunds_count"),
        "payments_by_type": {str(t): totals(v, f"payments_by_type.{t}")
                             for t, v in by_type.items()},
        "payment_counts": {str(t): n for t, n in counts.items() if type(n) is int},
        "balances": _balances(s.get("balances")),
        "adjustments": [_adjustment(a) for a in s.get("adjustments") or []],
        "drawer_openings": {str(c): n for c, n in openings.items() if type(n) is int},
        "no_sale_openings": _count(s, "no_sale_openings"),
        "recount_attempts": _count(s, "recount_attempts"),
        "x_printed": _count(reports, "x_printed"),
        "z_number": _int_or_none(reports.get("z_number")),
        "z_copies": _count(reports, "z_copies"),
        **{key: totals(s.get(key), key) if closed else None for key in _CLOSE_TOTALS},
        **{key: _optional_totals(s.get(key), key) if closed else None
           for key in _UNKNOWN_IF_NULL},
        "system_close": s.get("system_close") is True if closed else None,
        "approval": _approval(s.get("approval")) if closed else None,
        "recounts": _count(s, "recounts") if closed else None,
        "corrections": [_correction(c) for c in s.get("corrections") or []] if closed else None,
        "details": {k: v for k, v in s.items() if k not in _SHOWN},
    }
    amounts: list[Mapping[str, int] | None] = [
        *(detail[k] for k in (*_DETAIL_TOTALS, *_CLOSE_TOTALS, *_UNKNOWN_IF_NULL)),
        detail["expected_start"], *detail["payments_by_type"].values(),
        *(part for parts in detail["balances"].values() for part in parts.values()),
        *(c[k] for c in detail["corrections"] or [] for k in ("counted_before", "counted"))]
    detail["currencies"] = currency_digits(
        {*session_currencies(row), *(c for a in amounts if a for c in a)})
    return detail


def _int_or_none(value: object) -> int | None:
    return value if type(value) is int else None


def _balances(value: object) -> dict[str, dict[str, Totals]]:
    """Per payment type: opening, payments, deposits, withdrawals and balance, each money."""
    if value is None:
        return {}
    if not isinstance(value, Mapping):
        raise ViewError(f"balances: {value!r} is not per payment type")
    out: dict[str, dict[str, Totals]] = {}
    for kind, parts in value.items():
        if not isinstance(parts, Mapping):
            raise ViewError(f"balances.{kind}: {parts!r} is not a balance")
        out[str(kind)] = {part: totals(parts.get(part), f"balances.{kind}.{part}")
                          for part in BALANCE_PARTS}
    return out


def _approval(value: object) -> View | None:
    """A manager's approval: who, in which role, why (text only)."""
    if not isinstance(value, Mapping):
        return None
    return {k: None if value.get(k) is None else str(value[k])
            for k in ("employee", "role", "reason")}


def _correction(item: Mapping[str, Any]) -> View:
    return {"ts": item.get("ts"), "employee": item.get("employee"),
            "approval": _approval(item.get("approval")),
            "counted_before": _optional_totals(item.get("counted_before"),
                                               "corrections.counted_before"),
            "counted": totals(item.get("counted"), "corrections.counted")}


def _adjustment(item: Mapping[str, Any]) -> View:
    amount = item.get("amount") or {}
    minor = amount.get("amount")
    if type(minor) is not int:
        raise ViewError(f"adjustment amount {minor!r} is not integer minor units")
    return {"direction": item.get("direction"), "currency": amount.get("currency"),
            "amount": minor, "note": item.get("note"), "ts": item.get("ts"),
            "employee": item.get("employee")}


# -- registers and alarms -------------------------------------------------------------------------


def alarm_view(alarm: Alarm) -> View:
    return {"ts": alarm.ts, "store": alarm.store, "register": alarm.register,
            "kind": alarm.kind, "detail": alarm.detail}


def registers_view(rows: Sequence[RegisterRow], alarms: Sequence[Alarm]) -> View:
    """Each register's online status, its active device alarms (paper out, drawer left open,
    printer offline …) and its latest stored alarms (newest first, ``alarms`` as given)."""
    recent: dict[tuple[str | None, str | None], list[View]] = {}
    for alarm in alarms:
        mine = recent.setdefault((alarm.store, alarm.register), [])
        if len(mine) < RECENT_ALARMS:
            mine.append(alarm_view(alarm))
    registers = [{"store": r.store, "register": r.register, "online": r.online,
                  "last_seen": r.last_seen, "alarms": list(r.alarms), "devices": r.devices,
                  "recent_alarms": recent.get((r.store, r.register), [])}
                 for r in rows]
    return {"registers": registers,
            "online": sum(1 for r in rows if r.online),
            "offline": sum(1 for r in rows if not r.online),
            "with_alarms": sum(1 for r in rows if r.alarms)}


def alarms_view(alarms: Sequence[Alarm]) -> View:
    return {"alarms": [alarm_view(a) for a in alarms]}


# -- CSV ------------------------------------------------------------------------------------------

_FORMULA_START = ("=", "+", "-", "@", "\t", "\r")


def _text(value: object) -> str:
    """A text cell; one a spreadsheet would run as a formula is quoted with a leading '."""
    if value is None:
        return ""
    text = str(value)
    return "'" + text if text.startswith(_FORMULA_START) else text


def _decimal(minor: int, currency: str) -> str:
    return format_decimal(minor, currency) if currency in ISO_4217_EXPONENTS else ""


def _money_cells(currency: str, *amounts: Mapping[str, int] | None) -> list[object]:
    """``minor, decimal`` for each amount in ``currency`` (both empty where not shown)."""
    cells: list[object] = []
    for amount in amounts:
        if amount is None or currency not in amount:
            cells += ["", ""]
        else:
            cells += [amount[currency], _decimal(amount[currency], currency)]
    return cells


def _money_header(*names: str) -> list[str]:
    return [f"{name}{suffix}" for name in names for suffix in ("_minor", "")]


def _render(header: list[str], rows: Iterable[list[object]]) -> str:
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\r\n")
    writer.writerow(header)
    writer.writerows(rows)
    return out.getvalue()


def _currencies_of(*amounts: Mapping[str, int] | None) -> list[str]:
    """The currencies of a row ([""] when it has none: the row is still shown, amounts empty)."""
    found = sorted({c for a in amounts if a for c in a})
    return found or [""]


_SESSION_CELLS = ("store", "register", "session_id", "number", "status", "opened_at",
                  "closed_at", "training")


def _head_cells(item: Mapping[str, Any]) -> list[object]:
    return [item[k] if k == "number" else _flag(item[k]) if k == "training" else _text(item[k])
            for k in _SESSION_CELLS]


def _flag(value: object) -> str:
    return "true" if value else "false"


def discrepancies_csv(view: Mapping[str, Any]) -> str:
    """``row_type`` session (in the view's order, one row per currency; ``training`` true or
    false; ``end`` empty when nobody counted) then total rows, which leave out training
    sessions and the unknown ends, as the view's totals do."""
    header = ["row_type", *_SESSION_CELLS, "currency", *_money_header("start", "end", "total")]
    rows: list[list[object]] = []
    for s in view["sessions"]:
        for cur in _currencies_of(s["start"], s["end"]):
            rows.append(["session", *_head_cells(s), _text(cur),
                         *_money_cells(cur, s["start"], s["end"], s["total"])])
    t = view["totals"]
    for cur in _currencies_of(t["total"]):
        if cur:
            rows.append(["total", *[""] * len(_SESSION_CELLS), _text(cur),
                         *_money_cells(cur, t["start"], t["end"], t["total"])])
    return _render(header, rows)


def cash_csv(view: Mapping[str, Any]) -> str:
    """``row_type`` register (one row per register and currency) then total rows; the
    figures leave training sessions out (``training_sessions`` counts them)."""
    header = ["row_type", "store", "register", "sessions", "training_sessions",
              "cash_sales_count", "cash_refunds_count", "currency",
              *_money_header("gross", "refunds", "net")]
    rows: list[list[object]] = []
    groups = [("register", g) for g in view["registers"]] + [("total", view["totals"])]
    for row_type, g in groups:
        for cur in _currencies_of(g["gross"], g["refunds"]):
            if row_type == "total" and not cur:
                continue
            rows.append([row_type, _text(g.get("store")), _text(g.get("register")),
                         g["sessions"], g["training_sessions"], g["cash_sales_count"],
                         g["cash_refunds_count"],
                         _text(cur), *_money_cells(cur, g["gross"], g["refunds"], g["net"])])
    return _render(header, rows)


def sessions_csv(view: Mapping[str, Any]) -> str:
    """One row per session and currency, in the list's order; ``discrepancy`` = start + end
    (``discrepancy_end`` empty when nobody counted); ``training`` true or false."""
    header = [*_SESSION_CELLS, "opened_by", "closed_by", "currency",
              *_money_header("discrepancy_start", "discrepancy_end", "discrepancy")]
    rows: list[list[object]] = []
    for s in view["sessions"]:
        for cur in _currencies_of(s["discrepancy_start"], s["discrepancy_end"]):
            rows.append([*_head_cells(s), _text(s["opened_by"]), _text(s["closed_by"]),
                         _text(cur), *_money_cells(cur, s["discrepancy_start"],
                                                   s["discrepancy_end"], s["discrepancy"])])
    return _render(header, rows)


def registers_csv(view: Mapping[str, Any]) -> str:
    """One row per register; ``alarms``: its active device alarms, separated by ``;``."""
    header = ["store", "register", "online", "last_seen", "alarms", "recent_alarms"]
    return _render(header, ([_text(r["store"]), _text(r["register"]),
                             "true" if r["online"] else "false", _text(r["last_seen"]),
                             _text(";".join(r["alarms"])), len(r["recent_alarms"])]
                            for r in view["registers"]))


def alarms_csv(view: Mapping[str, Any]) -> str:
    """One row per stored alarm, newest first; ``detail`` as canonical JSON."""
    header = ["ts", "store", "register", "kind", "detail"]
    return _render(header, ([_text(a["ts"]), _text(a["store"]), _text(a["register"]),
                             _text(a["kind"]), _text(canonical_json(a["detail"]))]
                            for a in view["alarms"]))


def transfers_csv(transfers: Sequence[Mapping[str, Any]]) -> str:
    """Issue 9: one row per transfer and currency, oldest first."""
    header = ["store", "transfer_id", "side", "owner", "direction", "party_kind", "party_id",
              "ts", "session_id", "of_transfer", "status", "counterpart", "by_employee",
              "by_role", "reason", "bag", "seal", "note", "currency",
              *_money_header("amount")]
    rows: list[list[object]] = []
    for t in transfers:
        by = t.get("by") or {}
        for cur in _currencies_of(t["amounts"]):
            rows.append([_text(t["store"]), _text(t["transfer_id"]), _text(t["side"]),
                         _text(t["owner"]), _text(t["direction"]), _text(t["party"]["kind"]),
                         _text(t["party"]["id"]), _text(t["ts"]), _text(t["session_id"]),
                         _text(t["of_transfer"]), _text(t["status"]), _text(t["counterpart"]),
                         _text(by.get("employee")), _text(by.get("role")), _text(t["reason"]),
                         _text(t["bag"]), _text(t["seal"]), _text(t["note"]), _text(cur),
                         *_money_cells(cur, t["amounts"])])
    return _render(header, rows)


def safes_csv(safes: Sequence[Mapping[str, Any]]) -> str:
    """Issue 9: one row per safe and currency: start, receipts, floats, deposits, expected."""
    names = ("start", "receipts", "floats_issued", "bank_deposits", "expected")
    header = ["store", "safe", "name", "currency", *_money_header(*names)]
    rows: list[list[object]] = []
    for s in safes:
        figures = [s[n] for n in names]
        for cur in _currencies_of(*figures):
            rows.append([_text(s["store"]), _text(s["safe"]), _text(s["name"]), _text(cur),
                         *_money_cells(cur, *figures)])
    return _render(header, rows)
