"""Issue 9 end to end: the Dynamics 365 seed's day with a real register, the broker, the store
aggregator and its API — start amount in the safe, float to the register (its entry reconciled
by hand, the cashier did not name it), a safe drop over the drawer limit and the end-of-day drop
(received in the safe naming them: reconciled by themselves), a bank deposit; the safe's and
the register's figures exact at every step; an unbalanced reconciliation without a reason and
a close with an open transfer refused; no unreconcile after the close."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from kassad.daemon.client import ERRORS, KassadClient
from kassad.daemon.contract.errors import ErrorCode
from kassad.daemon.register.service import RegisterService
from kassad.daemon.store.config import StoreConfig
from kassad.daemon.store.service import StoreService
from kassad.simulators.broker import MosquittoBroker
from tests.integration.test_store_safes import Api
from tests.support.register import broker_config, eventually, running_register, until, write_config

MIA = {"employee": "mia", "role": "manager"}


def sek(amount: int) -> dict[str, Any]:
    return {"amount": amount, "currency": "SEK"}


@contextlib.asynccontextmanager
async def aggregator(broker: MosquittoBroker, tmp_path: Path, retell: float = 30.0,
                     ) -> AsyncIterator[StoreService]:
    config = StoreConfig(stores=["S1"], broker=broker_config(broker.port),
                         database=f"sqlite:///{tmp_path / 'store.db'}", reorder_timeout=0.5,
                         http={"port": 0},
                         safes={"S1": [{"id": "SAFE1", "name": "Back office"}]})
    service = StoreService(config)
    service.retell_interval = retell
    task = asyncio.create_task(service.run())
    try:
        async with asyncio.timeout(10):
            await service.ready.wait()
            assert service._link is not None
            await service._link.connected.wait()
        yield service
    finally:
        service.stop()
        async with asyncio.timeout(15):
            await task


def status_at_register(register: RegisterService, transfer_id: str) -> str | None:
    session = register.ledger.open_session
    if session is None or transfer_id not in session.transfers:
        return None
    return str(session.transfers[transfer_id]["status"])


async def test_a_day_of_the_dynamics_365_seed(broker: MosquittoBroker, tmp_path: Path) -> None:
    config = write_config(tmp_path / "r1.toml", port=broker.port, journal=tmp_path / "j.db",
                          consumers=["store-agg"])
    async with aggregator(broker, tmp_path) as store, running_register(config) as register, \
            KassadClient(broker_config(broker.port), store="S1", register="R1",
                         requester="pos-1", employee="e1") as pos:
        assert store.http is not None
        api = Api(store.http.port)

        async def safe() -> dict[str, Any]:
            s = await api.ok("/safes/SAFE1")
            return {k: s[k] for k in ("receipts", "floats_issued", "bank_deposits", "expected")}

        async def stored(transfer_id: str) -> dict[str, Any] | None:
            reply = await api.call(f"/transfers/{transfer_id}")
            return reply.json() if reply.status == 200 else None

        # 1. The start amount in the safe: 10 000.00.
        declared = await api.ok("/safes/SAFE1/declare_start", {"amounts": {"SEK": 1_000_000},
                                                               "employee": "mia"})
        safe_start = declared["transfer"]["transfer_id"]
        assert (await safe())["expected"] == {"SEK": 1_000_000}
        # 2. A float of 1 000.00 from the safe; the cashier enters it without naming it.
        issued = await api.ok("/safes/SAFE1/float", {
            "amounts": {"SEK": 100_000}, "employee": "mia", "register": "R1", "bag": "F1"})
        float_id = issued["transfer"]["transfer_id"]
        assert await safe() == {"receipts": {}, "floats_issued": {"SEK": 100_000},
                                "bank_deposits": {}, "expected": {"SEK": 900_000}}
        opened = await pos.send("session.open", {"starting_float": sek(0)}, employee="anna")
        assert opened.data["session"]["expected_cash"] == {"SEK": 0}
        entry = await pos.send("cash.transfer_in", {
            "from": {"kind": "safe", "id": "SAFE1"}, "amount": sek(100_000)}, employee="anna")
        entry_id = entry.data["transfer"]["transfer_id"]
        assert entry.data["session"]["expected_cash"] == {"SEK": 100_000}
        # 3. Sales in cash: 3 500.00.
        sale = await pos.send("payment.record", {"kind": "cash_sale",
                                                 "tendered": sek(350_000)})
        assert sale.data["session"]["expected_cash"] == {"SEK": 450_000}
        # 4. A safe drop over the drawer limit: 3 000.00, received in the safe naming it.
        drop = await pos.send("cash.transfer_out", {
            "to": {"kind": "safe", "id": "SAFE1"}, "amount": sek(300_000), "bag": "B1",
            "seal": "0001"}, employee="anna")
        drop_id = drop.data["transfer"]["transfer_id"]
        assert drop.data["session"]["expected_cash"] == {"SEK": 150_000}
        await eventually(lambda: _exists(stored, drop_id), what="the drop at the store")
        receipt = await api.ok("/safes/SAFE1/receipt", {
            "amounts": {"SEK": 300_000}, "employee": "mia", "register": "R1",
            "of_transfer": drop_id, "bag": "B1", "seal": "0001"})
        assert receipt["transfer"]["status"] == "reconciled"
        assert await safe() == {"receipts": {"SEK": 300_000}, "floats_issued": {"SEK": 100_000},
                                "bank_deposits": {}, "expected": {"SEK": 1_200_000}}
        await until(lambda: status_at_register(register, drop_id) == "reconciled",
                    what="the register told of the drop's reconciliation")
        # 5. The end-of-day drop: the whole drawer, 1 500.00; the safe receives 1 490.00
        # without naming it.
        eod = await pos.send("cash.transfer_out", {
            "to": {"kind": "safe", "id": "SAFE1"}, "amount": sek(150_000), "bag": "B2"},
            employee="anna")
        eod_id = eod.data["transfer"]["transfer_id"]
        assert eod.data["session"]["expected_cash"] == {"SEK": 0}
        short = await api.ok("/safes/SAFE1/receipt", {"amounts": {"SEK": 149_000},
                                                      "employee": "mia", "register": "R1"})
        short_id = short["transfer"]["transfer_id"]
        assert short["transfer"]["status"] == "unreconciled"
        assert (await safe())["expected"] == {"SEK": 1_349_000}
        # 6. The close is refused while transfers are open.
        close = {"counted": sek(0), "leave_in_drawer": sek(0)}
        with pytest.raises(ERRORS[ErrorCode.UNRECONCILED_TRANSFERS]) as refused:
            await pos.send("session.close", close, employee="anna")
        assert refused.value.details["transfers"] == [entry_id, eod_id]
        # 7. By hand: the unbalanced end-of-day pair without a reason is refused, then done
        # with one; the start amount (the float and its entry balance) needs none.
        await eventually(lambda: _exists(stored, eod_id), what="the end-of-day drop")
        await eventually(lambda: _exists(stored, entry_id), what="the float entry")
        unbalanced = await api.call("/transfers/reconcile", {"transfers": [eod_id, short_id],
                                                             **MIA})
        assert unbalanced.status == 400
        assert "do not balance" in unbalanced.json()["detail"]
        assert "reason is required" in unbalanced.json()["detail"]
        await api.ok("/transfers/reconcile", {"transfers": [eod_id, short_id], **MIA,
                                              "reason": "10.00 short in the bag, recounted"})
        lone = await api.call("/transfers/reconcile", {"transfers": [entry_id], **MIA})
        assert lone.status == 400 and "reason is required" in lone.json()["detail"]
        done = await api.ok("/transfers/reconcile", {"transfers": [float_id, entry_id], **MIA})
        assert {t["transfer_id"] for t in done["transfers"]} == {float_id, entry_id}
        for tid in (entry_id, eod_id):
            await until(lambda t=tid: status_at_register(register, t) == "reconciled",
                        what=f"{tid} reconciled at the register")
        # 8. The bank deposit: 12 000.00 leaves the safe; 1 490.00 stays, and is counted.
        await api.ok("/safes/SAFE1/bank_deposit", {"amounts": {"SEK": 1_200_000},
                                                   "employee": "mia", "bag": "BANK-1"})
        assert await safe() == {"receipts": {"SEK": 449_000}, "floats_issued": {"SEK": 100_000},
                                "bank_deposits": {"SEK": 1_200_000},
                                "expected": {"SEK": 149_000}}
        counted = await api.ok("/safes/SAFE1/count", {"amounts": {"SEK": 149_000},
                                                      "employee": "mia"})
        assert counted["data"]["discrepancy"] == {}
        # The safe's start amount came from outside the store (the bank): it never pairs,
        # so the manager reconciles it by hand, with a reason (the seed's last step).
        lone = await api.call("/transfers/reconcile", {"transfers": [safe_start], **MIA})
        assert lone.status == 400 and "reason is required" in lone.json()["detail"]
        started = await api.ok("/transfers/reconcile", {
            "transfers": [safe_start], **MIA, "reason": "the day's start amount from the bank"})
        assert started["transfers"][0]["status"] == "reconciled"
        # 9. The register closes, every transfer reconciled; no unreconcile after that.
        closed = await pos.send("session.close", close, employee="anna")
        assert closed.data["session"]["discrepancy"] == {"SEK": 0}
        assert [(t["transfer_id"], t["status"], t["counterpart"])
                for t in closed.data["session"]["transfers"]] == [
            (entry_id, "reconciled", float_id),
            (drop_id, "reconciled", receipt["transfer"]["transfer_id"]),
            (eod_id, "reconciled", short_id)]
        assert closed.data["session"]["transfers"][2]["reason"] == (
            "10.00 short in the bag, recounted")
        session_id = closed.data["session"]["session_id"]
        await eventually(lambda: _closed(store, session_id), what="the close at the store")
        late = await api.call("/transfers/unreconcile", {"transfer_id": drop_id, **MIA,
                                                         "reason": "too late"})
        assert late.status == 409 and "can no longer" in late.json()["detail"]
        assert (await api.ok("/transfers?status=unreconciled"))["transfers"] == []


async def _exists(stored: Any, transfer_id: str) -> bool:
    return await stored(transfer_id) is not None


async def _closed(store: StoreService, session_id: str) -> bool:
    row = await store.storage.session(session_id)
    return row is not None and row.status == "closed"


async def test_a_lost_notice_is_sent_again(broker: MosquittoBroker, tmp_path: Path) -> None:
    config = write_config(tmp_path / "r1.toml", port=broker.port, journal=tmp_path / "j.db",
                          consumers=["store-agg"])
    async with aggregator(broker, tmp_path, retell=0.3) as store, \
            running_register(config) as register, \
            KassadClient(broker_config(broker.port), store="S1", register="R1",
                         requester="pos-1", employee="e1") as pos:
        assert store.http is not None
        api = Api(store.http.port)
        tell = store.cashbook._notify
        lost: list[dict[str, Any]] = []

        async def lose(store_id: str, register_id: str, params: dict[str, Any]) -> None:
            lost.append(params)

        store.cashbook._notify = lose
        await pos.send("session.open", {"starting_float": sek(10_000)})
        drop = await pos.send("cash.transfer_out", {"to": {"kind": "safe", "id": "SAFE1"},
                                                    "amount": sek(10_000)})
        drop_id = drop.data["transfer"]["transfer_id"]
        await api.ok("/safes/SAFE1/declare_start", {"amounts": {"SEK": 0}, "employee": "mia"})
        await api.ok("/safes/SAFE1/receipt", {"amounts": {"SEK": 10_000}, "employee": "mia",
                                              "register": "R1", "of_transfer": drop_id})
        await eventually(lambda: _reconciled(api, drop_id), what="reconciled at the store")
        assert [p["transfer_id"] for p in lost] == [drop_id]
        # The notice was lost: the comparison with the register's own events sends it again.
        await until(lambda: status_at_register(register, drop_id) == "reconciled",
                    what="the register told again")
        store.cashbook._notify = tell
        await pos.send("session.close", {"counted": sek(0), "leave_in_drawer": sek(0)})


async def _reconciled(api: Api, transfer_id: str) -> bool:
    reply = await api.call(f"/transfers/{transfer_id}")
    return reply.status == 200 and reply.json()["status"] == "reconciled"
