"""The employee on commands that move cash or open the drawer, and the roles that may open it
without a sale: a real register and broker, the refusal journaled, nothing else changed."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from kassad.daemon.client import ERRORS, KassadClient
from kassad.daemon.contract.errors import ErrorCode
from kassad.daemon.register.service import RegisterService
from kassad.simulators.broker import MosquittoBroker
from kassad.simulators.printer.device import PrinterSimulator
from tests.support.register import (
    broker_config,
    journal_events,
    running_register,
    until,
    write_config,
)

NOT_PERMITTED = ERRORS[ErrorCode.NOT_PERMITTED]


def sek(n: int) -> dict[str, Any]:
    return {"amount": n, "currency": "SEK"}


PRINTER = {"model": "TM-T20II", "status_interval": 0.1, "status_timeout": 0.5,
           "reconnect_min": 0.05, "reconnect_max": 0.2}
DRAWER = {"open_level": "high", "open_timeout": 1.5, "kick_retries": 1}


@pytest.fixture
async def sim() -> AsyncIterator[PrinterSimulator]:
    async with PrinterSimulator() as printer:
        yield printer


@pytest.fixture
async def register(broker: MosquittoBroker, sim: PrinterSimulator,
                   tmp_path: Path) -> AsyncIterator[RegisterService]:
    port = await sim.serve_tcp()
    config = write_config(
        tmp_path / "r1.toml", port=broker.port, journal=tmp_path / "j.db", consumers=[],
        commands={"no_sale_roles": ["manager", "supervisor"]},
        roles={"manager": ["mia"], "supervisor": ["kim"], "cashier": ["anna"]},
        session={"count_rules": {"managers": ["bo"]}},
        devices={"printer": {**PRINTER, "transport": {"kind": "tcp", "host": "127.0.0.1",
                                                      "port": port}},
                 "drawer": DRAWER})
    async with running_register(config) as service:
        await until(lambda: service.devices is not None and service.devices.printer
                    is not None and service.devices.printer.status is not None,
                    what="printer status read")
        yield service


@pytest.fixture
async def pos(broker: MosquittoBroker, register: RegisterService) -> AsyncIterator[KassadClient]:
    # No employee of its own: each command says who, or nobody.
    async with KassadClient(broker_config(broker.port), store="S1", register="R1",
                            requester="pos-1") as client:
        yield client


def rejected(tmp_path: Path) -> list[tuple[str, str, str]]:
    return [(e["data"]["command"], e["data"]["code"], e["cause"]["cmd_id"])
            for e in journal_events(tmp_path / "j.db") if e["type"] == "cmd.rejected"]


async def test_cash_commands_without_an_employee_are_refused_and_change_nothing(
        pos: KassadClient, register: RegisterService, sim: PrinterSimulator,
        tmp_path: Path) -> None:
    with pytest.raises(NOT_PERMITTED) as refused:
        await pos.send("session.open", {"starting_float": sek(50_000)}, cmd_id="open-1")
    assert refused.value.details == {"field": "employee", "required": True}
    assert register.ledger.open_session is None
    assert rejected(tmp_path) == [("session.open", "not_permitted", "open-1")]
    # The same cmd_id resent gets the same answer from the journal, even with an employee.
    with pytest.raises(NOT_PERMITTED) as again:
        await pos.send("session.open", {"starting_float": sek(50_000)}, cmd_id="open-1",
                       employee="e17")
    assert again.value.reply["duplicate"] is True

    await pos.send("session.open", {"starting_float": sek(50_000)}, employee="e17")
    # A card payment moves no cash: no employee needed.
    await pos.send("payment.record", {"kind": "other", "payment_type": "card",
                                      "amount": sek(12_000)})
    before = (await pos.send("state.get")).data["state"]
    refusals = [
        ("payment.record", {"kind": "cash_sale", "tendered": sek(20_000), "change": sek(5_000)}),
        ("payment.record", {"kind": "cash_refund", "amount": sek(1_000)}),
        ("session.adjust", {"direction": "remove", "amount": sek(10_000)}),
        ("cash.transfer_out", {"to": {"kind": "safe", "id": "SAFE1"}, "amount": sek(10_000)}),
        ("session.close", {"counted": sek(50_000), "leave_in_drawer": sek(50_000)}),
        ("drawer.open", {"reason": "sale"}),
        ("print.receipt", {"document": {"blocks": [{"type": "text", "text": "x"}]},
                           "open_drawer": True}),
    ]
    for name, params in refusals:
        with pytest.raises(NOT_PERMITTED):
            await pos.send(name, params, cmd_id=f"no-employee-{name}-{len(rejected(tmp_path))}")
    after = (await pos.send("state.get")).data["state"]
    assert after["session"] == before["session"]  # nothing changed
    assert sim.kicks == [] and sim.receipts == []  # nothing kicked, nothing printed
    assert [code for _, code, _ in rejected(tmp_path)] == ["not_permitted"] * 8
    # Named, the same sale goes through, and the event names the employee.
    await pos.send("payment.record", {"kind": "cash_sale", "tendered": sek(20_000),
                                      "change": sek(5_000)}, employee="e17")
    sale = [e for e in journal_events(tmp_path / "j.db") if e["type"] == "payment.recorded"][-1]
    assert sale["actor"] == {"employee": "e17"}


async def test_no_sale_only_for_the_configured_roles(
        pos: KassadClient, sim: PrinterSimulator, tmp_path: Path) -> None:
    for who, roles in (("anna", ["cashier"]), ("nobody", [])):
        with pytest.raises(NOT_PERMITTED) as refused:
            await pos.send("drawer.open", {"reason": "no_sale"}, employee=who)
        assert refused.value.details == {"field": "employee", "employee": who, "roles": roles,
                                         "allowed_roles": ["manager", "supervisor"]}
        assert who in refused.value.message
    assert sim.kicks == []
    # Any other reason is anyone's; no_sale for a manager ([roles] or count_rules.managers)
    # or a supervisor.
    def closed() -> int:
        return sum(e["type"] == "drawer.closed" for e in journal_events(tmp_path / "j.db"))

    await pos.send("drawer.open", {"reason": "sale"}, employee="anna")
    for n, who in enumerate(("mia", "bo", "kim"), start=1):
        sim.close_drawer()
        await until(lambda n=n: closed() >= n, what="the register saw the drawer closed")
        await pos.send("drawer.open", {"reason": "no_sale"}, employee=who)
    assert len(sim.kicks) == 4
    assert [code for _, code, _ in rejected(tmp_path)] == ["not_permitted"] * 2
