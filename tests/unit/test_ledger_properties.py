"""The cash-session ledger against an independent reference model (product.md's formulas).

A hypothesis state machine sends random session commands (open, cash sale, cash refund, other
payment, adjust, close, plus drawer openings) through the rules (``plan_*``). Next to the real
``LedgerState`` it keeps a model written from product.md with plain dicts, and decides on its own
whether each command must be refused and why. After every step it compares the two: expected cash,
discrepancy at start, payments by type, close figures, the carried-forward amount left in drawer;
and that folding the journaled events from scratch (also after a JSON round trip, as the journal
stores them) gives the very state built step by step.
"""

from __future__ import annotations

import copy
import json

import pytest
from hypothesis import HealthCheck, settings
from hypothesis import event as hypothesis_event
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    invariant,
    rule,
)

from kassad.daemon.contract.commands import (
    AdjustDirection,
    MoneyIn,
    PaymentKind,
    PaymentRecordParams,
    SessionAdjustParams,
    SessionCloseParams,
    SessionOpenParams,
)
from kassad.daemon.contract.errors import CommandRefused, ErrorCode
from kassad.daemon.ledger.rules import (
    MoneyPolicy,
    PlannedEvent,
    plan_adjust,
    plan_close,
    plan_open,
    plan_payment,
)
from kassad.daemon.ledger.session import LedgerEvent, LedgerState, apply, fold

MAX = 1_000_000  # the policy's limit for one amount, in minor units
NOT_ACCEPTED = ["USD", "XXX"]  # USD is ISO 4217 but not accepted; XXX is not cash at all
PAYMENT_TYPES = ["card", "gift_card", "swish", "cash"]  # "cash" is not an *other* payment
EMPLOYEES = ["anna", "bo", None]

NOT_OPEN = ErrorCode.SESSION_NOT_OPEN
ALREADY_OPEN = ErrorCode.SESSION_ALREADY_OPEN
CURRENCY = ErrorCode.CURRENCY_NOT_ACCEPTED
RANGE = ErrorCode.AMOUNT_OUT_OF_RANGE
PAYLOAD = ErrorCode.INVALID_PAYLOAD


def nz(totals):
    """Per-currency totals without zero entries (a missing currency counts as zero)."""
    return {c: a for c, a in totals.items() if a != 0}


def nz_by_type(by_type):
    out = {t: nz(v) for t, v in by_type.items()}
    return {t: v for t, v in out.items() if v}


def bump(totals, currency, amount):
    totals[currency] = totals.get(currency, 0) + amount


def money(currency, amount):
    return MoneyIn(amount=amount, currency=currency)


def to_events(planned, ts, employee):
    return [LedgerEvent(type=p.type, session_id=p.session_id, ts=ts, employee=employee,
                        data=p.data) for p in planned]


def json_round_trip(events):
    return [LedgerEvent(type=e.type, session_id=e.session_id, ts=e.ts, employee=e.employee,
                        data=json.loads(json.dumps(e.data))) for e in events]


# ---------------------------------------------------------------------------------------------
# The reference model: product.md's session table and formulas, plain dicts, no module code.


class RefSession:
    def __init__(self, number, starting_float, expected_start, automatic, opened_by):
        self.number = number
        self.starting_float = dict(starting_float)
        self.expected_start = None if expected_start is None else dict(expected_start)
        self.automatic = automatic
        self.opened_by = opened_by
        self.cash = dict(starting_float)  # expected cash in drawer, kept up to date
        self.payments = {}  # payment type → {currency: net}
        self.counts = {}  # payment type → number of payments
        self.sales_count = 0
        self.refunds_count = 0
        self.openings = {}

    def discrepancy_at_start(self):
        if self.expected_start is None:  # the register's first session: nothing to compare
            return {}
        currencies = set(self.starting_float) | set(self.expected_start)
        return nz({c: self.starting_float.get(c, 0) - self.expected_start.get(c, 0)
                   for c in currencies})

    def pay(self, payment_type, currency, amount):
        bump(self.payments.setdefault(payment_type, {}), currency, amount)
        self.counts[payment_type] = self.counts.get(payment_type, 0) + 1


class RefLedger:
    def __init__(self):
        self.open = None
        self.sessions = 0
        self.last_left = None  # None until the register's first close
        self.last_close = None

    def start(self, starting_float, automatic, employee):
        self.sessions += 1
        self.open = RefSession(self.sessions, starting_float, self.last_left, automatic, employee)

    def close(self, counted, left, employee):
        s = self.open
        currencies = set(s.cash) | set(counted) | set(left)
        figures = {
            "counted": {c: counted.get(c, 0) for c in currencies},
            "expected": {c: s.cash.get(c, 0) for c in currencies},
            "left_in_drawer": {c: left.get(c, 0) for c in currencies},
        }
        figures["discrepancy"] = {c: figures["counted"][c] - figures["expected"][c]
                                  for c in currencies}
        figures["removed"] = {c: figures["counted"][c] - figures["left_in_drawer"][c]
                              for c in currencies}
        self.last_close = (s, figures, employee)
        self.last_left = dict(left)
        self.open = None
        return figures


# ---------------------------------------------------------------------------------------------


class LedgerMachine(RuleBasedStateMachine):
    def __init__(self):
        super().__init__()
        self.state = LedgerState()
        self.model = RefLedger()
        self.events = []
        self.ids = 0
        self.policy = None
        self.accepted = []

    # -- set-up and drawing helpers ----------------------------------------------------------

    @initialize(accepted=st.lists(st.sampled_from(["SEK", "EUR", "JPY"]), min_size=1,
                                  max_size=3, unique=True))
    def configure(self, accepted):
        self.accepted = accepted
        self.policy = MoneyPolicy(base_currency=accepted[0], accepted=frozenset(accepted),
                                  max_amount=MAX)

    def fresh_id(self):
        self.ids += 1
        return f"s{self.ids}"

    def draw_currency(self, data):
        return data.draw(st.sampled_from(self.accepted * 6 + NOT_ACCEPTED), label="currency")

    def draw_amount(self, data, around=None, label="amount"):
        options = [st.integers(0, 300_000), st.integers(MAX - 1, MAX + 1)]
        if around is not None:  # near a figure the model knows: the edges of a refusal
            options.insert(1, st.integers(-3, 3).map(lambda d: max(0, around + d)))
        return data.draw(st.one_of(options), label=label)

    def money_reasons(self, currency, amount):
        reasons = set()
        if currency not in self.accepted:
            reasons.add(CURRENCY)
        if amount > MAX:
            reasons.add(RANGE)
        return reasons

    def drawer_cash(self, currency):
        """Cash the model expects in the drawer now, or that an automatic start would find."""
        if self.model.open is not None:
            return self.model.open.cash.get(currency, 0)
        return (self.model.last_left or {}).get(currency, 0)

    def attempt(self, name, reasons, employee, plan, *args):
        """Plan a command; refused ⇔ the model found a reason, and a refusal changes nothing."""
        before = copy.deepcopy(self.state)
        refusal = None
        try:
            planned = plan(self.state, self.policy, *args)
        except CommandRefused as refused:
            refusal = refused
        hypothesis_event(f"{name}: {'accepted' if refusal is None else refusal.code.value}")
        if refusal is not None:
            assert reasons, f"refused ({refusal.code}: {refusal.message}); the model accepts"
            assert refusal.code in reasons, (refusal.code, refusal.message, reasons)
            assert self.state == before
            return None
        assert not reasons, f"accepted {planned}; the model refuses with one of {reasons}"
        assert self.state == before, "planning changed the state"
        assert all(isinstance(p, PlannedEvent) for p in planned)
        events = to_events(planned, f"2025-01-01T00:00:{len(self.events):06d}Z", employee)
        for event in events:
            apply(self.state, event)
        self.events.extend(events)
        return planned

    # -- rules -------------------------------------------------------------------------------

    @rule(data=st.data(), employee=st.sampled_from(EMPLOYEES),
          note=st.sampled_from([None, "morning"]))
    def open_session(self, data, employee, note):
        floats = {}
        for _ in range(data.draw(st.integers(0, 3), label="n_floats")):
            currency = self.draw_currency(data)
            around = (self.model.last_left or {}).get(currency, 0)
            floats[currency] = self.draw_amount(data, around=around, label="float")
        reasons = set()
        if self.model.open is not None:
            reasons.add(ALREADY_OPEN)
        for currency, amount in floats.items():
            reasons |= self.money_reasons(currency, amount)
        params = SessionOpenParams(starting_float=[money(c, a) for c, a in floats.items()],
                                   note=note)
        new_id = self.fresh_id()
        planned = self.attempt("open", reasons, employee, plan_open, params, new_id)
        if planned is not None:
            self.model.start(floats, automatic=False, employee=employee)
            assert [p.type for p in planned] == ["session.opened"]
            assert self.state.open_session.session_id == new_id
            assert self.state.open_session.note == note

    def auto_start_check(self, planned, new_id, was_open, employee):
        if was_open:
            assert len(planned) == 1
            return
        assert [p.type for p in planned] == ["session.opened", "payment.recorded"]
        assert planned[0].session_id == planned[1].session_id == new_id
        hypothesis_event("automatic start" + (" (first)" if self.model.last_left is None else ""))
        # Automatic start: the previous session's amount left is the starting float.
        self.model.start(self.model.last_left or {}, automatic=True, employee=employee)

    @rule(data=st.data(), employee=st.sampled_from(EMPLOYEES))
    def cash_sale(self, data, employee):
        currency = self.draw_currency(data)
        tendered = self.draw_amount(data, label="tendered")
        omit_change = currency == self.accepted[0] and data.draw(st.booleans(), label="omit")
        if omit_change:
            change_cur, change = currency, 0
        else:
            same = data.draw(st.integers(0, 7), label="same_cur") > 0
            change_cur = currency if same else self.draw_currency(data)
            change = data.draw(st.one_of(st.integers(0, tendered), st.integers(0, 400_000)),
                               label="change")
        amount_mode = data.draw(st.sampled_from(["none", "none", "net", "other"]), label="amt")
        net = tendered - change
        amount = None
        if amount_mode == "net" and net >= 0:
            amount = money(currency, net)
        elif amount_mode == "other":
            amount = money(self.draw_currency(data), self.draw_amount(data, around=max(0, net)))

        reasons = self.money_reasons(currency, tendered) | self.money_reasons(change_cur, change)
        # The sale's currency: the amount's, else the change's, else the tendered cash's.
        sale_cur = amount.currency if amount is not None else (
            currency if omit_change else change_cur)
        if amount is not None:
            reasons |= self.money_reasons(amount.currency, amount.amount)
        if change_cur != sale_cur:
            reasons.add(CURRENCY)  # change is given in the currency of the sale
        if currency != sale_cur:
            # Foreign cash: for sales in the base currency only, at a rate; this policy has
            # no exchange rates, so it is always refused.
            reasons.add(CURRENCY if sale_cur != self.accepted[0] else PAYLOAD)
        else:
            if change > tendered:
                reasons.add(RANGE)
            if amount is not None and amount.amount != net:
                reasons.add(RANGE)
        params = PaymentRecordParams(
            kind=PaymentKind.CASH_SALE, tendered=money(currency, tendered),
            change=None if omit_change else money(change_cur, change), amount=amount,
            reference=f"order-{self.ids}")
        new_id = self.fresh_id()
        was_open = self.model.open is not None
        planned = self.attempt("sale", reasons, employee, plan_payment, params, new_id)
        if planned is None:
            return
        self.auto_start_check(planned, new_id, was_open, employee)
        s = self.model.open
        bump(s.cash, currency, tendered - change)
        s.pay("cash", currency, tendered - change)
        s.sales_count += 1

    @rule(data=st.data(), employee=st.sampled_from(EMPLOYEES))
    def cash_refund(self, data, employee):
        currency = self.draw_currency(data)
        amount = self.draw_amount(data, around=self.drawer_cash(currency))
        reasons = self.money_reasons(currency, amount)
        if amount > self.drawer_cash(currency):
            reasons.add(RANGE)  # the drawer cannot go below zero
        params = PaymentRecordParams(kind=PaymentKind.CASH_REFUND, amount=money(currency, amount))
        new_id = self.fresh_id()
        was_open = self.model.open is not None
        planned = self.attempt("refund", reasons, employee, plan_payment, params, new_id)
        if planned is None:
            return
        self.auto_start_check(planned, new_id, was_open, employee)
        s = self.model.open
        bump(s.cash, currency, -amount)
        s.pay("cash", currency, -amount)
        s.refunds_count += 1

    @rule(data=st.data(), employee=st.sampled_from(EMPLOYEES),
          payment_type=st.sampled_from(PAYMENT_TYPES))
    def other_payment(self, data, employee, payment_type):
        currency = self.draw_currency(data)
        amount = self.draw_amount(data)
        reasons = self.money_reasons(currency, amount)
        if payment_type == "cash":
            reasons.add(PAYLOAD)
        if self.model.open is None:
            reasons.add(NOT_OPEN)  # a non-cash payment never starts a session
        params = PaymentRecordParams(kind=PaymentKind.OTHER, amount=money(currency, amount),
                                     payment_type=payment_type, reference="r")
        new_id = self.fresh_id()
        planned = self.attempt("other", reasons, employee, plan_payment, params, new_id)
        if planned is not None:
            assert [p.type for p in planned] == ["payment.recorded"]
            self.model.open.pay(payment_type, currency, amount)

    @rule(data=st.data(), employee=st.sampled_from(EMPLOYEES),
          direction=st.sampled_from(["add", "remove"]), note=st.sampled_from([None, "safe drop"]))
    def adjust(self, data, employee, direction, note):
        currency = self.draw_currency(data)
        amount = self.draw_amount(data, around=self.drawer_cash(currency))
        reasons = self.money_reasons(currency, amount)
        if self.model.open is None:
            reasons.add(NOT_OPEN)
        elif direction == "remove" and amount > self.model.open.cash.get(currency, 0):
            reasons.add(RANGE)
        params = SessionAdjustParams(direction=AdjustDirection(direction),
                                     amount=money(currency, amount), note=note)
        planned = self.attempt("adjust", reasons, employee, plan_adjust, params)
        if planned is not None:
            sign = 1 if direction == "add" else -1
            bump(self.model.open.cash, currency, sign * amount)
            last = self.state.open_session.adjustments[-1]
            assert (last.direction, last.currency, last.amount, last.note, last.employee) == (
                direction, currency, amount, note, employee)

    @rule(data=st.data(), employee=st.sampled_from(EMPLOYEES))
    def close_session(self, data, employee):
        counted, left = {}, {}
        for currency in self.accepted + NOT_ACCEPTED:
            foreign = currency in NOT_ACCEPTED
            in_counted = (data.draw(st.integers(0, 15), label="count_foreign") == 0 if foreign
                          else data.draw(st.integers(0, 7), label="count") > 0)
            if in_counted:
                counted[currency] = self.draw_amount(data, around=self.drawer_cash(currency),
                                                     label="counted")
            if data.draw(st.integers(0, 3), label="leave") > 0 and (in_counted or not foreign):
                top = counted.get(currency, 0)
                left[currency] = data.draw(
                    st.one_of(st.integers(0, top), st.integers(top + 1, top + 3),
                              st.integers(0, 300_000)), label="left")
        reasons = set()
        if self.model.open is None:
            reasons.add(NOT_OPEN)
        for currency, amount in [*counted.items(), *left.items()]:
            reasons |= self.money_reasons(currency, amount)
        if self.model.open is not None and any(
                a != 0 and c not in counted for c, a in self.model.open.cash.items()):
            reasons.add(PAYLOAD)  # every currency in the drawer must be counted
        if any(amount > counted.get(currency, 0) for currency, amount in left.items()):
            reasons.add(RANGE)  # cannot leave more than was counted
        params = SessionCloseParams(counted=[money(c, a) for c, a in counted.items()],
                                    leave_in_drawer=[money(c, a) for c, a in left.items()],
                                    note="end of day")
        session = self.state.open_session
        planned = self.attempt("close", reasons, employee, plan_close, params)
        if planned is None:
            return
        assert [p.type for p in planned] == ["session.closed", "report.issued"]
        # Each close issues the next Z report: numbered per register, without gaps.
        self.closes = getattr(self, "closes", 0) + 1
        assert session.z_number == self.state.z_count == self.closes
        figures = self.model.close(counted, left, employee)
        assert self.state.open_session is None
        assert self.state.last_closed is session
        closed = session.closed
        assert closed is not None
        assert closed.closed_by == employee
        assert closed.note == "end of day"
        for name, value in figures.items():
            assert nz(getattr(closed, name)) == nz(value), name
        # Every counted currency appears in the frozen figures, zeros included.
        assert set(counted) <= set(closed.counted)

    @rule(cause=st.sampled_from(["sale", "refund", "no_sale", "unexpected"]),
          employee=st.sampled_from(EMPLOYEES))
    def drawer_opened(self, cause, employee):
        s = self.state.open_session
        event = LedgerEvent("drawer.opened", None if s is None else s.session_id,
                            f"2025-01-01T00:00:{len(self.events):06d}Z", employee,
                            {"cause": cause})
        apply(self.state, event)
        self.events.append(event)
        if self.model.open is not None:  # audit only: counted, no effect on the cash
            bump(self.model.open.openings, cause, 1)

    # -- invariants --------------------------------------------------------------------------

    @invariant()
    def matches_model(self):
        if self.policy is None:
            return
        m, s = self.model, self.state.open_session
        assert self.state.sessions_opened == m.sessions
        assert (s is None) == (m.open is None)
        if m.last_left is None:
            assert self.state.last_left is None
        else:
            assert nz(self.state.last_left) == nz(m.last_left)
        if s is not None:
            r = m.open
            summary = s.summary()
            json.dumps(summary)  # the summary is JSON as it is
            assert summary["status"] == "open"
            assert summary["number"] == r.number
            assert summary["automatic"] is r.automatic
            assert summary["opened_by"] == r.opened_by
            assert nz(summary["starting_float"]) == nz(r.starting_float)
            if r.expected_start is None:
                assert summary["expected_start"] is None
            else:
                assert nz(summary["expected_start"]) == nz(r.expected_start)
            assert summary["discrepancy_at_start"] == r.discrepancy_at_start()
            assert nz(summary["expected_cash"]) == nz(r.cash)
            assert all(a >= 0 for a in summary["expected_cash"].values())
            assert nz_by_type(summary["payments_by_type"]) == nz_by_type(r.payments)
            assert summary["payment_counts"] == r.counts
            total = {}
            for by_currency in r.payments.values():
                for currency, amount in by_currency.items():
                    bump(total, currency, amount)
            assert nz(summary["total_sales"]) == nz(total)
            assert summary["cash_sales_count"] == r.sales_count
            assert summary["cash_refunds_count"] == r.refunds_count
            assert summary["drawer_openings"] == r.openings
        if m.last_close is not None:
            r, figures, employee = m.last_close
            closed = self.state.last_closed.summary()
            assert closed["status"] == "closed"
            assert closed["number"] == r.number
            assert closed["closed_by"] == employee
            for name in ("counted", "expected", "discrepancy", "left_in_drawer", "removed"):
                assert nz(closed[name]) == nz(figures[name]), name
            assert nz_by_type(closed["payments_by_type"]) == nz_by_type(r.payments)

    @invariant()
    def fold_is_deterministic_and_equals_incremental_apply(self):
        once = fold(self.events)
        twice = fold(self.events)
        assert once == twice
        assert once == self.state
        assert fold(json_round_trip(self.events)) == self.state
        if self.state.open_session is not None:
            assert once.open_session.summary() == self.state.open_session.summary()
        if self.state.last_closed is not None:
            assert once.last_closed.summary() == self.state.last_closed.summary()


LedgerMachine.TestCase.settings = settings(
    max_examples=200, stateful_step_count=30, deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
)
TestLedgerMachine = LedgerMachine.TestCase


# ---------------------------------------------------------------------------------------------
# Examples: the worked case and each refusal, spelled out.

SEK_ONLY = MoneyPolicy(base_currency="SEK", accepted=frozenset({"SEK"}), max_amount=MAX)
SEK_EUR = MoneyPolicy(base_currency="SEK", accepted=frozenset({"SEK", "EUR"}), max_amount=MAX)


class Register:
    """Plans and applies commands the way the register service does, keeping the events."""

    def __init__(self, policy=SEK_ONLY):
        self.policy = policy
        self.state = LedgerState()
        self.events = []
        self.n = 0

    def _do(self, planned):
        events = to_events(planned, f"2025-03-01T10:{len(self.events):02d}:00Z", "anna")
        for event in events:
            apply(self.state, event)
        self.events.extend(events)
        return events

    def new_id(self):
        self.n += 1
        return f"sess-{self.n}"

    def open(self, **floats):
        params = SessionOpenParams(starting_float=[money(c, a) for c, a in floats.items()])
        return self._do(plan_open(self.state, self.policy, params, self.new_id()))

    def sale(self, tendered, change=None, currency="SEK"):
        params = PaymentRecordParams(
            kind=PaymentKind.CASH_SALE, tendered=money(currency, tendered),
            change=None if change is None else money(currency, change))
        return self._do(plan_payment(self.state, self.policy, params, self.new_id()))

    def refund(self, amount, currency="SEK"):
        params = PaymentRecordParams(kind=PaymentKind.CASH_REFUND, amount=money(currency, amount))
        return self._do(plan_payment(self.state, self.policy, params, self.new_id()))

    def other(self, payment_type, amount, currency="SEK"):
        params = PaymentRecordParams(kind=PaymentKind.OTHER, payment_type=payment_type,
                                     amount=money(currency, amount))
        return self._do(plan_payment(self.state, self.policy, params, self.new_id()))

    def adjust(self, direction, amount, note=None, currency="SEK"):
        params = SessionAdjustParams(direction=AdjustDirection(direction),
                                     amount=money(currency, amount), note=note)
        return self._do(plan_adjust(self.state, self.policy, params))

    def close(self, counted, left):
        params = SessionCloseParams(counted=[money(c, a) for c, a in counted.items()],
                                    leave_in_drawer=[money(c, a) for c, a in left.items()])
        return self._do(plan_close(self.state, self.policy, params))


def refused(register, code, call, *args, **kwargs):
    before = copy.deepcopy(register.state)
    with pytest.raises(CommandRefused) as info:
        call(*args, **kwargs)
    assert info.value.code is code, info.value.message
    assert register.state == before
    return info.value


def test_worked_example_sek():
    reg = Register()
    reg.open(SEK=100_000)
    first = reg.state.open_session
    assert first.expected_start is None
    assert first.discrepancy_at_start == {}
    assert first.automatic is False

    (sale,) = reg.sale(20_000, 5_050)
    assert sale.data["amount"] == {"amount": 14_950, "currency": "SEK"}
    reg.other("card", 32_000)
    reg.refund(2_000)
    reg.adjust("remove", 30_000, note="safe drop")
    assert first.expected_cash() == {"SEK": 82_950}
    summary = first.summary()
    assert summary["payments_by_type"] == {"cash": {"SEK": 12_950}, "card": {"SEK": 32_000}}
    assert summary["total_sales"] == {"SEK": 44_950}
    assert summary["adjustments"][0]["note"] == "safe drop"

    refused(reg, ErrorCode.AMOUNT_OUT_OF_RANGE, reg.close, {"SEK": 82_800}, {"SEK": 100_000})
    reg.close({"SEK": 82_800}, {"SEK": 50_000})
    closed = reg.state.last_closed.summary()
    assert closed["status"] == "closed"
    assert closed["counted"] == {"SEK": 82_800}
    assert closed["expected"] == {"SEK": 82_950}
    assert closed["discrepancy"] == {"SEK": -150}
    assert closed["left_in_drawer"] == {"SEK": 50_000}
    assert closed["removed"] == {"SEK": 32_800}
    assert reg.state.open_session is None

    # A cash sale with no session open starts the next one by itself.
    opened, _payment = reg.sale(1_000)
    assert opened.type == "session.opened"
    second = reg.state.open_session
    assert second.automatic is True
    assert second.number == 2
    assert second.starting_float == {"SEK": 50_000}
    assert second.expected_start == {"SEK": 50_000}
    assert second.discrepancy_at_start == {}
    assert second.expected_cash() == {"SEK": 51_000}

    assert fold(reg.events) == reg.state


def test_manual_open_after_close_compares_with_amount_left():
    reg = Register()
    reg.open(SEK=10_000)
    reg.close({"SEK": 10_000}, {"SEK": 7_000})
    reg.open(SEK=6_500)
    s = reg.state.open_session
    assert s.expected_start == {"SEK": 7_000}
    assert s.discrepancy_at_start == {"SEK": -500}


def test_first_automatic_session_starts_from_zero():
    reg = Register()
    reg.sale(500)
    s = reg.state.open_session
    assert s.automatic is True
    assert s.expected_start is None
    assert s.discrepancy_at_start == {}
    assert s.expected_cash() == {"SEK": 500}


def test_refusals():
    reg = Register(SEK_EUR)
    refused(reg, ErrorCode.SESSION_NOT_OPEN, reg.adjust, "add", 100)
    refused(reg, ErrorCode.SESSION_NOT_OPEN, reg.close, {"SEK": 0}, {})
    refused(reg, ErrorCode.SESSION_NOT_OPEN, reg.other, "card", 100)
    refused(reg, ErrorCode.AMOUNT_OUT_OF_RANGE, reg.refund, 1)  # nothing in the drawer yet
    refused(reg, ErrorCode.CURRENCY_NOT_ACCEPTED, reg.open, SEK=100, USD=100)
    reg.open(SEK=1_000)
    refused(reg, ErrorCode.SESSION_ALREADY_OPEN, reg.open, SEK=1_000)
    refused(reg, ErrorCode.CURRENCY_NOT_ACCEPTED, reg.sale, 100, currency="USD")
    refused(reg, ErrorCode.CURRENCY_NOT_ACCEPTED, reg.other, "card", 100, currency="NOK")
    refused(reg, ErrorCode.AMOUNT_OUT_OF_RANGE, reg.refund, 1_001)
    refused(reg, ErrorCode.AMOUNT_OUT_OF_RANGE, reg.adjust, "remove", 1_001)
    refused(reg, ErrorCode.AMOUNT_OUT_OF_RANGE, reg.sale, MAX + 1)
    refused(reg, ErrorCode.AMOUNT_OUT_OF_RANGE, reg.sale, 100, 101)
    refused(reg, ErrorCode.INVALID_PAYLOAD, reg.other, "cash", 100)
    refused(reg, ErrorCode.INVALID_PAYLOAD, reg.close, {}, {})  # SEK in the drawer not counted
    refused(reg, ErrorCode.AMOUNT_OUT_OF_RANGE, reg.close, {"SEK": 1_000}, {"SEK": 1_001})
    refused(reg, ErrorCode.AMOUNT_OUT_OF_RANGE, reg.close, {"SEK": 1_000}, {"EUR": 1})
    reg.refund(1_000)  # exactly what is there
    reg.adjust("remove", 0)
    assert reg.state.open_session.expected_cash() == {"SEK": 0}


def test_exact_cash_sale_in_a_non_base_currency_without_change():
    """A cash sale's ``change`` is optional: an exact payment gives none. Omitted change is
    zero change, so an exact EUR payment on a SEK-based register that accepts EUR must go
    through like any EUR sale with ``change: 0 EUR``."""
    with_change = Register(SEK_EUR)
    with_change.open(EUR=0)
    with_change.sale(2_000, 0, currency="EUR")
    assert with_change.state.open_session.expected_cash() == {"EUR": 2_000}

    reg = Register(SEK_EUR)
    reg.open(EUR=0)
    reg.sale(2_000, currency="EUR")  # change omitted
    assert reg.state.open_session.expected_cash() == {"EUR": 2_000}
