"""A scripted POS: the worked case of the register daemon issue, sent as a real POS would.

Used by the demo (printing each reply) and by the integration tests (asserting the figures).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from kassad.daemon.client import CommandError, KassadClient, Result


def sek(amount_minor: int) -> dict[str, Any]:
    return {"amount": amount_minor, "currency": "SEK"}


@dataclass(frozen=True)
class Step:
    title: str
    command: str
    params: dict[str, Any]
    expect_error: str | None = None


WORKED_CASE: tuple[Step, ...] = (
    Step("open the session with a float of 1000.00", "session.open",
         {"starting_float": sek(100000), "note": "morning float"}),
    Step("cash sale 149.50, paid with 200.00, change 50.50", "payment.record",
         {"kind": "cash_sale", "amount": sek(14950), "tendered": sek(20000),
          "change": sek(5050), "reference": "order-1001"}),
    Step("card sale 320.00", "payment.record",
         {"kind": "other", "payment_type": "card", "amount": sek(32000),
          "reference": "order-1002"}),
    Step("cash refund 20.00", "payment.record",
         {"kind": "cash_refund", "amount": sek(2000), "reference": "order-0998"}),
    Step("remove 300.00 (safe drop)", "session.adjust",
         {"direction": "remove", "amount": sek(30000), "note": "safe drop"}),
    Step("close counting 828.00 and leaving 1000.00 (refused: more than counted)",
         "session.close", {"counted": sek(82800), "leave_in_drawer": sek(100000)},
         expect_error="amount_out_of_range"),
    Step("close counting 828.00, leaving 500.00", "session.close",
         {"counted": sek(82800), "leave_in_drawer": sek(50000), "note": "end of day"}),
    Step("cash sale 50.00 with no session open (opens the next one by itself)",
         "payment.record",
         {"kind": "cash_sale", "tendered": sek(5000), "change": sek(0),
          "reference": "order-1003"}),
)

Outcome = Result | CommandError


async def run_steps(client: KassadClient, steps: tuple[Step, ...] = WORKED_CASE, *,
                    employee: str = "e17",
                    on_step: Callable[[Step, Outcome], Awaitable[None] | None] | None = None,
                    ) -> list[Outcome]:
    """Send each step; collect the result or the error (an expected error is an outcome)."""
    outcomes: list[Outcome] = []
    for step in steps:
        outcome: Outcome
        try:
            outcome = await client.send(step.command, step.params, employee=employee)
        except CommandError as e:
            if step.expect_error != e.code:
                raise
            outcome = e
        outcomes.append(outcome)
        if on_step is not None:
            maybe = on_step(step, outcome)
            if maybe is not None:
                await maybe
    return outcomes
