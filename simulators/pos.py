"""A scripted POS: commands sent to a register over MQTT as a real POS sends them.

Two scripts:

* :data:`WORKED_CASE` — the register daemon issue's worked case as bare commands
  (:func:`run_steps`); the integration tests assert its figures.
* :data:`DAY` — the demo's day of sales on each register of the simulated store: a float
  counted on the coin acceptor or by hand, cash and card sales each with its receipt (a cash
  sale's receipt kicks the drawer open, the cashier pushes it shut), a refund, a safe drop
  counted on the note validator, a printer running out of paper mid-day, and the close with
  the cash counted by denomination. :class:`ScriptedPos` plays it; what a person does with the
  hardware (feeding a counter, closing the drawer, refilling paper) it asks of a
  :class:`Cashier`, which the demo implements on the device simulators.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from kassad.daemon.client import CommandError, KassadClient, Result, new_cmd_id
from kassad.daemon.ledger.money import format_decimal

#: How often the POS asks for the register's state while it waits for something to happen.
STATE_POLL = 0.05


def sek(amount_minor: int) -> dict[str, Any]:
    return {"amount": amount_minor, "currency": "SEK"}


# -- the worked case, as bare commands ---------------------------------------------------------


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


# -- the demo's day: what happens at each register ---------------------------------------------

#: The counters' names in the registers' configuration.
COINS, NOTES = "coins", "notes"


@dataclass(frozen=True)
class Item:
    name: str
    price: int  # minor units


@dataclass(frozen=True)
class OpenSession:
    """Open with the float counted by hand (``counts``: value in minor units → pieces), or fed
    through ``counter`` (``pieces``: the value of each coin or note)."""

    counts: Mapping[int, int] = field(default_factory=dict)
    counter: str | None = None
    pieces: tuple[int, ...] = ()

    @property
    def starting_float(self) -> int:
        if self.counter is not None:
            return sum(self.pieces)
        return sum(value * n for value, n in self.counts.items())


@dataclass(frozen=True)
class Sale:
    """A sale paid in cash (``tendered``: what the customer hands over) or by card (None)."""

    order: str
    items: tuple[Item, ...]
    tendered: int | None = None
    #: The printer runs out of paper just before this sale's receipt.
    paper_runs_out: bool = False

    @property
    def total(self) -> int:
        return sum(item.price for item in self.items)

    @property
    def cash(self) -> bool:
        return self.tendered is not None

    @property
    def change(self) -> int:
        return 0 if self.tendered is None else self.tendered - self.total


@dataclass(frozen=True)
class Refund:
    """An item brought back, its price paid back in cash."""

    order: str
    item: Item


@dataclass(frozen=True)
class SafeDrop:
    """Notes taken from the drawer to the safe, counted on the way through ``counter``."""

    counter: str
    pieces: tuple[int, ...]


@dataclass(frozen=True)
class CloseSession:
    """Close with the drawer counted by hand by denomination, leaving ``leave`` as the float."""

    counts: Mapping[int, int]
    leave: int

    @property
    def counted(self) -> int:
        return sum(value * n for value, n in self.counts.items())


Action = OpenSession | Sale | Refund | SafeDrop | CloseSession

KAFFE, BULLE, SMORGAS = Item("Kaffe", 3500), Item("Kanelbulle", 2900), Item("Smörgås", 8900)
JUICE, LUNCH = Item("Juice", 3200), Item("Dagens lunch", 11900)
TROJA, JACKA, MOSSA = Item("Tröja", 24900), Item("Jacka", 89900), Item("Mössa", 14900)
BYXOR, STRUMPOR = Item("Byxor", 54900), Item("Strumpor", 2900)
HALSDUK = Item("Halsduk", 19950)

#: One day at each register. Cash totals are whole kronor (Swedish cash rounding); card
#: payments keep their öre. R1 (the café) counts its coin float on the coin acceptor and
#: closes 2.00 short; R2 (the shop) opens with a float counted by hand, runs out of paper
#: once, sends 1000.00 to the safe through the note validator and closes even.
DAY: Mapping[str, tuple[Action, ...]] = {
    "R1": (
        OpenSession(counter=COINS, pieces=(1000,) * 6 + (500,) * 4 + (200,) * 5 + (100,) * 10),
        Sale("1001", (KAFFE, BULLE), tendered=10000),
        Sale("1002", (SMORGAS, JUICE)),
        Sale("1003", (LUNCH, KAFFE), tendered=20000),
        Refund("0998", BULLE),
        Sale("1004", (KAFFE, KAFFE)),
        Sale("1005", (SMORGAS,), tendered=10000),
        # expected 100 + 64 + 154 − 29 + 89 = 378.00; counted 376.00
        CloseSession({20000: 1, 10000: 1, 5000: 1, 1000: 2, 500: 1, 100: 1}, leave=10000),
    ),
    "R2": (
        OpenSession({20000: 2, 10000: 3, 5000: 4, 2000: 3, 1000: 2, 500: 2, 100: 10}),
        Sale("2001", (TROJA,), tendered=30000),
        Sale("2002", (JACKA, MOSSA)),
        Sale("2003", (BYXOR, STRUMPOR), tendered=60000),
        Sale("2004", (HALSDUK,), paper_runs_out=True),
        SafeDrop(NOTES, (50000, 20000, 20000, 10000)),
        Sale("2005", (MOSSA,), tendered=20000),
        # expected 1000 + 249 + 578 − 1000 + 149 = 976.00; counted 976.00
        CloseSession({20000: 2, 10000: 4, 5000: 2, 2000: 3, 1000: 1, 500: 1, 100: 1},
                     leave=50000),
    ),
}


class Cashier(Protocol):
    """What the person at the register does with the hardware."""

    async def feed(self, counter: str, currency: str, pieces: Sequence[int]) -> None:
        """Put ``pieces`` (values in minor units) through the counter once it takes them."""

    async def close_drawer(self) -> None:
        """Push the cash drawer shut."""

    async def paper_out(self) -> None:
        """The receipt roll runs out."""

    async def refill_paper(self) -> None:
        """Put in a new roll."""

    async def wait_printed(self, text: str) -> None:
        """Until a receipt with ``text`` on it has come out of the printer."""


class ScriptedPos:
    """Plays a register's day: one ``report`` line per step, ``pace`` seconds between steps
    (and while the cashier takes the money), so that a person can follow it."""

    def __init__(self, client: KassadClient, cashier: Cashier, *, title: str,
                 report: Callable[[str], None], pace: float = 0.0, currency: str = "SEK",
                 employee: str = "e17") -> None:
        self.client = client
        self.cashier = cashier
        self.title = title
        self.report = report
        self.pace = pace
        self.currency = currency
        self.employee = employee

    # -- the day --------------------------------------------------------------------------

    async def wait_ready(self, counters: Sequence[str], timeout: float = 30.0) -> None:  # noqa: ASYNC109
        """Until the register answers and its printer, drawer and ``counters`` are there."""

        def ready(state: dict[str, Any]) -> bool:
            devices = state["devices"]
            return (devices["printer"].get("state") == "ready"
                    and devices["drawer"].get("state") == "closed"
                    and all(devices["counters"].get(c, {}).get("connected") for c in counters))

        await self.until(ready, "the printer, the drawer and the counters to be ready", timeout)

    async def run(self, actions: Sequence[Action]) -> None:
        for action in actions:
            match action:
                case OpenSession():
                    await self.open_session(action)
                case Sale():
                    await self.sale(action)
                case Refund():
                    await self.refund(action)
                case SafeDrop():
                    await self.safe_drop(action)
                case CloseSession():
                    await self.close_session(action)
            await self.pause()

    async def open_session(self, step: OpenSession) -> None:
        if step.counter is not None:
            count = await self.count(step.counter, step.pieces)
            entry: dict[str, Any] = {"currency": self.currency, "from_counter": step.counter}
            how = f"{count['pieces']} pieces fed through the {step.counter} counter"
        else:
            entry = {"currency": self.currency,
                     "counts": {str(value): n for value, n in step.counts.items()}}
            how = f"{sum(step.counts.values())} pieces counted by hand, by denomination"
        session = (await self.send("session.open", {"starting_float": entry,
                                                    "note": "morning float"}))["session"]
        self.report(f"open session {session['number']}: float "
                    f"{self.money(session['starting_float'])} ({how})")

    async def sale(self, sale: Sale) -> None:
        params: dict[str, Any] = {"reference": f"order-{sale.order}"}
        if sale.tendered is not None:
            params |= {"kind": "cash_sale", "amount": self.amount(sale.total),
                       "tendered": self.amount(sale.tendered),
                       "change": self.amount(sale.change)}
            what = (f"cash {self.decimal(sale.total)}, tendered {self.decimal(sale.tendered)}, "
                    f"change {self.decimal(sale.change)}")
        else:
            params |= {"kind": "other", "payment_type": "card", "amount": self.amount(sale.total)}
            what = f"card {self.decimal(sale.total)}"
        await self.send("payment.record", params)
        document = self.receipt(sale.order, [(i.name, i.price) for i in sale.items],
                                self.payment_lines(sale))
        if sale.paper_runs_out:
            self.report(f"sale {sale.order}: {what}")
            await self.print_through_paper_out(sale.order, document, open_drawer=sale.cash)
            return
        printed = await self.print(document, open_drawer=sale.cash)
        self.report(f"sale {sale.order}: {what} · {printed}")

    async def refund(self, refund: Refund) -> None:
        await self.send("payment.record", {"kind": "cash_refund",
                                           "amount": self.amount(refund.item.price),
                                           "reference": f"order-{refund.order}"})
        await self.drawer("refund", f"refund of order {refund.order}")
        document = self.receipt(refund.order, [(f"Retur: {refund.item.name}", -refund.item.price)],
                                [("Återbetalt kontant", refund.item.price)])
        printed = await self.print(document, open_drawer=False)
        self.report(f"refund of order {refund.order}: cash {self.decimal(refund.item.price)} "
                    f"paid back · drawer opened, closed · {printed}")

    async def safe_drop(self, drop: SafeDrop) -> None:
        await self.drawer("adjustment", "safe drop")
        count = await self.count(drop.counter, drop.pieces)
        total = count["totals"][self.currency]
        session = (await self.send("session.adjust", {
            "direction": "remove", "amount": self.amount(total),
            "note": f"safe drop, counted on the {drop.counter} counter"}))["session"]
        self.report(f"safe drop: {count['pieces']} notes through the {drop.counter} counter, "
                    f"{self.decimal(total)} to the safe · drawer holds "
                    f"{self.money(session['expected_cash'])}")

    async def close_session(self, close: CloseSession) -> None:
        await self.drawer("count", "end of day count")
        session = (await self.send("session.close", {
            "counted": {"currency": self.currency,
                        "counts": {str(value): n for value, n in close.counts.items()}},
            "leave_in_drawer": self.amount(close.leave), "note": "end of day"}))["session"]
        # The register prints its own Z report (and a slip for the cash removed) once the
        # close is journaled; the cashier tears it off.
        await self.cashier.wait_printed("Z-DAGRAPPORT")
        self.report(f"close session {session['number']}: expected "
                    f"{self.money(session['expected'])}, counted {self.money(session['counted'])}, "
                    f"discrepancy {self.money(session['discrepancy'])}, left "
                    f"{self.money(session['left_in_drawer'])} · Z report printed")

    # -- the pieces of a step -------------------------------------------------------------

    async def count(self, counter: str, pieces: Sequence[int]) -> dict[str, Any]:
        """A counting run: started, fed by the cashier, stopped once every piece is counted."""
        run = asyncio.create_task(self.send("counter.count", {"device": counter,
                                                              "action": "start"}))
        feed = asyncio.create_task(self.cashier.feed(counter, self.currency, pieces))
        try:
            # The start's answer comes when the run ends: before the feed only if refused.
            await asyncio.wait({run, feed}, return_when=asyncio.FIRST_COMPLETED)
            if run.done():
                run.result()
                raise RuntimeError(f"{self.title}: the {counter} counting run ended at once")
            await feed

            def counted(state: dict[str, Any]) -> bool:
                live = state["devices"]["counters"][counter]["run"]
                return live is not None and live["pieces"] >= len(pieces)

            await self.until(counted, f"the {counter} counter to count {len(pieces)} pieces")
            stopped = await self.send("counter.count", {"device": counter, "action": "stop"})
            await run
        finally:
            run.cancel()
            feed.cancel()
        count: dict[str, Any] = stopped["count"]
        return count

    async def print(self, document: dict[str, Any], *, open_drawer: bool,
                    cmd_id: str | None = None) -> str:
        """Print a receipt; one that opens the drawer waits for the cashier to close it."""
        result = await self.send("print.receipt", {"document": document,
                                                   "open_drawer": open_drawer}, cmd_id=cmd_id)
        if not open_drawer:
            return "receipt printed"
        if result.get("drawer") != "open":
            return f"receipt printed, drawer: {result.get('drawer')}"
        await self.pause()
        await self.cashier.close_drawer()
        await self.until_drawer("closed")
        return "receipt printed · drawer opened, closed"

    async def print_through_paper_out(self, order: str, document: dict[str, Any], *,
                                      open_drawer: bool) -> None:
        """The roll runs out: the receipt waits for paper, and prints once it is refilled."""
        await self.cashier.paper_out()
        await self.until(lambda s: s["devices"]["printer"].get("paper") == "out",
                         "the printer to report paper out")
        self.report("the printer is out of paper (an alarm in the store view)")
        cmd_id = new_cmd_id()
        job = asyncio.create_task(self.print(document, open_drawer=open_drawer, cmd_id=cmd_id))
        try:
            await self.until_known(cmd_id)
            self.report(f"the receipt of sale {order} waits for paper")
            await self.pause()
            await self.cashier.refill_paper()
            printed = await job
        finally:
            job.cancel()
        self.report(f"paper refilled · the waiting {printed}")

    async def drawer(self, reason: str, note: str) -> None:
        """Open the drawer (no sale), then the cashier closes it."""
        await self.send("drawer.open", {"reason": reason, "note": note})
        await self.pause()
        await self.cashier.close_drawer()
        await self.until_drawer("closed")

    def receipt(self, order: str, lines: Sequence[tuple[str, int]],
                payment: Sequence[tuple[str, int]]) -> dict[str, Any]:
        total = sum(price for _, price in lines)
        blocks: list[dict[str, Any]] = [
            {"type": "text", "text": "Kvarnen", "bold": True, "align": "center",
             "double_height": True, "double_width": True},
            {"type": "text", "text": f"Storgatan 1, Uppsala · {self.title}", "align": "center"},
            {"type": "text", "text": f"Order {order}", "align": "center"},
            {"type": "rule"},
            *({"type": "columns", "left": name, "right": self.decimal(price)}
              for name, price in lines),
            {"type": "rule"},
            {"type": "columns", "left": f"Totalt {self.currency}", "right": self.decimal(total),
             "bold": True},
            *({"type": "columns", "left": name, "right": self.decimal(amount)}
              for name, amount in payment),
            {"type": "text", "text": "Tack för besöket!", "align": "center"},
            {"type": "cut"},
        ]
        return {"blocks": blocks}

    def payment_lines(self, sale: Sale) -> list[tuple[str, int]]:
        if sale.tendered is None:
            return [("Kort", sale.total)]
        return [("Kontant", sale.tendered), ("Växel", sale.change)]

    # -- talking to the register ----------------------------------------------------------

    async def send(self, command: str, params: dict[str, Any], *,
                   cmd_id: str | None = None) -> dict[str, Any]:
        result = await self.client.send(command, params, employee=self.employee, cmd_id=cmd_id)
        return result.data

    async def state(self) -> dict[str, Any]:
        state: dict[str, Any] = (await self.client.send("state.get")).data["state"]
        return state

    async def until(self, predicate: Callable[[dict[str, Any]], bool], what: str,
                    timeout: float = 30.0) -> dict[str, Any]:  # noqa: ASYNC109
        """Ask ``state.get`` until ``predicate`` holds: a query, never journaled, so a POS may
        poll it (a screen refreshing, not a synchronisation of the script)."""
        try:
            async with asyncio.timeout(timeout):
                while True:
                    state = await self.state()
                    if predicate(state):
                        return state
                    await asyncio.sleep(STATE_POLL)
        except TimeoutError:
            raise TimeoutError(f"{self.title}: waited {timeout:g} s for {what}") from None

    async def until_drawer(self, wanted: str) -> None:
        await self.until(lambda s: s["devices"]["drawer"]["state"] == wanted,
                         f"the drawer to be {wanted}")

    async def until_known(self, cmd_id: str, timeout: float = 30.0) -> None:  # noqa: ASYNC109
        """Until the register has journaled the command (``cmd.status`` knows it)."""
        try:
            async with asyncio.timeout(timeout):
                while True:
                    try:
                        await self.client.send("cmd.status", {"of_cmd_id": cmd_id})
                        return
                    except CommandError as e:
                        if e.code != "unknown_cmd_id":
                            raise
                    await asyncio.sleep(STATE_POLL)
        except TimeoutError:
            raise TimeoutError(f"{self.title}: command {cmd_id} never reached the "
                               "register") from None

    async def pause(self) -> None:
        if self.pace > 0:
            await asyncio.sleep(self.pace)

    def amount(self, minor: int) -> dict[str, Any]:
        return {"amount": minor, "currency": self.currency}

    def decimal(self, minor: int) -> str:
        return format_decimal(minor, self.currency)

    def money(self, totals: Mapping[str, int]) -> str:
        return ", ".join(f"{format_decimal(v, c)} {c}" for c, v in sorted(totals.items())) \
            or f"0 {self.currency}"

