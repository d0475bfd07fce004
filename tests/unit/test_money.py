"""Money: ISO 4217 exponents, exact decimal text at the edges, integer-only amounts."""

from __future__ import annotations

from collections import Counter

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from kassad.daemon.ledger.money import (
    ISO_4217_EXPONENTS,
    Money,
    MoneyError,
    add_totals,
    exponent,
    format_decimal,
    is_iso_currency,
    parse_decimal,
)

ALL_CURRENCIES = sorted(ISO_4217_EXPONENTS)


@pytest.mark.parametrize(
    ("currency", "digits"),
    [("JPY", 0), ("SEK", 2), ("KWD", 3), ("CLF", 4), ("EUR", 2), ("USD", 2), ("BHD", 3)],
)
def test_exponent_of_known_currencies(currency, digits):
    assert exponent(currency) == digits
    assert is_iso_currency(currency)


@pytest.mark.parametrize("code", ["ABC", "XXX", "XAU", "sek", "SEKK", "", "EU"])
def test_unknown_currency_raises(code):
    assert not is_iso_currency(code)
    with pytest.raises(MoneyError):
        exponent(code)
    with pytest.raises(MoneyError):
        parse_decimal("1", code)
    with pytest.raises(MoneyError):
        format_decimal(1, code)
    with pytest.raises(MoneyError):
        Money(1, code)


def test_every_exponent_is_a_minor_unit_digit_count():
    assert set(ISO_4217_EXPONENTS.values()) <= {0, 2, 3, 4}
    assert all(len(code) == 3 and code.isupper() for code in ISO_4217_EXPONENTS)


@settings(max_examples=200, deadline=None)
@given(st.one_of(st.integers(-10_000, 10_000), st.integers(-(10**18), 10**18)))
def test_format_then_parse_round_trips_for_every_currency(minor):
    for currency in ALL_CURRENCIES:
        digits = ISO_4217_EXPONENTS[currency]
        text = format_decimal(minor, currency)
        assert parse_decimal(text, currency) == minor, (currency, text)
        # The text has exactly the currency's minor digits, and a sign only when negative.
        body = text.removeprefix("-")
        assert text.startswith("-") == (minor < 0)
        if digits:
            whole, frac = body.split(".")
            assert len(frac) == digits
        else:
            whole = body
            assert "." not in body
        assert whole.isdigit()
        assert whole == "0" or not whole.startswith("0")


def test_round_trip_zero():
    for currency in ALL_CURRENCIES:
        assert parse_decimal(format_decimal(0, currency), currency) == 0
    assert format_decimal(0, "SEK") == "0.00"
    assert format_decimal(0, "JPY") == "0"
    assert format_decimal(0, "CLF") == "0.0000"


@pytest.mark.parametrize(
    ("text", "currency", "minor"),
    [
        ("149.50", "SEK", 14950),
        ("149.5", "SEK", 14950),
        ("1.5", "KWD", 1500),
        ("500", "JPY", 500),
        ("500.000", "JPY", 500),
        ("1.500", "SEK", 150),
        ("-1.50", "SEK", -150),
        ("0.0001", "CLF", 1),
        ("0", "EUR", 0),
        (" 2.00 ", "EUR", 200),
    ],
)
def test_parse_decimal_examples(text, currency, minor):
    assert parse_decimal(text, currency) == minor


@pytest.mark.parametrize(
    ("minor", "currency", "text"),
    [(14950, "SEK", "149.50"), (-150, "SEK", "-1.50"), (500, "JPY", "500"),
     (1500, "KWD", "1.500"), (-5, "EUR", "-0.05"), (1, "CLF", "0.0001")],
)
def test_format_decimal_examples(minor, currency, text):
    assert format_decimal(minor, currency) == text


@pytest.mark.parametrize(
    ("text", "currency"),
    [("1.005", "SEK"), ("0.001", "EUR"), ("1.5", "JPY"), ("0.0001", "KWD"), ("1.00001", "CLF")],
)
def test_parse_refuses_more_decimals_than_the_minor_unit(text, currency):
    with pytest.raises(MoneyError):
        parse_decimal(text, currency)


@pytest.mark.parametrize(
    "text",
    ["", " ", "abc", "1,50", "1.", ".5", "1e3", "--1", "+1", "1.2.3", "NaN", "inf", "1 000",
     "12a", "- 1", "0x10", "1_000"],
)
def test_parse_refuses_garbage(text):
    with pytest.raises(MoneyError):
        parse_decimal(text, "SEK")


@pytest.mark.parametrize("amount", [1.5, 100.0, 0.0, True, False, "100", None])
def test_money_refuses_non_integer_amount(amount):
    with pytest.raises(MoneyError):
        Money(amount, "SEK")


def test_money_accepts_int_and_prints_decimal():
    assert str(Money(14950, "SEK")) == "149.50 SEK"
    assert str(Money(-150, "SEK")) == "-1.50 SEK"
    assert str(Money(500, "JPY")) == "500 JPY"


totals = st.dictionaries(st.sampled_from(["SEK", "EUR", "JPY", "KWD"]),
                         st.integers(-(10**12), 10**12), max_size=4)


@settings(max_examples=200, deadline=None)
@given(st.lists(totals, max_size=5))
def test_add_totals_sums_per_currency(parts):
    reference: Counter[str] = Counter()
    for part in parts:
        for currency, amount in part.items():
            reference[currency] += amount
    out = add_totals(*parts)
    assert set(out) == {c for part in parts for c in part}
    assert all(out[c] == reference[c] for c in out)
