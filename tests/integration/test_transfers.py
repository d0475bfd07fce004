"""Two-sided cash movements at the register (issue 9, register side): transfers out and in
change the expected cash, are numbered per register, and a session cannot close while one is
unreconciled (unless the store allows it); reconciliation comes from the store aggregator."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from kassad.daemon.client import ERRORS, KassadClient
from kassad.daemon.contract.errors import ErrorCode
from kassad.simulators.broker import MosquittoBroker
from tests.support.register import broker_config, journal_events, running_register, write_config


def sek(amount: int) -> dict[str, Any]:
    return {"amount": amount, "currency": "SEK"}


def manager(transfer_id: str, status: str = "reconciled", **extra: Any) -> dict[str, Any]:
    return {"transfer_id": transfer_id, "status": status,
            "by": {"employee": "maria", "role": "manager"}, **extra}


async def test_transfers_change_the_drawer_and_block_the_close_until_reconciled(
        broker: MosquittoBroker, tmp_path: Path) -> None:
    config = write_config(tmp_path / "r1.toml", port=broker.port, journal=tmp_path / "j.db",
                          consumers=[])
    async with running_register(config), \
            KassadClient(broker_config(broker.port), store="S1", register="R1",
                         requester="pos-1", employee="e1") as pos, \
            KassadClient(broker_config(broker.port), store="S1", register="R1",
                         requester="store-agg", employee="e1") as store:
        await pos.send("session.open", {"starting_float": sek(0)})
        # The float comes from the safe: the safe's transfer is named, so it can reconcile.
        float_in = await pos.send("cash.transfer_in", {
            "from": {"kind": "safe", "id": "safe-1"}, "amount": sek(100_000),
            "of_transfer": "safe-1-T1"}, employee="anna")
        assert float_in.data["transfer"]["transfer_id"] == "R1-T1"
        await pos.send("payment.record", {"kind": "cash_sale", "tendered": sek(250_000)})
        drop = await pos.send("cash.transfer_out", {
            "to": {"kind": "safe", "id": "safe-1"}, "amount": sek(200_000),
            "bag": "B-0042", "seal": "S-991", "note": "over the drawer limit"}, employee="anna")
        transfer = drop.data["transfer"]
        assert transfer == {"transfer_id": "R1-T2", "to": {"kind": "safe", "id": "safe-1"},
                            "amounts": {"SEK": 200_000}, "bag": "B-0042", "seal": "S-991",
                            "note": "over the drawer limit"}
        session = drop.data["session"]
        assert session["expected_cash"] == {"SEK": 150_000}
        assert session["transfers_in"] == {"SEK": 100_000}
        assert session["transfers_out"] == {"SEK": 200_000}
        assert [t["status"] for t in session["transfers"]] == ["unreconciled"] * 2

        with pytest.raises(ERRORS[ErrorCode.AMOUNT_OUT_OF_RANGE]):
            await pos.send("cash.transfer_out", {"to": {"kind": "register", "id": "R2"},
                                                 "amount": sek(150_001)})
        with pytest.raises(ERRORS[ErrorCode.INVALID_PAYLOAD]):
            await pos.send("cash.transfer_out", {"to": {"kind": "register", "id": "R1"},
                                                 "amount": sek(1)})

        close = {"counted": sek(150_000), "leave_in_drawer": sek(0)}
        with pytest.raises(ERRORS[ErrorCode.UNRECONCILED_TRANSFERS]) as refused:
            await pos.send("session.close", close)
        assert refused.value.details["transfers"] == ["R1-T1", "R1-T2"]

        with pytest.raises(ERRORS[ErrorCode.INVALID_PAYLOAD]):
            await store.send("cash.reconciliation", manager("R1-T9"))
        await store.send("cash.reconciliation", {
            "transfer_id": "R1-T1", "status": "reconciled", "counterpart": "safe-1-T1",
            "by": {"role": "system"}})
        await store.send("cash.reconciliation", manager("R1-T2", counterpart="safe-1-T2"))
        # … and unreconciled again, with a reason, while the session is open.
        await store.send("cash.reconciliation", manager(
            "R1-T2", "unreconciled", reason="the bag held 1 900.00, not 2 000.00"))
        with pytest.raises(ERRORS[ErrorCode.UNRECONCILED_TRANSFERS]):
            await pos.send("session.close", close)
        await store.send("cash.reconciliation", manager(
            "R1-T2", counterpart="safe-1-T2", reason="accepted short; counted by two"))
        closed = await pos.send("session.close", close)
        transfers = closed.data["session"]["transfers"]
        assert [(t["status"], t["counterpart"], t["reason"]) for t in transfers] == [
            ("reconciled", "safe-1-T1", None),
            ("reconciled", "safe-1-T2", "accepted short; counted by two")]
        with pytest.raises(ERRORS[ErrorCode.SESSION_NOT_OPEN]):
            await store.send("cash.reconciliation", manager("R1-T2", "unreconciled",
                                                            reason="too late"))
    types = [e["type"] for e in journal_events(tmp_path / "j.db")]
    assert types.count("cash.reconciliation") == 4


async def test_a_store_that_allows_it_closes_with_open_transfers(
        broker: MosquittoBroker, tmp_path: Path) -> None:
    config = write_config(tmp_path / "r1.toml", port=broker.port, journal=tmp_path / "j.db",
                          consumers=[], session={"allow_unreconciled_close": True})
    async with running_register(config), \
            KassadClient(broker_config(broker.port), store="S1", register="R1",
                         requester="pos-1", employee="e1") as pos:
        await pos.send("session.open", {"starting_float": sek(50_000)})
        await pos.send("cash.transfer_out", {"to": {"kind": "safe", "id": "safe-1"},
                                             "amount": sek(50_000)})
        closed = await pos.send("session.close", {"counted": sek(0),
                                                  "leave_in_drawer": sek(0)})
        assert closed.data["session"]["discrepancy"] == {"SEK": 0}
        assert closed.data["session"]["transfers"][0]["status"] == "unreconciled"
