"""Cash rounding (Swedish öresutjämning): a cash total is rounded to the smallest amount the
coins can pay; card payments are not. Pure integer arithmetic on minor units.

Rounding belongs to cash in a place, not to a currency: SEK to whole kronor in Sweden, CHF to
0.05, the euro to 0.05 in Finland, the Netherlands, Belgium and Ireland and not elsewhere.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

RoundingMode = Literal["half_up", "half_even", "down", "up"]


@dataclass(frozen=True, slots=True)
class CashRounding:
    increment: int  # minor units: 100 is whole kronor, 5 is 0.05
    mode: RoundingMode = "half_up"

    def __post_init__(self) -> None:
        if self.increment < 1:
            raise ValueError(f"a rounding increment is at least 1 minor unit, not {self.increment}")

    def round(self, amount: int) -> int:
        """``amount`` (≥ 0, minor units) rounded to a multiple of the increment."""
        if amount < 0:
            raise ValueError("cash rounding applies to amounts of zero or more")
        step = self.increment
        below, rest = divmod(amount, step)
        if rest == 0:
            return amount
        up = (below + 1) * step
        down = below * step
        if self.mode == "down":
            return down
        if self.mode == "up":
            return up
        twice = 2 * rest
        if twice > step or (twice == step and (self.mode == "half_up" or below % 2 == 1)):
            return up
        return down


#: Where cash totals are rounded by law or by practice (product.md, research §5.4): country
#: (ISO 3166-1 alpha-2) → currency → rule. Elsewhere nothing is rounded unless configured.
COUNTRY_ROUNDING: dict[str, dict[str, CashRounding]] = {
    "SE": {"SEK": CashRounding(100)},  # whole kronor since 30 Sep 2010: 1–49 öre down
    "CH": {"CHF": CashRounding(5)},
    "LI": {"CHF": CashRounding(5)},
    "FI": {"EUR": CashRounding(5)},
    "NL": {"EUR": CashRounding(5)},
    "BE": {"EUR": CashRounding(5)},
    "IE": {"EUR": CashRounding(5)},
}


def rules_for(country: str | None,
              overrides: dict[str, CashRounding] | None = None) -> dict[str, CashRounding]:
    """The rounding of each currency at a place: the country's rules, then the overrides."""
    return {**COUNTRY_ROUNDING.get(country or "", {}), **(overrides or {})}
