"""The store's views as pure functions: money stays integer, CSV is safe to open, ranges read."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime

import pytest

from kassad.daemon.store import views
from kassad.daemon.store.storage.base import Alarm, SessionRow


def row(sid: str, opened: str, start: dict[str, int], end: dict[str, int], *,
        register: str = "R1", gross: dict[str, int] | None = None) -> SessionRow:
    return SessionRow(store="S1", register=register, session_id=sid, number=1, status="closed",
                      opened_at=opened, closed_at=None, opened_by="=cmd()", closed_by=None,
                      discrepancy_start=start, discrepancy_end=end, cash_gross=gross or {},
                      cash_refunds={}, summary={})


def test_only_integer_minor_units_are_money() -> None:
    assert views.totals({"SEK": -150}) == {"SEK": -150}
    assert views.totals(None) == {}
    for bad in ({"SEK": 1.5}, {"SEK": True}, {"SEK": "1.50"}, [1, 2]):
        with pytest.raises(views.ViewError, match="minor units"):
            views.totals(bad)
    with pytest.raises(views.ViewError):
        views.discrepancy_summary([row("a", "2024-05-01T08:00:00Z", {}, {"SEK": -1.5})])  # type: ignore[dict-item]


def test_totals_and_currencies_across_sessions() -> None:
    rows = [row("a", "2024-05-01T08:00:00Z", {"SEK": -500}, {"SEK": 200}),
            row("b", "2024-05-01T09:00:00Z", {}, {"JPY": 7, "XTS": 3}, register="R2")]
    view = views.discrepancy_summary(rows)
    assert view["sessions"][0]["total"] == {"SEK": -300}
    assert view["sessions"][1]["start"] == {"JPY": 0, "XTS": 0}
    assert view["totals"]["total"] == {"JPY": 7, "SEK": -300, "XTS": 3}
    assert view["currencies"] == {"JPY": 0, "SEK": 2, "XTS": None}
    text = views.discrepancies_csv(view)
    lines = text.split("\r\n")
    assert lines[0] == ("row_type,store,register,session_id,number,status,opened_at,closed_at,"
                        "currency,start_minor,start,end_minor,end,total_minor,total")
    # JPY has no minor digits; XTS is not an ISO 4217 cash currency: minor units only.
    assert "session,S1,R2,b,1,closed,2024-05-01T09:00:00Z,,JPY,0,0,7,7,7,7" in lines
    assert "total,,,,,,,,XTS,0,,3,,3," in lines
    assert "total,,,,,,,,SEK,-500,-5.00,200,2.00,-300,-3.00" in lines


def test_csv_text_cannot_become_a_formula() -> None:
    view = views.session_list([row("@x", "2024-05-01T08:00:00Z", {}, {"SEK": -150})])
    text = views.sessions_csv(view)
    assert "'@x" in text and "'=cmd()" in text
    assert ",SEK,0,0.00,-150,-1.50,-150,-1.50\r\n" in text  # numbers stay numbers
    alarms = views.alarms_csv(views.alarms_view([Alarm("2024-05-01T08:00:00Z", "S1", None,
                                                       "+kind", {"a": "ö"})]))
    assert alarms.split("\r\n")[1] == '2024-05-01T08:00:00Z,S1,,\'+kind,"{""a"":""ö""}"'


def test_a_session_without_figures_still_has_its_row() -> None:
    empty = replace(row("e", "2024-05-01T08:00:00Z", {}, {}), status="open")
    assert views.sessions_csv(views.session_list([empty])).split("\r\n")[1] == (
        "S1,R1,e,1,open,2024-05-01T08:00:00Z,,'=cmd(),,,,,,,,")
    detail = views.session_detail(empty)
    assert detail["counted"] is None and detail["starting_float"] == {}
    assert detail["adjustments"] == [] and detail["details"] == {}
    cash = views.cash_summary([empty])
    assert cash["totals"]["gross"] == {} and cash["registers"][0]["sessions"] == 1


def test_order_by_discrepancy_is_stable_and_reversible() -> None:
    rows = [row("a", "1", {"SEK": -500}, {"SEK": 500}), row("b", "2", {}, {"SEK": 150}),
            row("c", "3", {}, {}), row("d", "4", {"EUR": 100}, {"SEK": -100})]
    up = [r.session_id for r in views.order_by_discrepancy(rows, descending=False)]
    down = [r.session_id for r in views.order_by_discrepancy(rows[::-1], descending=True)]
    assert up == ["a", "c", "b", "d"] and down == up[::-1]


def test_ranges() -> None:
    day = views.parse_range("2024-03-31", "2024-03-31", "Europe/Stockholm")  # DST starts
    assert day.start == datetime(2024, 3, 30, 23, tzinfo=UTC)
    assert day.end == datetime(2024, 3, 31, 22, tzinfo=UTC)  # a 23-hour day
    assert day.contains("2024-03-31T21:59:59Z") and not day.contains("2024-03-31T22:00:00Z")
    assert not day.contains("garbage") and not day.contains("2024-03-31T12:00:00")
    assert day.stamp() == "20240330T230000Z_20240331T220000Z"
    assert views.parse_range(None, None).stamp() == "all_all"
    assert views.parse_range("2024-05-01t10:00:00+02:00", None).start == datetime(
        2024, 5, 1, 8, tzinfo=UTC)
    for args, field in [(("9999-12-31", "9999-12-31"), "to"), (("x", None), "from"),
                        ((None, None, "Nowhere/City"), "tz"), (("2024-05-02", "2024-05-01"), "to")]:
        with pytest.raises(views.RangeError) as info:
            views.parse_range(*args)
        assert info.value.field == field
