"""Foreign cash taken at an exchange rate: the rate is a decimal (never a float), the result
an integer of the base currency's minor units, rounded half up (at the last minor unit)."""

from __future__ import annotations

from decimal import ROUND_HALF_UP, Decimal, InvalidOperation

from .money import exponent

#: A rate has at most this many decimals: banks quote 4 to 6.
RATE_PLACES = 8


class RateError(ValueError):
    """A rate that is not a positive decimal number."""


def parse_rate(text: str) -> Decimal:
    """``"11.4250"`` → Decimal; base-currency units for one unit of the foreign currency."""
    try:
        rate = Decimal(text)
    except InvalidOperation:
        raise RateError(f"{text!r} is not a decimal number") from None
    if not rate.is_finite() or rate <= 0:
        raise RateError(f"{text!r} is not a positive rate")
    if -int(rate.as_tuple().exponent) > RATE_PLACES:
        raise RateError(f"{text!r} has more than {RATE_PLACES} decimals")
    return rate


def convert(amount: int, currency: str, rate: Decimal, base: str) -> int:
    """``amount`` minor units of ``currency`` in minor units of ``base`` at ``rate``."""
    major = Decimal(amount).scaleb(-exponent(currency))
    value = (major * rate).scaleb(exponent(base))
    return int(value.quantize(Decimal(1), rounding=ROUND_HALF_UP))
