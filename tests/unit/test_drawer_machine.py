"""The drawer state machine: kicks, sensor readings and time in; events and re-kicks out."""

import pytest

from kassad.drivers.drawer.machine import (
    DrawerMachine,
    DrawerState,
    DrawerTimings,
    KickAgain,
    sensor_is_open,
)

T = DrawerTimings(open_timeout=1.0, kick_retries=1, left_open_after=30.0)


def types(events):
    return [e.type for e in events]


def closed_machine():
    m = DrawerMachine(T)
    assert m.sensor(0.0, False) == []
    assert m.state is DrawerState.CLOSED
    return m


def test_kick_open_close_carries_the_cause():
    m = closed_machine()
    assert types(m.kicked(1.0, "sale", {"cmd_id": "c1"})) == ["drawer.kicked"]
    assert m.state is DrawerState.KICKED
    opened = m.sensor(1.2, True)
    assert types(opened) == ["drawer.opened"]
    assert opened[0].data == {"cause": "sale", "attempt": 1, "cmd_id": "c1"}
    assert m.sensor(1.3, True) == []  # repeated readings say nothing new
    closed = m.sensor(5.2, False)
    assert types(closed) == ["drawer.closed"]
    assert closed[0].data == {"open_seconds": 4.0, "cause": "sale"}
    assert m.state is DrawerState.CLOSED


def test_opening_without_a_kick_is_unexpected():
    m = closed_machine()
    events = m.sensor(3.0, True)
    assert types(events) == ["drawer.unexpected_open", "drawer.opened"]
    assert events[1].data["cause"] == "unexpected"


def test_found_open_at_start_is_not_unexpected():
    m = DrawerMachine(T)
    events = m.sensor(0.0, True)
    assert [(e.type, e.data["cause"]) for e in events] == [("drawer.opened", "found_open")]


def test_kick_that_does_not_open_is_retried_then_failed():
    m = closed_machine()
    m.kicked(10.0, "no_sale", {"cmd_id": "c2"})
    assert m.tick(10.5) == ([], None)
    assert m.next_deadline() == 11.0
    events, again = m.tick(11.0)
    assert events == [] and again == KickAgain(2)
    assert types(m.kicked_again(11.0, 2)) == ["drawer.kicked"]
    events, again = m.tick(12.0)
    assert again is None
    assert types(events) == ["drawer.kick_failed"]
    assert events[0].data == {"cause": "no_sale", "attempts": 2, "waited_seconds": 1.0,
                              "cmd_id": "c2"}
    assert m.state is DrawerState.CLOSED
    # A later opening is not blamed on the failed kick.
    assert types(m.sensor(20.0, True)) == ["drawer.unexpected_open", "drawer.opened"]


def test_left_open_alarm_once_per_opening():
    m = closed_machine()
    m.kicked(0.0, "sale")
    m.sensor(0.1, True)
    assert m.next_deadline() == pytest.approx(30.1)
    assert m.tick(20.0) == ([], None)
    events, _ = m.tick(30.1)
    assert types(events) == ["drawer.left_open"]
    assert m.tick(90.0) == ([], None)
    m.sensor(91.0, False)
    m.sensor(92.0, True)
    assert types(m.tick(122.0)[0]) == ["drawer.left_open"]


def test_kicking_an_open_drawer_leaves_it_open_and_pending_nothing():
    m = closed_machine()
    m.sensor(1.0, True)
    m.kicked(2.0, "sale")
    assert m.state is DrawerState.OPEN
    assert m.tick(10.0) == ([], None)


def test_sensor_lost_then_found_closed():
    m = closed_machine()
    m.sensor_lost()
    assert m.state is DrawerState.UNKNOWN
    assert m.sensor(5.0, False) == []
    assert m.state is DrawerState.CLOSED


@pytest.mark.parametrize(("pin3_high", "level", "is_open"), [
    (True, "high", True), (False, "high", False), (True, "low", False), (False, "low", True)])
def test_open_level(pin3_high, level, is_open):
    assert sensor_is_open(pin3_high, level) is is_open


def test_bad_settings_refused():
    with pytest.raises(ValueError):
        sensor_is_open(True, "sideways")
    with pytest.raises(ValueError):
        DrawerTimings(open_timeout=0)
