"""The store's views as pure functions: money stays integer, CSV is safe to open, ranges read."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime
from typing import Any, ClassVar

import pytest

from kassad.daemon.store import views
from kassad.daemon.store.storage.base import Alarm, SessionRow


def row(sid: str, opened: str, start: dict[str, int], end: dict[str, int], *,
        register: str = "R1", gross: dict[str, int] | None = None,
        summary: dict[str, Any] | None = None) -> SessionRow:
    return SessionRow(store="S1", register=register, session_id=sid, number=1, status="closed",
                      opened_at=opened, closed_at=None, opened_by="=cmd()", closed_by=None,
                      discrepancy_start=start, discrepancy_end=end, cash_gross=gross or {},
                      cash_refunds={}, summary=summary or {})


def system_closed(sid: str, opened: str, start: dict[str, int]) -> SessionRow:
    """Closed by the system (auto-close): the fold's summary has no counted cash."""
    return row(sid, opened, start, {}, summary={
        "status": "closed", "system_close": True, "counted": None, "discrepancy": None,
        "expected": {"SEK": 20_000}, "left_in_drawer": {"SEK": 20_000}, "removed": {"SEK": 0},
        "reason": "auto_close", "due_at": "2024-05-01T22:00:00Z"})


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
                        "training,currency,start_minor,start,end_minor,end,total_minor,total")
    # JPY has no minor digits; XTS is not an ISO 4217 cash currency: minor units only.
    assert "session,S1,R2,b,1,closed,2024-05-01T09:00:00Z,,false,JPY,0,0,7,7,7,7" in lines
    assert "total,,,,,,,,,XTS,0,,3,,3," in lines
    assert "total,,,,,,,,,SEK,-500,-5.00,200,2.00,-300,-3.00" in lines


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
        "S1,R1,e,1,open,2024-05-01T08:00:00Z,,false,'=cmd(),,,,,,,,")
    detail = views.session_detail(empty)
    assert detail["counted"] is None and detail["starting_float"] == {}
    assert detail["adjustments"] == [] and detail["details"] == {}
    assert detail["balances"] == {} and detail["rounding"] == {} and detail["z_number"] is None
    assert detail["training"] is False and detail["system_close"] is None
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


def test_training_sessions_are_listed_and_never_totalled() -> None:
    real = row("a", "2024-05-01T08:00:00Z", {"SEK": -500}, {"SEK": 200}, gross={"SEK": 1_000},
               summary={"training": False, "cash_sales_count": 1})
    training = row("t", "2024-05-01T09:00:00Z", {}, {"SEK": -900, "EUR": 5},
                   gross={"SEK": 7_000, "EUR": 100},
                   summary={"training": True, "cash_sales_count": 3})
    disc = views.discrepancy_summary([real, training])
    assert [(s["session_id"], s["training"]) for s in disc["sessions"]] == [
        ("a", False), ("t", True)]
    assert disc["sessions"][1]["total"] == {"EUR": 5, "SEK": -900}  # shown as it is
    # Totals: the real session alone, not even a zero for the training's EUR.
    assert disc["totals"] == {"start": {"SEK": -500}, "end": {"SEK": 200},
                              "total": {"SEK": -300}}
    assert disc["training_sessions"] == 1 and disc["sessions_without_count"] == 0
    assert disc["currencies"] == {"EUR": 2, "SEK": 2}  # digits of what the rows show
    lines = views.discrepancies_csv(disc).split("\r\n")
    assert [line for line in lines if line.startswith("total")] == [
        "total,,,,,,,,,SEK,-500,-5.00,200,2.00,-300,-3.00"]
    assert "session,S1,R1,t,1,closed,2024-05-01T09:00:00Z,,true,EUR,0,0.00,5,0.05,5,0.05" in lines

    cash = views.cash_summary([real, training])
    assert cash["totals"] == {"sessions": 1, "training_sessions": 1, "gross": {"SEK": 1_000},
                              "refunds": {"SEK": 0}, "net": {"SEK": 1_000},
                              "cash_sales_count": 1, "cash_refunds_count": 0}
    assert cash["registers"][0]["gross"] == {"SEK": 1_000}
    assert cash["currencies"] == {"SEK": 2}
    text = views.cash_csv(cash)
    assert text.split("\r\n")[0].startswith("row_type,store,register,sessions,training_sessions,")
    assert "total,,,1,1,1,0,SEK,1000,10.00,0,0.00,1000,10.00\r\n" in text
    assert "EUR" not in text and "7000" not in text

    listed = views.session_list([real, training])
    assert [s["training"] for s in listed["sessions"]] == [False, True]
    assert ",true,'=cmd()," in views.sessions_csv(listed)  # the flag, then quoted text
    pick = [real, training]
    assert views.filter_training(pick, "include") == pick
    assert views.filter_training(pick, "exclude") == [real]
    assert views.filter_training(pick, "only") == [training]


def test_a_close_nobody_counted_has_no_discrepancy_at_end() -> None:
    counted = row("a", "2024-05-01T08:00:00Z", {"SEK": -100}, {"SEK": 300})
    auto = system_closed("s", "2024-05-02T08:00:00Z", {"SEK": -50})
    disc = views.discrepancy_summary([counted, auto])
    mine = disc["sessions"][1]
    assert (mine["start"], mine["end"], mine["total"]) == ({"SEK": -50}, None, {"SEK": -50})
    # Its start is known and counts; its end is unknown, left out, and the view says so.
    assert disc["totals"] == {"start": {"SEK": -150}, "end": {"SEK": 300},
                              "total": {"SEK": 150}}
    assert disc["sessions_without_count"] == 1 and disc["training_sessions"] == 0
    assert "session,S1,R1,s,1,closed,2024-05-02T08:00:00Z,,false,SEK,-50,-0.50,,,-50,-0.50" in (
        views.discrepancies_csv(disc).split("\r\n"))
    listed = views.session_list([auto])["sessions"][0]
    assert (listed["discrepancy_end"], listed["discrepancy"]) == (None, {"SEK": -50})
    assert views.sessions_csv(views.session_list([auto])).endswith(
        ",SEK,-50,-0.50,,,-50,-0.50\r\n")

    detail = views.session_detail(auto)
    assert detail["system_close"] is True
    assert detail["counted"] is None and detail["discrepancy"] is None  # not {} nor zeros
    assert detail["expected"] == {"SEK": 20_000} and detail["removed"] == {"SEK": 0}
    assert detail["details"] == {"reason": "auto_close", "due_at": "2024-05-01T22:00:00Z"}
    # Corrected later: counted, so its discrepancy counts again.
    fixed = replace(auto, discrepancy_end={"SEK": -200}, summary={
        **auto.summary, "counted": {"SEK": 19_800}, "discrepancy": {"SEK": -200}})
    again = views.discrepancy_summary([fixed])
    assert again["totals"]["end"] == {"SEK": -200} and again["sessions_without_count"] == 0
    # An open session is not "without count": its end is zeros until it closes.
    still_open = replace(row("o", "2024-05-03T08:00:00Z", {}, {}), status="open",
                         summary={"status": "open"})
    assert views.discrepancy_summary([still_open])["sessions_without_count"] == 0
    assert views.session_detail(still_open)["counted"] is None


def test_balances_approval_and_corrections_in_the_detail() -> None:
    summary: dict[str, Any] = {
        "training": False, "rounding": {"SEK": -49}, "no_sale_openings": 2,
        "balances": {
            "cash": {"opening": {"SEK": 10_000}, "payments": {"SEK": 9_951}, "deposits": {},
                     "withdrawals": {"SEK": 500}, "balance": {"SEK": 19_451}},
            "gift_card": {"opening": {"EUR": 300}, "payments": {"EUR": 700},
                          "balance": {"EUR": 1_000}}},  # parts it lacks are empty
        "reports": {"x_printed": 2, "z_number": 7, "z_copies": 1}, "recount_attempts": 1,
        "counted": {"SEK": 19_400}, "discrepancy": {"SEK": -51}, "expected": {"SEK": 19_451},
        "left_in_drawer": {"SEK": 10_000}, "removed": {"SEK": 9_400}, "system_close": False,
        "approval": {"employee": "mia", "role": "manager", "reason": "coins missing"},
        "recounts": 1,
        "corrections": [{"ts": "2024-05-01T18:00:00Z", "employee": "bo",
                         "approval": {"employee": "mia", "role": "manager", "reason": "found"},
                         "counted_before": {"SEK": 19_300}, "counted": {"SEK": 19_400}}]}
    detail = views.session_detail(row("c", "2024-05-01T08:00:00Z", {}, {"SEK": -51},
                                      summary=summary))
    assert detail["balances"]["cash"] == summary["balances"]["cash"]
    assert detail["balances"]["gift_card"] == {
        "opening": {"EUR": 300}, "payments": {"EUR": 700}, "deposits": {}, "withdrawals": {},
        "balance": {"EUR": 1_000}}
    assert (detail["rounding"], detail["no_sale_openings"], detail["z_number"],
            detail["x_printed"], detail["z_copies"]) == ({"SEK": -49}, 2, 7, 2, 1)
    assert detail["approval"] == summary["approval"] and detail["recounts"] == 1
    assert detail["corrections"] == summary["corrections"]
    assert detail["currencies"] == {"EUR": 2, "SEK": 2}  # the gift card's EUR too
    assert detail["details"] == {}
    for bad in ({"cash": {"balance": {"SEK": 1.5}}}, {"cash": [1]}, ["cash"]):
        with pytest.raises(views.ViewError):
            views.session_detail(row("c", "2024-05-01T08:00:00Z", {}, {},
                                     summary={**summary, "balances": bad}))
    with pytest.raises(views.ViewError, match=r"corrections\.counted"):
        views.session_detail(row("c", "2024-05-01T08:00:00Z", {}, {}, summary={
            **summary, "corrections": [{**summary["corrections"][0],
                                        "counted": {"SEK": "19400"}}]}))


def test_device_alarms_printer_offline_when_connected_but_offline() -> None:
    """A printer taken offline (connected, nothing else wrong) prints nothing: the store shows
    it, as it shows one that is gone; its own reasons (paper, cover, error) are shown as such."""
    from kassad.daemon.store.service import device_alarms

    def printer(**status: object) -> dict[str, object]:
        return {"devices": {"printer": {"configured": True, "connected": True, "online": True,
                                        "cover_open": False, "paper": "ok", "error": False,
                                        "state": "ready", **status}}}

    assert device_alarms(printer()) == []
    assert device_alarms(printer(online=False, state="not_ready")) == ["printer_offline"]
    assert device_alarms(printer(connected=False)) == ["printer_offline"]
    assert device_alarms(printer(online=False, state="not_ready", paper="out")) == ["paper_out"]
    assert device_alarms(printer(online=False, state="not_ready", cover_open=True)) == [
        "cover_open"]
    assert device_alarms(printer(online=False, state="not_ready", error=True)) == [
        "printer_error"]


def test_device_alarms_drawer_offline_when_its_sensor_is_unknown_or_its_box_gone() -> None:
    """A drawer whose sensor cannot be read (its box silent or unplugged, or the printer it
    hangs on gone) is shown: nobody knows whether it is open."""
    from kassad.daemon.store.service import device_alarms

    def drawer(**state: object) -> dict[str, object]:
        return {"devices": {"drawer": {"configured": True, "connected": True,
                                       "state": "closed", **state}}}

    assert device_alarms(drawer()) == []
    assert device_alarms(drawer(state="open")) == ["drawer_open"]
    assert device_alarms(drawer(state="unknown")) == ["drawer_offline"]
    assert device_alarms(drawer(connected=False, state="unknown")) == ["drawer_offline"]
    assert device_alarms({"devices": {"drawer": {"configured": False,
                                                 "state": "unavailable"}}}) == []


class _Watched(dict[str, Any]):
    """A summary that notes which of its keys are read."""

    read: ClassVar[set[str]] = set()

    def __getitem__(self, key: str) -> Any:
        _Watched.read.add(key)
        return super().__getitem__(key)

    def get(self, key: str, default: Any = None) -> Any:
        _Watched.read.add(key)
        return super().get(key, default)

    def __contains__(self, key: object) -> bool:
        _Watched.read.add(str(key))
        return super().__contains__(key)


def test_list_views_read_only_the_summary_keys_the_storage_loads_for_them() -> None:
    """The list views get rows with only views.LIST_SUMMARY_KEYS of each summary (cut out by
    the storage): they read no other key, and show the same as with the whole summary."""
    full_summary = {
        "status": "closed", "training": False, "counted": {"SEK": 9_000}, "automatic": False,
        "starting_float": {"SEK": 10_000, "EUR": 500}, "expected_cash": {"SEK": 9_500},
        "cash_sales_count": 2, "cash_refunds_count": 1, "adjustments": [], "balances": {},
        "payments_by_type": {"cash": {"SEK": 1_000}}, "reports": {"z_number": 4}}
    rows = [
        row("a", "2024-05-01T08:00:00Z", {"SEK": -100}, {"SEK": 50}, gross={"SEK": 1_000},
            summary=full_summary),
        row("t", "2024-05-01T09:00:00Z", {}, {"SEK": -500}, register="R2",
            summary={**full_summary, "training": True}),
        system_closed("s", "2024-05-01T10:00:00Z", {"SEK": 200}),
        replace(row("o", "2024-05-01T11:00:00Z", {}, {}, summary={
            "status": "open", "starting_float": {"JPY": 100}, "cash_sales_count": 1}),
            status="open"),
    ]
    cut = [replace(r, summary=_Watched({k: v for k, v in r.summary.items()
                                        if k in views.LIST_SUMMARY_KEYS})) for r in rows]
    _Watched.read = set()
    for order in (False, True):
        for training in ("include", "exclude", "only"):
            for shown, ordered in ((rows, cut), (views.order_by_discrepancy(rows, order),
                                                 views.order_by_discrepancy(cut, order))):
                whole = views.filter_training(shown, training)
                part = views.filter_training(ordered, training)
                assert views.session_list(part) == views.session_list(whole)
                assert views.discrepancy_summary(part) == views.discrepancy_summary(whole)
                assert views.cash_summary(part) == views.cash_summary(whole)
    assert _Watched.read and _Watched.read <= set(views.LIST_SUMMARY_KEYS)
