"""Money: integer minor units of an ISO 4217 currency. Never a float.

An amount is an ``int`` count of the currency's minor unit (öre, cent, fils …); the
exponent says how many decimal digits the minor unit has (SEK 2, JPY 0, KWD 3, CLF 4).
Decimal text is only parsed and printed here, at the edges, with exact integer arithmetic.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

# ISO 4217 active codes and their minor-unit exponents (ISO 4217 list one, 2024 edition).
# Funds and precious-metal codes (XAU, XDR …) have no minor unit and are not cash: left out.
_EXPONENT_0 = (
    "BIF CLP DJF GNF ISK JPY KMF KRW PYG RWF UGX UYI VND VUV XAF XOF XPF"
)
_EXPONENT_3 = "BHD IQD JOD KWD LYD OMR TND"
_EXPONENT_4 = "CLF UYW"
_EXPONENT_2 = (
    "AED AFN ALL AMD ANG AOA ARS AUD AWG AZN BAM BBD BDT BGN BMD BND BOB BOV BRL BSD BTN BWP "
    "BYN BZD CAD CDF CHE CHF CHW COP COU CRC CUC CUP CVE CZK DKK DOP DZD EGP ERN ETB EUR FJD "
    "FKP GBP GEL GHS GIP GMD GTQ GYD HKD HNL HTG HUF IDR ILS INR IRR JMD KES KGS KHR KPW KYD "
    "KZT LAK LBP LKR LRD LSL MAD MDL MGA MKD MMK MNT MOP MRU MUR MVR MWK MXN MXV MYR MZN NAD "
    "NGN NIO NOK NPR NZD PAB PEN PGK PHP PKR PLN QAR RON RSD RUB SAR SBD SCR SDG SEK SGD SHP "
    "SLE SOS SRD SSP STN SVC SYP SZL THB TJS TMT TOP TRY TTD TWD TZS UAH USD USN UYU UZS VED "
    "VES WST XCD XCG YER ZAR ZMW ZWG"
)

ISO_4217_EXPONENTS: Mapping[str, int] = {
    code: exponent
    for codes, exponent in ((_EXPONENT_0, 0), (_EXPONENT_2, 2), (_EXPONENT_3, 3), (_EXPONENT_4, 4))
    for code in codes.split()
}

_DECIMAL_RE = re.compile(r"^(?P<sign>-)?(?P<whole>[0-9]+)(?:\.(?P<frac>[0-9]+))?$")


class MoneyError(ValueError):
    """A currency code or a decimal amount that cannot be money."""


def is_iso_currency(code: str) -> bool:
    return code in ISO_4217_EXPONENTS


def exponent(currency: str) -> int:
    """Minor-unit digits of an ISO 4217 currency (SEK → 2)."""
    try:
        return ISO_4217_EXPONENTS[currency]
    except KeyError:
        raise MoneyError(f"{currency!r} is not an ISO 4217 currency code") from None


def parse_decimal(text: str, currency: str) -> int:
    """Parse ``"149.50"`` in SEK into 14950 minor units; refuse digits finer than the minor unit."""
    digits = exponent(currency)
    match = _DECIMAL_RE.match(text.strip())
    if match is None:
        raise MoneyError(f"{text!r} is not a decimal amount")
    frac = (match["frac"] or "").rstrip("0")
    if len(frac) > digits:
        raise MoneyError(f"{text!r} has more decimals than {currency} has ({digits})")
    minor: int = int(match["whole"]) * 10**digits + (int(frac.ljust(digits, "0")) if digits else 0)
    return -minor if match["sign"] else minor


def format_decimal(minor: int, currency: str) -> str:
    """14950 SEK → ``"149.50"``; -150 → ``"-1.50"``; JPY 500 → ``"500"``."""
    digits = exponent(currency)
    sign = "-" if minor < 0 else ""
    whole, frac = divmod(abs(minor), 10**digits)
    return f"{sign}{whole}.{frac:0{digits}d}" if digits else f"{sign}{whole}"


def format_money(minor: int, currency: str) -> str:
    return f"{format_decimal(minor, currency)} {currency}"


@dataclass(frozen=True, slots=True)
class Money:
    """An amount in minor units with its currency; arithmetic only within one currency."""

    amount: int
    currency: str

    def __post_init__(self) -> None:
        if type(self.amount) is not int:
            raise MoneyError(f"amount must be an integer count of minor units, not {self.amount!r}")
        exponent(self.currency)

    def __str__(self) -> str:
        return format_money(self.amount, self.currency)


# Per-currency totals: currency code → minor units. The ledger keeps every figure this way.
Totals = dict[str, int]


def add_totals(*parts: Mapping[str, int]) -> Totals:
    """Sum per-currency totals; a currency missing from a part counts as zero."""
    out: Totals = {}
    for part in parts:
        for currency, amount in part.items():
            out[currency] = out.get(currency, 0) + amount
    return out


def sub_totals(left: Mapping[str, int], right: Mapping[str, int]) -> Totals:
    return add_totals(left, {c: -a for c, a in right.items()})


def currencies_of(parts: Iterable[Mapping[str, int]]) -> set[str]:
    return {currency for part in parts for currency in part}
