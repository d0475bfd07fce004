"""The full cash session's rules (issue 8), decided by the pure ledger: cash rounding, foreign
cash, count rules (blind, maximum difference, recounts, approval), corrections, training, the
balances of each payment type and the Z report's numbering."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import pytest

from kassad.daemon.config import MoneyConfig
from kassad.daemon.contract.commands import (
    PaymentRecordParams,
    SessionAdjustParams,
    SessionCloseParams,
    SessionCorrectParams,
    SessionOpenParams,
)
from kassad.daemon.contract.errors import CommandRefused, ErrorCode
from kassad.daemon.ledger.cash_rounding import CashRounding
from kassad.daemon.ledger.exchange import convert
from kassad.daemon.ledger.rules import (
    CountPolicy,
    MoneyPolicy,
    PlannedEvent,
    plan_adjust,
    plan_close,
    plan_correct,
    plan_open,
    plan_payment,
    plan_system_close,
)
from kassad.daemon.ledger.session import LedgerEvent, LedgerState, apply, blind


def policy(country: str | None = None, **money: Any) -> MoneyPolicy:
    config = MoneyConfig(country=country, **money)
    return MoneyPolicy(config.base_currency, frozenset(config.accepted), config.max_amount,
                       config.denomination_sets(), config.low_change_pieces,
                       config.rounding_rules(), dict(config.exchange_rates))


def m(amount: int, currency: str = "SEK") -> dict[str, Any]:
    return {"amount": amount, "currency": currency}


class Register:
    """The rules and the fold, as the register runs them, without the journal."""

    def __init__(self, money: MoneyPolicy | None = None, count: CountPolicy | None = None):
        self.state = LedgerState()
        self.money = money or policy()
        self.count = count or CountPolicy()
        self.ids = 0

    def _do(self, planned: list[PlannedEvent], employee: str | None = "anna") -> None:
        for e in planned:
            apply(self.state, LedgerEvent(e.type, e.session_id, "2026-11-25T10:00:00.000Z",
                                          employee, e.data))

    def _id(self) -> str:
        self.ids += 1
        return f"s{self.ids}"

    def open(self, amount: int = 100_000, currency: str = "SEK", **extra: Any) -> None:
        self._do(plan_open(self.state, self.money, SessionOpenParams.model_validate(
            {"starting_float": m(amount, currency), **extra}), self._id()))

    def pay(self, **params: Any) -> dict[str, Any]:
        planned = plan_payment(self.state, self.money, PaymentRecordParams.model_validate(params),
                               self._id(), self.count.blind)
        self._do(planned)
        return planned[-1].data

    def adjust(self, **params: Any) -> None:
        self._do(plan_adjust(self.state, self.money,
                             SessionAdjustParams.model_validate(params), self.count.blind))

    def close(self, counted: dict[str, Any] | list[dict[str, Any]], left: Any = None,
              **extra: Any) -> list[PlannedEvent]:
        params = SessionCloseParams.model_validate(
            {"counted": counted, "leave_in_drawer": left or m(0), **extra})
        try:
            planned = plan_close(self.state, self.money, params, self.count)
        except CommandRefused as e:
            # As the dispatcher does: a refused close is journaled as cmd.rejected.
            session = self.state.open_session
            self._do([PlannedEvent("cmd.rejected", session.session_id if session else None,
                                   {"command": "session.close", "code": e.code.value})])
            raise
        self._do(planned)
        return planned


# -- cash rounding ------------------------------------------------------------------------------

@pytest.mark.parametrize(("country", "currency", "exact", "rounded"), [
    ("SE", "SEK", 14_949, 14_900), ("SE", "SEK", 14_950, 15_000), ("SE", "SEK", 14_999, 15_000),
    ("SE", "SEK", 14_901, 14_900), ("SE", "SEK", 15_000, 15_000),
    ("CH", "CHF", 1_002, 1_000), ("CH", "CHF", 1_003, 1_005), ("CH", "CHF", 1_007, 1_005),
    ("CH", "CHF", 1_008, 1_010),
    ("FI", "EUR", 1_001, 1_000), ("FI", "EUR", 1_002, 1_000), ("FI", "EUR", 1_003, 1_005),
    ("FI", "EUR", 1_004, 1_005), ("FI", "EUR", 1_006, 1_005), ("FI", "EUR", 1_008, 1_010),
    ("NL", "EUR", 1_007, 1_005), ("NL", "EUR", 1_009, 1_010),
    ("BE", "EUR", 1_002, 1_000), ("BE", "EUR", 1_003, 1_005),
    ("IE", "EUR", 1_004, 1_005),
    ("DE", "EUR", 1_003, 1_003),  # the euro is not rounded everywhere
    (None, "SEK", 14_950, 14_950),  # none by default
])
def test_cash_totals_round_per_currency_and_country(country: str | None, currency: str,
                                                    exact: int, rounded: int) -> None:
    register = Register(policy(country, base_currency=currency, accepted=[currency]))
    register.open(0, currency)
    payment = register.pay(kind="cash_sale", amount=m(exact, currency),
                           tendered=m(rounded, currency))
    assert payment["amount"] == m(rounded, currency)
    assert payment.get("rounding", m(0, currency))["amount"] == rounded - exact
    summary = register.state.open_session.summary()  # type: ignore[union-attr]
    assert summary["expected_cash"] == {currency: rounded}
    assert summary["rounding"] == ({currency: rounded - exact} if rounded != exact else {})
    assert summary["payments_by_type"]["cash"] == {currency: rounded}


def test_rounding_modes_and_card_payments() -> None:
    assert [CashRounding(100, "half_even").round(a) for a in (50, 150, 250)] == [0, 200, 200]
    assert CashRounding(100, "down").round(199) == 100
    assert CashRounding(100, "up").round(101) == 200
    register = Register(policy("SE"))
    register.open(0)
    register.pay(kind="other", payment_type="card", amount=m(14_950))
    register.pay(kind="cash_sale", amount=m(14_950), tendered=m(20_000), change=m(5_000))
    register.pay(kind="cash_refund", amount=m(2_040))  # paid out 20.00: the drawer keeps 0.40
    summary = register.state.open_session.summary()  # type: ignore[union-attr]
    assert summary["payments_by_type"] == {"card": {"SEK": 14_950},
                                           "cash": {"SEK": 15_000 - 2_000}}
    assert summary["rounding"] == {"SEK": 50 + 40}
    assert summary["expected_cash"] == {"SEK": 13_000}


def test_change_the_coins_cannot_pay_is_refused() -> None:
    register = Register(policy("SE"))
    register.open(0)
    with pytest.raises(CommandRefused) as refused:  # 149.50 rounds to 150: change 50.00
        register.pay(kind="cash_sale", amount=m(14_950), tendered=m(20_000), change=m(5_050))
    assert refused.value.code is ErrorCode.AMOUNT_OUT_OF_RANGE
    assert "50.50 SEK cannot be paid in cash" in refused.value.message


# -- several currencies -------------------------------------------------------------------------

def test_foreign_cash_at_a_recorded_rate_with_change_in_the_base_currency() -> None:
    register = Register(policy("SE", accepted=["SEK", "EUR"],
                               exchange_rates={"EUR": "11.4250"}))
    register.open(50_000)
    # 20.00 EUR at 11.4250 is 228.50 SEK; the sale is 149.50 → 150 for cash; change 78.50 →
    # 79 kr (what the coins can pay), so the register took 149.50 SEK worth.
    payment = register.pay(kind="cash_sale", amount=m(14_950), tendered=m(2_000, "EUR"),
                           change=m(7_900))
    assert payment["exchange_rate"] == {"currency": "EUR", "base": "SEK", "rate": "11.4250"}
    assert payment["tendered_value"] == m(22_850)
    assert payment["amount"] == m(14_950)
    summary = register.state.open_session.summary()  # type: ignore[union-attr]
    assert summary["expected_cash"] == {"SEK": 50_000 - 7_900, "EUR": 2_000}
    # A rate given with the command wins over the configured one.
    given = register.pay(kind="cash_sale", amount=m(10_000), tendered=m(1_000, "EUR"),
                         change=m(1_000), exchange_rate="11.0")
    assert given["tendered_value"] == m(11_000)
    # The close counts every currency in the drawer.
    with pytest.raises(CommandRefused) as refused:
        register.close(m(41_100))
    assert refused.value.details["missing"] == ["EUR"]


def test_foreign_cash_needs_a_rate_and_a_base_currency_sale() -> None:
    register = Register(policy(None, accepted=["SEK", "EUR", "NOK"]))
    register.open(50_000)
    with pytest.raises(CommandRefused) as no_rate:
        register.pay(kind="cash_sale", amount=m(14_950), tendered=m(2_000, "EUR"),
                     change=m(7_900))
    assert no_rate.value.code is ErrorCode.INVALID_PAYLOAD
    with pytest.raises(CommandRefused) as not_base:
        register.pay(kind="cash_sale", amount=m(1_000, "NOK"), tendered=m(2_000, "EUR"),
                     change=m(0, "NOK"), exchange_rate="1.0")
    assert not_base.value.code is ErrorCode.CURRENCY_NOT_ACCEPTED
    assert convert(2_000, "EUR", Decimal("11.4250"), "SEK") == 22_850
    assert convert(1, "EUR", Decimal("0.005"), "SEK") == 0
    assert convert(100, "JPY", Decimal("0.0712"), "SEK") == 712


# -- count rules ---------------------------------------------------------------------------------

def test_a_blind_count_hides_the_expected_cash_until_the_close() -> None:
    register = Register(count=CountPolicy(blind=True))
    register.open(100_000)
    register.pay(kind="cash_sale", tendered=m(20_000), change=m(5_050))
    summary = blind(register.state.open_session.summary())  # type: ignore[union-attr]
    assert "expected_cash" not in summary and "balance" not in summary["balances"]["cash"]
    assert summary["blind"] is True
    with pytest.raises(CommandRefused) as refused:
        register.adjust(direction="remove", amount=m(500_000))
    assert "114" not in refused.value.message and "expected_cash" not in refused.value.details
    register.close(m(114_950))
    closed = register.state.last_closed.summary()  # type: ignore[union-attr]
    assert blind(closed) == closed  # after the count, the figures are everyone's
    assert closed["expected"] == {"SEK": 114_950} and closed["discrepancy"] == {"SEK": 0}


def test_a_close_off_by_more_than_the_limit_is_recounted_then_needs_a_manager() -> None:
    count = CountPolicy(blind=True, max_difference={"SEK": 1_000}, max_recounts=2,
                        managers=frozenset({"maria"}))
    register = Register(count=count)
    register.open(100_000)
    for attempt in (1, 2):
        with pytest.raises(CommandRefused) as refused:
            register.close(m(95_000))
        assert refused.value.code is ErrorCode.RECOUNT_REQUIRED
        assert f"recount {attempt} of 2" in refused.value.message
        assert "discrepancy" not in refused.value.details  # blind: no figure
    with pytest.raises(CommandRefused) as refused:
        register.close(m(95_000))
    assert refused.value.code is ErrorCode.APPROVAL_REQUIRED
    with pytest.raises(CommandRefused) as refused:
        register.close(m(95_000), approval={"employee": "bo", "role": "manager",
                                            "reason": "short by 50 kr"})
    assert refused.value.code is ErrorCode.NOT_PERMITTED
    assert register.state.open_session is not None  # nothing changed
    register.close(m(95_000), approval={"employee": "maria", "role": "manager",
                                        "reason": "short by 50 kr, counted three times"})
    closed = register.state.last_closed.summary()  # type: ignore[union-attr]
    assert closed["discrepancy"] == {"SEK": -5_000}
    assert closed["approval"] == {"employee": "maria", "role": "manager",
                                  "reason": "short by 50 kr, counted three times"}
    assert closed["recounts"] == 2  # the counts refused for the difference


def test_within_the_limit_closes_without_approval_and_an_approval_needs_a_reason() -> None:
    register = Register(count=CountPolicy(max_difference={"SEK": 1_000}))
    register.open(100_000)
    with pytest.raises(ValueError, match="reason"):
        SessionCloseParams.model_validate({"counted": m(0), "leave_in_drawer": m(0),
                                           "approval": {"employee": "m", "role": "manager"}})
    register.close(m(99_000))
    assert register.state.last_closed.summary()["discrepancy"] == {"SEK": -1_000}  # type: ignore[union-attr]


def test_closed_sessions_are_corrected_by_a_new_approved_event() -> None:
    register = Register(count=CountPolicy(managers=frozenset({"maria"})))
    register.open(100_000)
    register.close(m(99_000), m(50_000))
    session = register.state.last_closed
    assert session is not None
    with pytest.raises(CommandRefused):
        plan_correct(register.state, register.money, SessionCorrectParams.model_validate(
            {"session_id": session.session_id, "counted": m(100_000),
             "approval": {"employee": "bo", "role": "manager", "reason": "found a note"}}),
            register.count)
    planned = plan_correct(register.state, register.money, SessionCorrectParams.model_validate(
        {"session_id": session.session_id, "counted": m(100_000),
         "approval": {"employee": "maria", "role": "manager",
                      "reason": "a 10 kr coin under the tray"}}), register.count)
    assert [p.type for p in planned] == ["session.corrected"]
    register._do(planned, "maria")
    summary = session.summary()
    assert summary["counted"] == {"SEK": 100_000} and summary["discrepancy"] == {"SEK": 0}
    assert summary["removed"] == {"SEK": 50_000}
    assert summary["corrections"][0]["counted_before"] == {"SEK": 99_000}
    with pytest.raises(CommandRefused):  # only the last closed session
        plan_correct(register.state, register.money, SessionCorrectParams.model_validate(
            {"session_id": "nope", "counted": m(1),
             "approval": {"employee": "maria", "role": "manager", "reason": "typo"}}))


# -- training, balances, Z numbers, system close ------------------------------------------------

def test_training_sessions_are_journaled_but_left_out_of_every_total() -> None:
    register = Register()
    register.open(0)
    register.pay(kind="cash_sale", tendered=m(10_000))
    register.close(m(10_000))
    register.open(0, training=True)
    register.pay(kind="cash_sale", tendered=m(99_900))
    register.pay(kind="other", payment_type="card", amount=m(50_000))
    planned = register.close(m(99_900))
    assert register.state.grand_totals == {"sales": {"SEK": 10_000}, "returns": {},
                                           "net": {"SEK": 10_000}}
    training = register.state.last_closed
    assert training is not None and training.summary()["training"] is True
    assert planned[-1].data["number"] is None and training.z_number is None
    assert register.state.z_count == 1


def test_each_payment_type_keeps_a_balance_carried_to_the_next_session() -> None:
    register = Register()
    register.open(100_000)
    register.pay(kind="other", payment_type="card", amount=m(32_000))
    register.pay(kind="other", payment_type="gift_card", amount=m(5_000))
    register.adjust(direction="remove", amount=m(30_000), payment_type="card",
                    note="settled to the bank")
    register.pay(kind="cash_sale", tendered=m(10_000))
    register.close(m(110_000), m(100_000))
    balances = register.state.last_closed.summary()["balances"]  # type: ignore[union-attr]
    assert balances["card"] == {"opening": {}, "payments": {"SEK": 32_000}, "deposits": {},
                                "withdrawals": {"SEK": 30_000}, "balance": {"SEK": 2_000}}
    assert balances["cash"]["balance"] == {"SEK": 110_000}
    register.open(100_000)
    opened = register.state.open_session.summary()["balances"]  # type: ignore[union-attr]
    assert opened["card"]["opening"] == {"SEK": 2_000}
    assert opened["gift_card"]["balance"] == {"SEK": 5_000}
    assert opened["cash"]["opening"] == {"SEK": 100_000}


def test_z_numbers_follow_each_other_and_a_system_close_carries_the_expected_cash() -> None:
    register = Register()
    register.open(100_000)
    register.close(m(100_000), m(100_000))
    register.pay(kind="cash_sale", tendered=m(5_000))  # opens session 2 by itself
    planned = plan_system_close(register.state, "2026-11-26T02:00:00.000Z", "2026-11-25")
    register._do(planned, None)
    closed = register.state.last_closed.summary()  # type: ignore[union-attr]
    assert closed["system_close"] is True and closed["counted"] is None
    assert closed["discrepancy"] is None and closed["left_in_drawer"] == {"SEK": 105_000}
    assert closed["reports"]["z_number"] == 2 and closed["business_date"] == "2026-11-25"
    assert plan_system_close(register.state, "2026-11-27T02:00:00.000Z") == []
    payment = register.pay(kind="cash_sale", tendered=m(1_000))
    assert payment["amount"] == m(1_000)
    session = register.state.open_session
    assert session is not None and session.starting_float == {"SEK": 105_000}
