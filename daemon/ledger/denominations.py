"""Denominations: the coins and notes of a currency, and counts of the till by denomination.

A count is ``{value in minor units: pieces}``; its total is Σ value × pieces. The minor unit is
not the smallest coin (SEK has öre but its smallest coin is 1 kr), so each currency lists its
own denominations; configuration may replace a list (cash-sessions-research.md §6).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Literal

from .money import exponent, format_money

Kind = Literal["coin", "note"]


@dataclass(frozen=True, slots=True)
class Denomination:
    value: int  # minor units
    kind: Kind


def _set(currency: str, coins: str, notes: str) -> tuple[Denomination, ...]:
    """Values written in major units (as on the coin), turned into minor units."""
    scale = 10 ** exponent(currency)

    def minor(text: str) -> int:
        whole, _, frac = text.partition(".")
        digits = exponent(currency)
        value: int = int(whole) * scale + (int(frac.ljust(digits, "0")) if frac else 0)
        return value

    return (tuple(Denomination(minor(v), "coin") for v in coins.split())
            + tuple(Denomination(minor(v), "note") for v in notes.split()))


# Denominations in circulation (research §6; Riksbanken, ECB, BoE, US Mint, Norges Bank,
# Danmarks Nationalbank, SNB). Notes still legal tender but no longer issued are kept (€500).
DEFAULT_DENOMINATIONS: Mapping[str, tuple[Denomination, ...]] = {
    "SEK": _set("SEK", "1 2 5 10", "20 50 100 200 500 1000"),
    "EUR": _set("EUR", "0.01 0.02 0.05 0.10 0.20 0.50 1 2", "5 10 20 50 100 200 500"),
    "USD": _set("USD", "0.01 0.05 0.10 0.25 0.50 1", "1 2 5 10 20 50 100"),
    "GBP": _set("GBP", "0.01 0.02 0.05 0.10 0.20 0.50 1 2", "5 10 20 50"),
    "NOK": _set("NOK", "1 5 10 20", "50 100 200 500 1000"),
    "DKK": _set("DKK", "0.50 1 2 5 10 20", "50 100 200 500 1000"),
    "CHF": _set("CHF", "0.05 0.10 0.20 0.50 1 2 5", "10 20 50 100 200 1000"),
}

Count = dict[int, int]  # denomination value (minor units) → pieces


class CountError(ValueError):
    """A count that names a denomination the currency does not have, or absurd pieces."""


def check_count(currency: str, counts: Mapping[int, int],
                denominations: tuple[Denomination, ...]) -> Count:
    """The count with its keys checked against the currency's denominations."""
    known = {d.value for d in denominations}
    unknown = sorted(v for v in counts if v not in known)
    if unknown:
        shown = ", ".join(format_money(v, currency) for v in unknown)
        allowed = ", ".join(format_money(v, currency) for v in sorted(known))
        raise CountError(f"{currency} has no {shown} (its coins and notes: {allowed})")
    return {value: pieces for value, pieces in sorted(counts.items()) if pieces}


def count_total(counts: Mapping[int, int]) -> int:
    return sum(value * pieces for value, pieces in counts.items())


def add_counts(*parts: Mapping[int, int]) -> Count:
    out: Count = {}
    for part in parts:
        for value, pieces in part.items():
            out[value] = out.get(value, 0) + pieces
    return {v: p for v, p in sorted(out.items()) if p}


def counts_to_json(counts: Mapping[int, int]) -> dict[str, int]:
    """JSON object keys are strings: ``{"10000": 3}`` is three 100.00 notes."""
    return {str(value): pieces for value, pieces in sorted(counts.items())}


def counts_from_json(data: Mapping[str, int]) -> Count:
    return {int(value): int(pieces) for value, pieces in data.items()}
