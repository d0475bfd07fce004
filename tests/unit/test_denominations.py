"""Counts by denomination: opening and closing counts, the drawer's inventory through payments,
low change warnings, counter runs beside a person's count."""

import pytest

from kassad.daemon.config import MoneyConfig
from kassad.daemon.contract.commands import (
    PaymentRecordParams,
    SessionAdjustParams,
    SessionCloseParams,
    SessionOpenParams,
)
from kassad.daemon.contract.errors import CommandRefused, ErrorCode
from kassad.daemon.ledger import rules
from kassad.daemon.ledger.denominations import DEFAULT_DENOMINATIONS, CountError, check_count
from kassad.daemon.ledger.rules import MoneyPolicy
from kassad.daemon.ledger.session import LedgerEvent, LedgerState, apply

POLICY = MoneyPolicy("SEK", frozenset({"SEK", "EUR"}), 10**10, dict(DEFAULT_DENOMINATIONS), 3)


def sek(**values):
    return {"currency": "SEK", **values}


def run(state, events, employee="e1"):
    for e in events:
        apply(state, LedgerEvent(e.type, e.session_id, "2026-11-25T10:00:00.000Z", employee,
                                 e.data))
    return events


def opened(counts):
    state = LedgerState()
    run(state, rules.plan_open(state, POLICY, SessionOpenParams.model_validate(
        {"starting_float": sek(counts=counts)}), "s1"))
    return state


def test_built_in_sets():
    sek_values = [(d.value, d.kind) for d in DEFAULT_DENOMINATIONS["SEK"]]
    assert sek_values[:4] == [(100, "coin"), (200, "coin"), (500, "coin"), (1000, "coin")]
    assert (100000, "note") in sek_values
    assert {d.value for d in DEFAULT_DENOMINATIONS["EUR"]} >= {1, 2, 5, 200, 50000}
    assert set(DEFAULT_DENOMINATIONS) == {"SEK", "EUR", "USD", "GBP", "NOK", "DKK", "CHF"}


def test_unknown_denomination_is_named():
    with pytest.raises(CountError, match=r"SEK has no 0\.50 SEK"):
        check_count("SEK", {50: 2}, DEFAULT_DENOMINATIONS["SEK"])


def test_configured_set_replaces_the_built_in_one():
    config = MoneyConfig(accepted=["SEK"], denominations={
        "SEK": [{"value": 100, "kind": "coin"}, {"value": 50000, "kind": "note"}]})
    assert [d.value for d in config.denomination_sets()["SEK"]] == [100, 50000]
    assert len(config.denomination_sets()["EUR"]) == 15


def test_open_by_denomination_sets_float_and_inventory():
    state = opened({"10000": 5, "2000": 10, "1000": 20, "500": 10})
    session = state.open_session
    assert session.starting_float == {"SEK": 50000 + 20000 + 20000 + 5000}
    assert session.inventory["SEK"] == {500: 10, 1000: 20, 2000: 10, 10000: 5}


def test_inventory_follows_sales_and_warns_of_low_change():
    state = opened({"10000": 1, "2000": 4, "1000": 4})
    events = rules.plan_payment(state, POLICY, PaymentRecordParams.model_validate({
        "kind": "cash_sale", "tendered": sek(amount=20000), "change": sek(amount=5000),
        "tendered_counts": {"20000": 1}, "change_counts": {"2000": 2, "1000": 1}}), "x")
    # Below 3 pieces is low: two 20.00 notes are left, three 10.00 coins are not low yet.
    assert events[-1].data["low_change"] == [{"currency": "SEK", "value": 2000, "pieces": 2}]
    run(state, events)
    assert state.open_session.inventory["SEK"] == {1000: 3, 2000: 2, 10000: 1, 20000: 1}


def test_change_the_drawer_does_not_hold_is_refused():
    state = opened({"2000": 1})
    with pytest.raises(CommandRefused) as caught:
        rules.plan_payment(state, POLICY, PaymentRecordParams.model_validate({
            "kind": "cash_sale", "tendered": sek(amount=10000), "change": sek(amount=4000),
            "tendered_counts": {"10000": 1}, "change_counts": {"2000": 2}}), "x")
    assert caught.value.code is ErrorCode.AMOUNT_OUT_OF_RANGE
    assert "1 × 20.00 SEK" in caught.value.message


def test_pieces_that_do_not_add_up_are_refused():
    state = opened({"2000": 5})
    with pytest.raises(CommandRefused) as caught:
        rules.plan_payment(state, POLICY, PaymentRecordParams.model_validate({
            "kind": "cash_sale", "tendered": sek(amount=10000),
            "tendered_counts": {"5000": 1}}), "x")
    assert "tendered_counts" in caught.value.message


def test_a_movement_without_pieces_drops_the_inventory():
    state = opened({"2000": 5})
    run(state, rules.plan_adjust(state, POLICY, SessionAdjustParams.model_validate(
        {"direction": "add", "amount": sek(amount=1000)})))
    assert "SEK" not in state.open_session.inventory


def test_close_with_counts_and_a_counter_run_beside_a_persons_count():
    state = opened({"2000": 5})
    run(state, [rules.PlannedEvent("counter.counted", "s1", {
        "device": "coins", "run_id": "r1", "counts": {"SEK": {"2000": 4, "1000": 1}}})])
    close = rules.plan_close(state, POLICY, SessionCloseParams.model_validate(
        {"counted": sek(counts={"2000": 5}), "leave_in_drawer": sek(counts={"2000": 2})}))
    data = close[0].data
    assert data["counted"] == {"SEK": 10000}
    assert data["counted_by"] == {"SEK": "person"}
    assert data["counter_counted"] == {"SEK": 9000}
    assert data["person_minus_counter"] == {"SEK": 1000}
    run(state, close)
    assert state.last_closed.summary()["counts"] == {"SEK": {"2000": 5}}
    # The next automatic session starts with the pieces left.
    auto = rules.plan_payment(state, POLICY, PaymentRecordParams.model_validate(
        {"kind": "cash_sale", "tendered": sek(amount=2000)}), "s2")
    assert auto[0].data["counts"] == {"SEK": {"2000": 2}}


def test_close_from_counter_uses_its_last_run():
    state = opened({"2000": 5})
    run(state, [rules.PlannedEvent("counter.counted", "s1", {
        "device": "coins", "run_id": "r1", "counts": {"SEK": {"2000": 5}}})])
    close = rules.plan_close(state, POLICY, SessionCloseParams.model_validate(
        {"counted": {"currency": "SEK", "from_counter": "coins"},
         "leave_in_drawer": sek(amount=0)}))
    assert close[0].data["counted"] == {"SEK": 10000}
    assert close[0].data["counted_by"] == {"SEK": "coins"}
    with pytest.raises(CommandRefused, match="has counted no SEK"):
        rules.plan_close(state, POLICY, SessionCloseParams.model_validate(
            {"counted": {"currency": "SEK", "from_counter": "notes"},
             "leave_in_drawer": sek(amount=0)}))


def test_amount_and_counts_must_agree():
    with pytest.raises(CommandRefused) as caught:
        rules.plan_open(LedgerState(), POLICY, SessionOpenParams.model_validate(
            {"starting_float": sek(amount=999, counts={"2000": 1})}), "s1")
    assert caught.value.code is ErrorCode.AMOUNT_OUT_OF_RANGE


def test_open_from_a_counter_run_before_the_session():
    state = LedgerState()
    run(state, [rules.PlannedEvent("counter.counted", None, {
        "device": "coins", "run_id": "r0", "counts": {"SEK": {"1000": 10, "500": 4}}})])
    events = rules.plan_open(state, POLICY, SessionOpenParams.model_validate(
        {"starting_float": {"currency": "SEK", "from_counter": "coins"}}), "s1")
    assert events[0].data["starting_float"] == {"SEK": 12000}
    assert events[0].data["counts"] == {"SEK": {"500": 4, "1000": 10}}
    run(state, events)
    assert state.counter_runs == {}
    assert state.open_session.inventory["SEK"] == {500: 4, 1000: 10}
