"""The full cash session over MQTT (issue 8): reports and slips printed by the daemon on the
simulated printer, Z numbers and copies, cash rounding, and the count rules as a POS meets them
(blind figures, a recount, a manager's approval)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from kassad.daemon.client import ERRORS, KassadClient
from kassad.daemon.contract.errors import ErrorCode
from kassad.simulators.broker import MosquittoBroker
from kassad.simulators.printer.device import PrinterSimulator
from tests.support.register import (
    broker_config,
    eventually,
    journal_events,
    running_register,
    until,
    write_config,
)

PRINTER = {"model": "TM-T20II", "status_interval": 0.1, "status_timeout": 0.5,
           "reconnect_min": 0.05, "reconnect_max": 0.2, "completion_timeout": 5.0}


def sek(amount: int) -> dict[str, Any]:
    return {"amount": amount, "currency": "SEK"}


@pytest.fixture
async def printer() -> AsyncIterator[PrinterSimulator]:
    async with PrinterSimulator() as sim:
        yield sim


def config(tmp_path: Path, broker: MosquittoBroker, port: int, **sections: Any) -> Path:
    return write_config(
        tmp_path / "r1.toml", port=broker.port, journal=tmp_path / "j.db", consumers=[],
        money={"base_currency": "SEK", "accepted": ["SEK"], "country": "SE"},
        reports={"language": "sv", "company": "Kaffebaren AB", "org_number": "556677-8899"},
        devices={"printer": {**PRINTER, "transport": {"kind": "tcp", "host": "127.0.0.1",
                                                      "port": port}}},
        **sections)


def issued(tmp_path: Path) -> list[tuple[str, int | None, int]]:
    return [(e["data"]["kind"], e["data"]["number"], e["data"]["copy_number"])
            for e in journal_events(tmp_path / "j.db") if e["type"] == "report.issued"]


async def test_reports_and_slips_are_printed_from_the_journal(
        broker: MosquittoBroker, printer: PrinterSimulator, tmp_path: Path) -> None:
    port = await printer.serve_tcp()
    async with running_register(config(tmp_path, broker, port)) as register, \
            KassadClient(broker_config(broker.port), store="S1", register="R1",
                         requester="pos-1", employee="e1") as pos:
        await until(lambda: register.devices is not None and register.devices.printer
                    is not None and register.devices.printer.status is not None,
                    what="the printer answering")
        await pos.send("session.open", {"starting_float": sek(100_000)}, employee="anna")
        sale = await pos.send("payment.record", {
            "kind": "cash_sale", "amount": sek(14_950), "tendered": sek(20_000),
            "change": sek(5_000)}, employee="anna")
        assert sale.data["payment"]["rounding"] == sek(50)
        await pos.send("payment.record", {"kind": "other", "payment_type": "card",
                                          "amount": sek(32_000)}, employee="anna")
        await pos.send("session.adjust", {"direction": "remove", "amount": sek(30_000),
                                          "note": "till kassaskåpet"}, employee="anna")
        slip = (await printer.wait_receipts(1))[0]
        assert "VÄXELKASSA ÄNDRAD" in slip.text
        assert "300,00" in slip.text and "till kassaskåpet" in slip.text

        x = await pos.send("session.report", {"kind": "x", "print": True}, employee="anna")
        assert x.data["report"]["session"]["reports"]["x_printed"] == 1
        x_paper = (await printer.wait_receipts(2))[1]
        for line in ("X-DAGRAPPORT", "Kaffebaren AB", "Org.nr 556677-8899", "Öresavrundning",
                     "Förväntat kontantbelopp"):
            assert line in x_paper.text, (line, x_paper.text)
        assert "Z-nr" not in x_paper.text  # an X is not numbered as a Z

        await pos.send("session.close", {"counted": sek(85_000),
                                         "leave_in_drawer": sek(50_000)}, employee="bo")
        removed, z_paper = (await printer.wait_receipts(4))[2:4]
        for line in ("Z-DAGRAPPORT", "Z-nr 1", "Räknat", "Differens", "Kvar i lådan",
                     "Grand total försäljning", "Kontrollkedja"):
            assert line in z_paper.text, (line, z_paper.lines)
        assert "KOPIA" not in z_paper.text
        assert "KONTANTER UTTAGNA" in removed.text and "350,00" in removed.text

        for n in (1, 2):
            await pos.send("session.report", {"kind": "z", "print": True}, employee="bo")
            copy = (await printer.wait_receipts(4 + n))[3 + n]
            assert f"KOPIA {n}" in copy.text and "Z-nr 1" in copy.text
        last = await pos.send("session.report", {"kind": "z"})
        assert last.data["report"]["session"]["reports"] == {"x_printed": 1, "z_number": 1,
                                                            "z_copies": 2}

        # The next session's Z is number 2: numbered per register, without gaps.
        await pos.send("payment.record", {"kind": "cash_sale", "tendered": sek(1_000)})
        await pos.send("session.close", {"counted": sek(51_000), "leave_in_drawer": sek(0)})
        second = (await printer.wait_receipts(8))[7]  # after its cash-removed slip
        assert "Z-nr 2" in second.text
    assert issued(tmp_path) == [("x", None, 0), ("z", 1, 0), ("z", 1, 1), ("z", 1, 2),
                                ("z", 2, 0)]


async def test_a_blind_close_with_a_recount_and_a_managers_approval(
        broker: MosquittoBroker, printer: PrinterSimulator, tmp_path: Path) -> None:
    port = await printer.serve_tcp()
    rules = {"count_rules": {"blind": True, "max_difference": {"SEK": 1_000},
                             "max_recounts": 1, "managers": ["maria"]}}
    async with running_register(config(tmp_path, broker, port, session=rules)), \
            KassadClient(broker_config(broker.port), store="S1", register="R1",
                         requester="pos-1", employee="e1") as pos:
        opened = await pos.send("session.open", {"starting_float": sek(100_000)})
        sale = await pos.send("payment.record", {"kind": "cash_sale", "tendered": sek(20_000),
                                                 "change": sek(5_000)})
        state = await pos.send("state.get")
        for summary in (opened.data["session"], sale.data["session"],
                        state.data["state"]["session"]):
            assert "expected_cash" not in summary and summary["blind"] is True
        with pytest.raises(ERRORS[ErrorCode.RECOUNT_REQUIRED]) as recount:
            await pos.send("session.close", {"counted": sek(110_000),
                                             "leave_in_drawer": sek(0)})
        assert "discrepancy" not in recount.value.details
        assert "115" not in recount.value.message
        with pytest.raises(ERRORS[ErrorCode.APPROVAL_REQUIRED]):
            await pos.send("session.close", {"counted": sek(110_000),
                                             "leave_in_drawer": sek(0)})
        closed = await pos.send("session.close", {
            "counted": sek(110_000), "leave_in_drawer": sek(0),
            "approval": {"employee": "maria", "role": "manager",
                         "reason": "counted twice, 50 kr short"}}, employee="anna")
        session = closed.data["session"]
        assert session["expected"] == {"SEK": 115_000}
        assert session["discrepancy"] == {"SEK": -5_000}
        assert session["approval"]["employee"] == "maria" and session["recounts"] == 1
        z_paper = (await printer.wait_receipts(2))[1]  # after the cash-removed slip
        assert "Godkänt av" in z_paper.text and "maria (chef)" in z_paper.text
    closes = [e for e in journal_events(tmp_path / "j.db")
              if e["type"] in ("cmd.rejected", "session.closed")]
    assert [e["type"] for e in closes] == ["cmd.rejected", "cmd.rejected", "session.closed"]


async def test_training_is_published_but_kept_out_of_the_totals(
        broker: MosquittoBroker, printer: PrinterSimulator, tmp_path: Path) -> None:
    port = await printer.serve_tcp()
    async with running_register(config(tmp_path, broker, port)), \
            KassadClient(broker_config(broker.port), store="S1", register="R1",
                         requester="pos-1", employee="e1") as pos:
        await pos.send("session.open", {"starting_float": sek(0), "training": True})
        await pos.send("payment.record", {"kind": "cash_sale", "tendered": sek(50_000)})
        closed = await pos.send("session.close", {"counted": sek(50_000),
                                                  "leave_in_drawer": sek(0)})
        assert closed.data["session"]["training"] is True
        slip, z_paper = await printer.wait_receipts(2)
        assert "KONTANTER UTTAGNA" in slip.text and "Z-DAGRAPPORT" in z_paper.text
        assert "ÖVNING" in z_paper.text and "Z-nr" not in z_paper.text
    z = [e["data"] for e in journal_events(tmp_path / "j.db") if e["type"] == "report.issued"]
    assert z == [{"kind": "z", "number": None, "copy": False, "copy_number": 0,
                  "training": True, "grand_totals": {"sales": {}, "returns": {}, "net": {}}}]


async def test_a_correction_after_the_close_reaches_the_store(
        broker: MosquittoBroker, tmp_path: Path) -> None:
    from kassad.daemon.store.config import StoreConfig
    from kassad.daemon.store.service import StoreService

    store = StoreService(StoreConfig(stores=["S1"], broker=broker_config(broker.port),
                                     database=f"sqlite:///{tmp_path / 'store.db'}",
                                     reorder_timeout=0.5, http=None))
    task = asyncio.create_task(store.run())
    config = write_config(tmp_path / "r1.toml", port=broker.port, journal=tmp_path / "j.db",
                          consumers=["store-agg"],
                          session={"count_rules": {"managers": ["maria"]}})
    try:
        async with running_register(config), \
                KassadClient(broker_config(broker.port), store="S1", register="R1",
                             requester="pos-1", employee="e1") as pos:
            await pos.send("session.open", {"starting_float": sek(100_000)})
            closed = await pos.send("session.close", {"counted": sek(99_000),
                                                      "leave_in_drawer": sek(50_000)})
            session_id = closed.data["session"]["session_id"]
            await pos.send("payment.record", {"kind": "cash_sale", "tendered": sek(1_000)})
            corrected = await pos.send("session.correct", {
                "session_id": session_id, "counted": sek(100_000),
                "approval": {"employee": "maria", "role": "manager",
                             "reason": "a 10 kr coin under the tray"}}, employee="maria")
            assert corrected.data["session"]["discrepancy"] == {"SEK": 0}

            async def stored_discrepancy() -> Any:
                row = await store.storage.session(session_id)
                return None if row is None else row.discrepancy_end

            async def corrected_in_store() -> bool:
                return await stored_discrepancy() == {"SEK": 0}

            await eventually(corrected_in_store, what="the correction in the store")
            row = await store.storage.session(session_id)
            assert row is not None
            assert row.summary["corrections"][0]["counted_before"] == {"SEK": 99_000}
    finally:
        store.stop()
        async with asyncio.timeout(15):
            await task
