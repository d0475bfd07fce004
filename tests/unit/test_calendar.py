"""Auto-close boundaries and business days (daemon/ledger/calendar.py), in UTC,
Europe/Stockholm and America/New_York, across both DST transitions, month ends and leap years.

2025's transitions: Stockholm springs forward 30 March 02:00 → 03:00 (01:00 UTC) and falls back
26 October 03:00 → 02:00 (01:00 UTC); New York springs forward 9 March 02:00 → 03:00 (07:00
UTC) and falls back 2 November 02:00 → 01:00 (06:00 UTC).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest
from hypothesis import event, given, settings
from hypothesis import strategies as st

from kassad.daemon.config import AutoCloseConfig
from kassad.daemon.ledger.calendar import (
    business_date,
    closed_period_date,
    last_close_due,
    next_close,
    parse_clock,
    previous_close,
)

STHLM = ZoneInfo("Europe/Stockholm")
NYC = ZoneInfo("America/New_York")
UTC_ZONE = ZoneInfo("UTC")
US = timedelta(microseconds=1)


@dataclass(frozen=True)
class Rule:
    period: str
    at: str


def utc(year: int, month: int, day: int, hour: int = 0, minute: int = 0,
        second: int = 0) -> datetime:
    return datetime(year, month, day, hour, minute, second, tzinfo=UTC)


def local(tz: ZoneInfo, year: int, month: int, day: int, hour: int = 0,
          minute: int = 0) -> datetime:
    """A wall time in ``tz`` (the first, if it happens twice) as the UTC instant."""
    return datetime(year, month, day, hour, minute, tzinfo=tz).astimezone(UTC)


# -- daily ---------------------------------------------------------------------------------------

@pytest.mark.parametrize("tz", [STHLM, NYC, UTC_ZONE], ids=str)
def test_daily_later_today_or_tomorrow(tz: ZoneInfo) -> None:
    rule = Rule("daily", "03:00")
    assert next_close(local(tz, 2025, 6, 10, 1, 0), rule, tz) == local(tz, 2025, 6, 10, 3, 0)
    assert next_close(local(tz, 2025, 6, 10, 3, 1), rule, tz) == local(tz, 2025, 6, 11, 3, 0)
    assert next_close(local(tz, 2025, 6, 10, 23, 59), rule, tz) == local(tz, 2025, 6, 11, 3, 0)


@pytest.mark.parametrize("tz", [STHLM, NYC, UTC_ZONE], ids=str)
def test_strictly_after_a_boundary(tz: ZoneInfo) -> None:
    rule = Rule("daily", "22:15")
    boundary = local(tz, 2025, 1, 15, 22, 15)
    assert next_close(boundary - US, rule, tz) == boundary
    assert next_close(boundary, rule, tz) == local(tz, 2025, 1, 16, 22, 15)


def test_result_is_utc_and_the_config_model_is_a_rule() -> None:
    rule = AutoCloseConfig(period="daily", at="04:30")
    result = next_close(utc(2025, 1, 1, 12), rule, STHLM)
    assert result == utc(2025, 1, 2, 3, 30)
    assert result.utcoffset() == timedelta(0)
    # Any aware instant is accepted, not only UTC.
    assert next_close(datetime(2025, 1, 1, 13, tzinfo=STHLM), rule, STHLM) == result


def test_a_naive_instant_is_refused() -> None:
    with pytest.raises(ValueError, match="aware"):
        next_close(datetime(2025, 1, 1), Rule("daily", "03:00"), STHLM)


@pytest.mark.parametrize("value", ["3:00", "24:00", "0300", "ab:cd", ""])
def test_parse_clock_refuses(value: str) -> None:
    with pytest.raises(ValueError, match="HH:MM"):
        next_close(utc(2025, 1, 1), Rule("daily", value), STHLM)


def test_parse_clock() -> None:
    assert parse_clock("00:00").hour == 0
    assert parse_clock("23:59").minute == 59


def test_unknown_period() -> None:
    with pytest.raises(ValueError, match="period"):
        next_close(utc(2025, 1, 1), Rule("weekly", "03:00"), STHLM)


# -- DST: spring forward ----------------------------------------------------------------------

def test_stockholm_spring_gap_closes_when_the_clocks_go_forward() -> None:
    rule = Rule("daily", "02:30")  # 02:30 does not exist on 30 March 2025
    assert next_close(utc(2025, 3, 29, 12), rule, STHLM) == utc(2025, 3, 30, 1, 0)
    assert utc(2025, 3, 30, 1, 0).astimezone(STHLM).strftime("%H:%M %Z") == "03:00 CEST"
    # The day after is an ordinary day again, on summer time.
    assert next_close(utc(2025, 3, 30, 1, 0), rule, STHLM) == utc(2025, 3, 31, 0, 30)
    # The day before, on winter time.
    assert next_close(utc(2025, 3, 28, 12), rule, STHLM) == utc(2025, 3, 29, 1, 30)


def test_stockholm_gap_start_is_in_the_gap() -> None:
    # 02:00 itself is skipped (the clock goes 01:59:59 → 03:00:00).
    assert next_close(utc(2025, 3, 29, 12), Rule("daily", "02:00"), STHLM) == utc(2025, 3, 30, 1)
    # 03:00 exists: the first instant after the gap, the same as for 02:xx.
    assert next_close(utc(2025, 3, 29, 12), Rule("daily", "03:00"), STHLM) == utc(2025, 3, 30, 1)
    # 01:59 is before the gap.
    assert next_close(utc(2025, 3, 29, 12), Rule("daily", "01:59"), STHLM) == utc(
        2025, 3, 30, 0, 59)


def test_new_york_spring_gap() -> None:
    rule = Rule("daily", "02:30")
    assert next_close(utc(2025, 3, 8, 12), rule, NYC) == utc(2025, 3, 9, 7, 0)  # 03:00 EDT
    assert next_close(utc(2025, 3, 9, 7, 0), rule, NYC) == utc(2025, 3, 10, 6, 30)
    assert next_close(utc(2025, 3, 7, 12), rule, NYC) == utc(2025, 3, 8, 7, 30)  # EST


@pytest.mark.parametrize(("tz", "day"), [(STHLM, 30), (NYC, 9)], ids=["sthlm", "nyc"])
def test_spring_day_close_away_from_the_transition(tz: ZoneInfo, day: int) -> None:
    rule = Rule("daily", "21:00")
    before = next_close(local(tz, 2025, 3, day - 1, 12), rule, tz)
    on = next_close(before, rule, tz)
    assert on == local(tz, 2025, 3, day, 21)
    assert on.astimezone(tz).strftime("%H:%M") == "21:00"
    assert on - before == timedelta(hours=23)  # the day has an hour less


def test_spring_day_is_23_hours_between_boundaries() -> None:
    rule = Rule("daily", "00:30")
    first = next_close(utc(2025, 3, 29, 12), rule, STHLM)  # 30 March 00:30 CET
    second = next_close(first, rule, STHLM)  # 31 March 00:30 CEST
    assert second - first == timedelta(hours=23)
    nyc_first = next_close(utc(2025, 3, 8, 12), Rule("daily", "23:00"), NYC)  # 8 March EST
    nyc_second = next_close(nyc_first, Rule("daily", "23:00"), NYC)  # 9 March EDT
    assert nyc_second - nyc_first == timedelta(hours=23)


# -- DST: fall back ---------------------------------------------------------------------------

def test_stockholm_fall_back_closes_once_at_the_first_occurrence() -> None:
    rule = Rule("daily", "02:30")  # 02:30 happens twice on 26 October 2025
    first = next_close(utc(2025, 10, 25, 12), rule, STHLM)
    assert first == utc(2025, 10, 26, 0, 30)  # 02:30 CEST
    assert first.astimezone(STHLM).strftime("%H:%M %Z") == "02:30 CEST"
    # Not again at the second 02:30 (01:30 UTC, CET): next is the day after.
    assert next_close(first, rule, STHLM) == utc(2025, 10, 27, 1, 30)
    assert next_close(utc(2025, 10, 26, 1, 0), rule, STHLM) == utc(2025, 10, 27, 1, 30)
    assert last_close_due(first, utc(2025, 10, 26, 12), rule, STHLM) is None


def test_new_york_fall_back_closes_once() -> None:
    rule = Rule("daily", "01:30")  # 01:30 happens twice on 2 November 2025
    first = next_close(utc(2025, 11, 1, 12), rule, NYC)
    assert first == utc(2025, 11, 2, 5, 30)  # 01:30 EDT
    assert next_close(first, rule, NYC) == utc(2025, 11, 3, 6, 30)  # 01:30 EST, next day
    assert previous_close(utc(2025, 11, 2, 6, 45), rule, NYC) == first


@pytest.mark.parametrize(("tz", "day"), [(STHLM, 26), (NYC, 2)], ids=["sthlm", "nyc"])
def test_fall_day_close_away_from_the_transition(tz: ZoneInfo, day: int) -> None:
    month = 10 if tz is STHLM else 11
    rule = Rule("daily", "18:00")
    before = next_close(local(tz, 2025, month, day - 1, 12), rule, tz)
    on = next_close(before, rule, tz)
    assert on == local(tz, 2025, month, day, 18)
    assert on.astimezone(tz).strftime("%H:%M") == "18:00"
    assert on - before == timedelta(hours=25)  # the day has an hour more


# -- monthly and yearly -----------------------------------------------------------------------

@pytest.mark.parametrize("tz", [STHLM, NYC, UTC_ZONE], ids=str)
def test_monthly_on_the_first(tz: ZoneInfo) -> None:
    rule = Rule("monthly", "03:00")
    assert next_close(local(tz, 2025, 1, 31, 23), rule, tz) == local(tz, 2025, 2, 1, 3)
    assert next_close(local(tz, 2025, 2, 1, 3), rule, tz) == local(tz, 2025, 3, 1, 3)
    assert next_close(local(tz, 2025, 2, 1, 2, 59), rule, tz) == local(tz, 2025, 2, 1, 3)
    assert next_close(local(tz, 2025, 12, 31, 12), rule, tz) == local(tz, 2026, 1, 1, 3)
    # Month ends of every length, February of a leap year included.
    for year, month, last in [(2025, 4, 30), (2025, 8, 31), (2024, 2, 29), (2025, 2, 28)]:
        following = local(tz, year + month // 12, month % 12 + 1, 1, 3)
        assert next_close(local(tz, year, month, last, 12), rule, tz) == following


def test_monthly_skips_the_rest_of_the_month() -> None:
    rule = Rule("monthly", "00:00")
    assert next_close(utc(2025, 5, 1, 0, 0, 1), rule, UTC_ZONE) == utc(2025, 6, 1)
    assert next_close(utc(2025, 5, 15), rule, STHLM) == local(STHLM, 2025, 6, 1)


def test_monthly_in_summer_time_and_winter_time() -> None:
    rule = Rule("monthly", "06:00")
    assert next_close(utc(2025, 6, 15), rule, STHLM) == utc(2025, 7, 1, 4)  # CEST
    assert next_close(utc(2025, 11, 15), rule, STHLM) == utc(2025, 12, 1, 5)  # CET
    assert next_close(utc(2025, 10, 15), rule, NYC) == utc(2025, 11, 1, 10)  # still EDT
    assert next_close(utc(2025, 11, 1, 10), rule, NYC) == utc(2025, 12, 1, 11)  # EST


@pytest.mark.parametrize("tz", [STHLM, NYC, UTC_ZONE], ids=str)
def test_yearly_on_the_first_of_january(tz: ZoneInfo) -> None:
    rule = Rule("yearly", "00:00")
    assert next_close(local(tz, 2024, 2, 29, 12), rule, tz) == local(tz, 2025, 1, 1)
    assert next_close(local(tz, 2024, 12, 31, 23, 59), rule, tz) == local(tz, 2025, 1, 1)
    assert next_close(local(tz, 2025, 1, 1), rule, tz) == local(tz, 2026, 1, 1)
    # A leap year is a boundary like any other; its 366 days pass between two closes.
    first = next_close(local(tz, 2023, 6, 1), rule, tz)
    assert next_close(first, rule, tz) - first == timedelta(days=366)


def test_yearly_local_midnight_is_not_utc_midnight() -> None:
    rule = Rule("yearly", "00:00")
    assert next_close(utc(2025, 12, 31, 22, 59), rule, STHLM) == utc(2025, 12, 31, 23)
    assert next_close(utc(2025, 12, 31, 23, 30), rule, STHLM) == utc(2026, 12, 31, 23)
    assert next_close(utc(2026, 1, 1, 3), rule, NYC) == utc(2026, 1, 1, 5)


# -- catching up after a stop -----------------------------------------------------------------

def test_last_close_due_catches_the_boundary_missed() -> None:
    rule = Rule("daily", "03:00")
    opened = utc(2025, 6, 10, 8)  # 10:00 in Stockholm
    assert last_close_due(opened, utc(2025, 6, 11, 0, 59), rule, STHLM) is None
    assert last_close_due(opened, utc(2025, 6, 11, 1), rule, STHLM) == utc(2025, 6, 11, 1)
    # Stopped for days: the latest boundary, once.
    assert last_close_due(opened, utc(2025, 6, 14, 12), rule, STHLM) == utc(2025, 6, 14, 1)
    # Opened exactly at a boundary: that boundary is not due for it.
    assert last_close_due(utc(2025, 6, 11, 1), utc(2025, 6, 11, 23), rule, STHLM) is None


def test_last_close_due_monthly_and_yearly() -> None:
    assert last_close_due(utc(2025, 1, 20), utc(2025, 3, 15), Rule("monthly", "03:00"),
                          STHLM) == utc(2025, 3, 1, 2)
    assert last_close_due(utc(2025, 3, 2), utc(2025, 3, 31), Rule("monthly", "03:00"),
                          STHLM) is None
    assert last_close_due(utc(2023, 12, 1), utc(2025, 6, 1), Rule("yearly", "00:00"),
                          UTC_ZONE) == utc(2025, 1, 1)


def test_previous_close_in_a_gap_day() -> None:
    rule = Rule("daily", "02:30")
    assert previous_close(utc(2025, 3, 30, 1), rule, STHLM) == utc(2025, 3, 30, 1)
    assert previous_close(utc(2025, 3, 30, 1) - US, rule, STHLM) == utc(2025, 3, 29, 1, 30)


# -- business days ----------------------------------------------------------------------------

def test_business_date_around_midnight() -> None:
    assert business_date(local(STHLM, 2025, 6, 10, 23, 59), STHLM, "00:00") == date(2025, 6, 10)
    assert business_date(local(STHLM, 2025, 6, 11, 0, 0), STHLM, "00:00") == date(2025, 6, 11)
    # UTC's date is not the store's.
    assert business_date(utc(2025, 6, 10, 22, 30), STHLM, "00:00") == date(2025, 6, 11)
    assert business_date(utc(2025, 6, 11, 2, 30), NYC, "00:00") == date(2025, 6, 10)


def test_business_date_with_a_late_day_start() -> None:
    assert business_date(local(STHLM, 2025, 6, 11, 1, 30), STHLM, "04:00") == date(2025, 6, 10)
    assert business_date(local(STHLM, 2025, 6, 11, 3, 59), STHLM, "04:00") == date(2025, 6, 10)
    assert business_date(local(STHLM, 2025, 6, 11, 4, 0), STHLM, "04:00") == date(2025, 6, 11)
    assert business_date(local(STHLM, 2025, 1, 1, 2), STHLM, "04:00") == date(2024, 12, 31)
    assert business_date(local(STHLM, 2024, 3, 1, 2), STHLM, "04:00") == date(2024, 2, 29)


def test_business_date_on_dst_days() -> None:
    # Day start 02:30 in the spring gap: from the first instant after it (03:00 CEST).
    assert business_date(utc(2025, 3, 30, 0, 59), STHLM, "02:30") == date(2025, 3, 29)
    assert business_date(utc(2025, 3, 30, 1), STHLM, "02:30") == date(2025, 3, 30)
    # Fall back: both 02:45s are after a 02:30 day start.
    assert business_date(utc(2025, 10, 26, 0, 45), STHLM, "02:30") == date(2025, 10, 26)
    assert business_date(utc(2025, 10, 26, 1, 45), STHLM, "02:30") == date(2025, 10, 26)


def test_closed_period_date_is_the_day_that_ended() -> None:
    # A daily close at the start of the business day belongs to the day before.
    assert closed_period_date(local(STHLM, 2025, 6, 11, 4), STHLM, "04:00") == date(2025, 6, 10)
    # A monthly close at midnight: the last day of the month.
    assert closed_period_date(local(STHLM, 2024, 3, 1), STHLM, "00:00") == date(2024, 2, 29)
    assert closed_period_date(local(NYC, 2026, 1, 1), NYC, "00:00") == date(2025, 12, 31)


# -- properties ---------------------------------------------------------------------------------

ZONES = st.sampled_from([STHLM, NYC, UTC_ZONE, ZoneInfo("Australia/Lord_Howe"),
                         ZoneInfo("America/Santiago"), ZoneInfo("Asia/Kolkata")])
RULES = st.builds(Rule, st.sampled_from(["daily", "monthly", "yearly"]),
                  st.builds(lambda h, m: f"{h:02d}:{m:02d}",
                            st.one_of(st.integers(0, 23), st.sampled_from([0, 1, 2, 3])),
                            st.sampled_from([0, 1, 15, 30, 59])))
ANY_INSTANT = st.datetimes(min_value=datetime(2000, 1, 1),
                           max_value=datetime(2060, 1, 1), timezones=st.just(UTC))


def _transitions(tz: ZoneInfo, year: int) -> list[datetime]:
    """The instants (to the hour) around which ``tz`` changes its offset in ``year``."""
    found, hour = [], datetime(year, 1, 1, tzinfo=UTC)
    while hour.year == year:
        if (hour + timedelta(hours=1)).astimezone(tz).utcoffset() != hour.astimezone(
                tz).utcoffset():
            found.append(hour)
        hour += timedelta(hours=1)
    return found


TRANSITION_ZONES = (STHLM, NYC, ZoneInfo("Australia/Lord_Howe"), ZoneInfo("America/Santiago"))
NEAR_TRANSITIONS = [(tz, t) for tz in TRANSITION_ZONES for year in (2024, 2025)
                    for t in _transitions(tz, year)]


@st.composite
def dst_cases(draw: st.DrawFn) -> tuple[datetime, Rule, ZoneInfo]:
    """A daily close at a wall time within 90 minutes of a DST change, from a few days before
    it: where the gaps and the repeated times are."""
    tz, hour = draw(st.sampled_from(NEAR_TRANSITIONS))
    # On the naive wall clock: the times inside a gap are never an instant's local time.
    wall = hour.astimezone(tz).replace(tzinfo=None) + timedelta(
        minutes=draw(st.integers(-90, 150)))
    after = hour - timedelta(seconds=draw(st.integers(-3600, 3 * 86400)))
    return after, Rule("daily", wall.strftime("%H:%M")), tz


CASES = st.one_of(st.tuples(ANY_INSTANT, RULES, ZONES), dst_cases())


def _exists(day: date, at: str, tz: ZoneInfo) -> bool:
    wall = datetime.combine(day, parse_clock(at))
    return wall.replace(tzinfo=tz).astimezone(UTC).astimezone(tz).replace(tzinfo=None) == wall


@settings(max_examples=500)
@given(case=CASES)
def test_next_close_properties(case: tuple[datetime, Rule, ZoneInfo]) -> None:
    after, rule, tz = case
    result = next_close(after, rule, tz)
    assert result > after
    assert result.utcoffset() == timedelta(0)
    wall = result.astimezone(tz)
    if wall.strftime("%H:%M") != rule.at:
        # Only on a day the time does not exist: then the close is where the gap ends, on the
        # boundary day, later than the configured time.
        event("in a gap")
        assert not _exists(wall.date(), rule.at, tz)
        assert wall.time() > parse_clock(rule.at)
        assert (result - timedelta(seconds=1)).astimezone(tz).utcoffset() != wall.utcoffset()
    else:
        assert wall.fold == 0  # the first occurrence of a repeated time
        if wall.replace(fold=1).utcoffset() != wall.utcoffset():
            event("a repeated time")
    if rule.period != "daily":
        assert wall.day == 1
    if rule.period == "yearly":
        assert wall.month == 1
    # No boundary skipped: just before the result, the result is next, and none was due
    # between ``after`` and it.
    assert next_close(result - US, rule, tz) == result
    assert last_close_due(after, result - US, rule, tz) is None
    assert last_close_due(after, result, rule, tz) == result
    assert previous_close(result, rule, tz) == result


@given(instant=ANY_INSTANT, tz=ZONES, start=st.sampled_from(["00:00", "04:00", "02:30", "23:59"]))
def test_business_date_is_the_local_date_or_the_day_before(instant: datetime, tz: ZoneInfo,
                                                           start: str) -> None:
    day = business_date(instant, tz, start)
    assert day in (instant.astimezone(tz).date(), instant.astimezone(tz).date() - timedelta(1))
    # Monotonic: an instant a day later is a business day later.
    later = business_date(instant + timedelta(days=1), tz, start)
    assert later >= day
