"""When a session closes by itself, and which business day an instant belongs to. Pure: no I/O,
no clock; every function is given the instant it works from.

An auto-close rule (``session.auto_close``) names a period and a local wall time: ``daily`` at
``at`` every day, ``monthly`` at ``at`` on the 1st, ``yearly`` at ``at`` on 1 January, in the
store's time zone (``session.timezone``). Instants in and out are aware datetimes; results are
in UTC.

Daylight saving time, decided once here for every caller:

- A wall time that does not exist that day (spring forward: 02:30 on the last Sunday of March
  in Europe/Stockholm, where 02:00 jumps to 03:00) closes at the first instant after the gap,
  the moment the clocks go forward (03:00 local, 01:00 UTC). It is the earliest instant that is
  not before the configured time, so the period is neither shortened by an hour nor skipped.
- A wall time that happens twice (fall back: 02:30 on the last Sunday of October) closes at its
  first occurrence only (``fold=0``): a day has one close, never two.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, date, datetime, time, timedelta
from typing import Protocol
from zoneinfo import ZoneInfo

PERIODS = ("daily", "monthly", "yearly")


class CloseRule(Protocol):
    """What is read of an auto-close rule (:class:`kassad.daemon.config.AutoCloseConfig`)."""

    @property
    def period(self) -> str: ...

    @property
    def at(self) -> str: ...


def parse_clock(value: str) -> time:
    """``"HH:MM"`` (24-hour) as a time of day."""
    hours, sep, minutes = value.partition(":")
    try:
        if not sep or len(hours) != 2 or len(minutes) != 2 or not (hours + minutes).isdigit():
            raise ValueError
        return time(int(hours), int(minutes))
    except ValueError:
        raise ValueError(f"{value!r} is not a time of day as HH:MM (24-hour)") from None


def _aware(moment: datetime, name: str) -> datetime:
    if moment.tzinfo is None or moment.utcoffset() is None:
        raise ValueError(f"{name} must be an aware datetime (UTC), not {moment!r}")
    return moment


def _period_start(day: date, period: str) -> date:
    """The boundary day of the period ``day`` falls in."""
    if period == "daily":
        return day
    if period == "monthly":
        return day.replace(day=1)
    if period == "yearly":
        return day.replace(month=1, day=1)
    raise ValueError(f"unknown auto-close period {period!r} (one of {', '.join(PERIODS)})")


def _step(day: date, period: str, n: int) -> date:
    """The boundary day ``n`` periods after the boundary day ``day`` (n may be negative)."""
    if period == "daily":
        return day + timedelta(days=n)
    if period == "monthly":
        months = day.year * 12 + day.month - 1 + n
        return date(months // 12, months % 12 + 1, 1)
    return date(day.year + n, 1, 1)


def local_instant(day: date, at: time, tz: ZoneInfo) -> datetime:
    """The UTC instant the wall clock in ``tz`` shows ``at`` on ``day``: the first of two
    (fall back), or the end of the gap when ``at`` is skipped (spring forward)."""
    wall = datetime.combine(day, at)
    first = wall.replace(tzinfo=tz, fold=0).astimezone(UTC)
    if first.astimezone(tz).replace(tzinfo=None) == wall:
        return first
    # In a gap, fold=0 reads the wall time with the offset before the transition and fold=1
    # with the one after; the transition lies between the two readings. Time zone transitions
    # are on whole seconds: search them for the first instant on the new offset.
    before = wall.replace(tzinfo=tz, fold=1).astimezone(UTC)
    low, high = min(first, before), max(first, before)
    new_offset = high.astimezone(tz).utcoffset()
    while high - low > timedelta(seconds=1):
        middle = low + timedelta(seconds=(high - low).total_seconds() // 2)
        if middle.astimezone(tz).utcoffset() == new_offset:
            high = middle
        else:
            low = middle
    return high


def _boundaries_from(day: date, rule: CloseRule, tz: ZoneInfo) -> Iterator[datetime]:
    """Boundaries (UTC) on the boundary days from the one ``day`` falls in, onwards."""
    at = parse_clock(rule.at)
    start = _period_start(day, rule.period)
    n = 0
    while True:
        yield local_instant(_step(start, rule.period, n), at, tz)
        n += 1


def next_close(after: datetime, rule: CloseRule, tz: ZoneInfo) -> datetime:
    """The first close instant strictly after ``after`` (UTC)."""
    after = _aware(after, "after")
    # From one period before the local day: a boundary moved by a gap may fall on a later day.
    start = _step(_period_start(after.astimezone(tz).date(), rule.period), rule.period, -1)
    for boundary in _boundaries_from(start, rule, tz):
        if boundary > after:
            return boundary
    raise AssertionError("unreachable: the boundaries never end")  # pragma: no cover


def previous_close(at_or_before: datetime, rule: CloseRule, tz: ZoneInfo) -> datetime:
    """The latest close instant at or before ``at_or_before`` (UTC)."""
    moment = _aware(at_or_before, "at_or_before")
    day = _period_start(moment.astimezone(tz).date(), rule.period)
    at = parse_clock(rule.at)
    n = 1  # one period ahead first, for the same reason as in next_close
    while True:
        boundary = local_instant(_step(day, rule.period, n), at, tz)
        if boundary <= moment:
            return boundary
        n -= 1


def last_close_due(opened_at: datetime, now: datetime, rule: CloseRule,
                   tz: ZoneInfo) -> datetime | None:
    """The latest close instant in (``opened_at``, ``now``]: the one a session opened at
    ``opened_at`` still open at ``now`` missed (the daemon was stopped when it passed), or
    None when no boundary has passed since it opened."""
    opened_at = _aware(opened_at, "opened_at")
    boundary = previous_close(now, rule, tz)
    return boundary if boundary > opened_at else None


def business_date(instant: datetime, tz: ZoneInfo, day_starts: str) -> date:
    """The business day ``instant`` belongs to: its local date, or the day before while the
    local wall clock is before ``day_starts`` (a bar's sales at 01:30 count for the evening
    before). Read on the wall clock, like the close: in a gap, the first instant after it is
    past any ``day_starts`` inside the gap."""
    local = _aware(instant, "instant").astimezone(tz)
    if local.time().replace(tzinfo=None) < parse_clock(day_starts):
        return local.date() - timedelta(days=1)
    return local.date()


def closed_period_date(due_at: datetime, tz: ZoneInfo, day_starts: str) -> date:
    """The business day of a period ending at ``due_at``: that of its last instant (a close at
    the start of a business day belongs to the day before)."""
    return business_date(_aware(due_at, "due_at") - timedelta(microseconds=1), tz, day_starts)
