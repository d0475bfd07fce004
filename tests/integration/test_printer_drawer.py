"""Receipt printer and cash drawer end to end: MQTT command → register → ESC/POS bytes → the
printer simulator (TCP, pty and USB), and the simulator's faults back as events and job states.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from kassad.daemon.client import ERRORS, CommandError, KassadClient
from kassad.daemon.config import DevicesConfig, load_register_config
from kassad.daemon.contract.errors import ErrorCode
from kassad.daemon.register.service import RegisterService
from kassad.drivers.escpos.document import ReceiptDocument
from kassad.drivers.escpos.encoder import MODELS, EscposEncoder
from kassad.simulators.broker import MosquittoBroker
from kassad.simulators.printer.device import PrinterSimulator
from kassad.simulators.serial_drawer import SerialDrawerSimulator
from kassad.simulators.usb_backend import FakeUsbBackend
from tests.support.register import (
    RegisterProcess,
    broker_config,
    journal_events,
    until,
    write_config,
)

RECEIPT = {"blocks": [
    {"type": "text", "text": "Kaffebaren", "bold": True, "align": "center",
     "double_height": True},
    {"type": "columns", "left": "Kaffe", "right": "35.00"},
    {"type": "columns", "left": "Kanelbulle", "right": "29.50"},
    {"type": "rule"},
    {"type": "columns", "left": "Totalt", "right": "64.50", "bold": True},
    {"type": "barcode", "symbology": "EAN13", "data": "4006381333931"},
    {"type": "qr", "data": "https://example.org/r/1001"},
    {"type": "cut"},
]}

PRINTER = {"status_interval": 0.1, "status_timeout": 0.5, "reconnect_min": 0.05,
           "reconnect_max": 0.2, "completion_timeout": 5.0, "receipt_expiry": 30.0}
DRAWER = {"open_level": "high", "open_timeout": 0.5, "kick_retries": 1,
          "left_open_after": 1.0, "pulse_on_ms": 100}


def devices(transport: dict[str, Any], **printer: Any) -> dict[str, Any]:
    return {"printer": {"model": "TM-T20II", "transport": transport, **PRINTER, **printer},
            "drawer": DRAWER}


@contextlib.asynccontextmanager
async def store(broker: MosquittoBroker, tmp_path: Path, transport: dict[str, Any],
                usb_backend: Any = None, **printer: Any,
                ) -> AsyncIterator[tuple[RegisterService, KassadClient]]:
    config = write_config(tmp_path / "r1.toml", port=broker.port, journal=tmp_path / "j.db",
                          consumers=[])
    loaded = load_register_config(config).model_copy(
        update={"devices": load_devices(transport, **printer)})
    service = RegisterService(loaded, usb_backend=usb_backend)
    async with running_service(service) as register, \
            KassadClient(broker_config(broker.port), store="S1", register="R1",
                         requester="pos-1", employee="e1") as pos:
        await until(lambda: register.devices is not None and register.devices.printer
                    is not None and register.devices.printer.status is not None,
                    what="printer status read")
        yield register, pos


def load_devices(transport: dict[str, Any], **printer: Any) -> DevicesConfig:
    return DevicesConfig.model_validate(devices(transport, **printer))


@contextlib.asynccontextmanager
async def running_service(service: RegisterService) -> AsyncIterator[RegisterService]:
    task = asyncio.create_task(service.run())
    try:
        async with asyncio.timeout(10):
            await service.ready.wait()
        yield service
    finally:
        service.stop()
        async with asyncio.timeout(30):
            await task


def encoded(document: dict[str, Any]) -> bytes:
    """The exact ESC/POS bytes of a document for the configured model."""
    return EscposEncoder(MODELS["TM-T20II"]).encode(ReceiptDocument.model_validate(document))


@pytest.fixture
async def sim() -> AsyncIterator[PrinterSimulator]:
    async with PrinterSimulator() as printer:
        yield printer


def events(tmp_path: Path, kind: str, where: Callable[[dict[str, Any]], bool] = lambda d: True,
           ) -> list[dict[str, Any]]:
    return [e for e in journal_events(tmp_path / "j.db")
            if e["type"] == kind and where(e["data"])]


async def wait_event(tmp_path: Path, kind: str,
                     where: Callable[[dict[str, Any]], bool] = lambda d: True,
                     count: int = 1) -> list[dict[str, Any]]:
    await until(lambda: len(events(tmp_path, kind, where)) >= count, timeout=15,
                what=f"{count} {kind} event(s)")
    return events(tmp_path, kind, where)


async def test_receipt_over_tcp_exact_bytes_and_rendering(
        broker: MosquittoBroker, sim: PrinterSimulator, tmp_path: Path) -> None:
    port = await sim.serve_tcp()
    async with store(broker, tmp_path, {"kind": "tcp", "host": "127.0.0.1", "port": port}) \
            as (_, pos):
        result = await pos.send("print.receipt", {"document": RECEIPT})
        assert result.data["state"] == "printed"
        receipt = (await sim.wait_receipts(1))[0]
        assert "Kaffebaren" in receipt.text
        assert receipt.style_of("Kaffebaren").style.bold
        assert receipt.find("Kanelbulle") is not None
        assert "[EAN13 4006381333931]" in receipt.text
        assert receipt.cut == "full"
        assert encoded(RECEIPT) in bytes(sim.received)
        states = [e["data"]["state"] for e in events(tmp_path, "print.job")]
        assert states == ["accepted", "printing", "printed"]


async def test_kick_open_close_and_unexpected_and_left_open(
        broker: MosquittoBroker, sim: PrinterSimulator, tmp_path: Path) -> None:
    port = await sim.serve_tcp()
    async with store(broker, tmp_path, {"kind": "tcp", "host": "127.0.0.1", "port": port}) \
            as (register, pos):
        result = await pos.send("drawer.open", {"reason": "no_sale", "note": "change"})
        assert result.data == {"drawer": "open"}
        assert sim.kicks[-1].realtime and sim.kicks[-1].pin == 2
        opened = await wait_event(tmp_path, "drawer.opened")
        assert opened[0]["data"]["cause"] == "no_sale"
        assert opened[0]["data"]["cmd_id"] == result.cmd_id
        with pytest.raises(ERRORS[ErrorCode.DRAWER_OPEN]):
            await pos.send("drawer.open", {"reason": "sale"})
        await wait_event(tmp_path, "drawer.left_open")
        sim.close_drawer()
        closed = await wait_event(tmp_path, "drawer.closed")
        assert closed[0]["data"]["cause"] == "no_sale"
        assert len(sim.kicks) == 1  # the refused command never kicked

        sim.open_drawer_by_hand()
        await wait_event(tmp_path, "drawer.unexpected_open")
        sim.close_drawer()
        await wait_event(tmp_path, "drawer.closed", count=2)
        assert register.ledger.open_session is None


async def test_kick_that_does_not_open_is_retried_then_failed(
        broker: MosquittoBroker, sim: PrinterSimulator, tmp_path: Path) -> None:
    port = await sim.serve_tcp()
    sim.jam_drawer()
    async with store(broker, tmp_path, {"kind": "tcp", "host": "127.0.0.1", "port": port}) \
            as (_, pos):
        with pytest.raises(ERRORS[ErrorCode.KICK_FAILED]) as failed:
            await pos.send("drawer.open", {"reason": "sale"})
        assert "did not open" in failed.value.message
        assert len(sim.kicks) == 2  # the first kick and one retry
        failure = await wait_event(tmp_path, "drawer.kick_failed")
        assert failure[0]["data"]["attempts"] == 2


async def test_stale_kick_is_never_run(broker: MosquittoBroker, sim: PrinterSimulator,
                                       tmp_path: Path) -> None:
    port = await sim.serve_tcp()
    async with store(broker, tmp_path, {"kind": "tcp", "host": "127.0.0.1", "port": port}) \
            as (_, pos):
        old = datetime.now(UTC) - timedelta(seconds=30)
        with pytest.raises(ERRORS[ErrorCode.EXPIRED]) as late:
            await pos.send("drawer.open", {"reason": "sale"}, issued_at=old, ttl=300)
        assert "never run" in late.value.message
        assert sim.kicks == []


async def test_paper_out_job_waits_then_prints_and_status_events(
        broker: MosquittoBroker, sim: PrinterSimulator, tmp_path: Path) -> None:
    port = await sim.serve_tcp()
    async with store(broker, tmp_path, {"kind": "tcp", "host": "127.0.0.1", "port": port}) \
            as (_, pos):
        sim.paper_out()
        await wait_event(tmp_path, "printer.status", lambda d: d.get("paper") == "out")
        job = asyncio.create_task(pos.send("print.receipt", {"document": RECEIPT}))
        waiting = await wait_event(tmp_path, "print.job", lambda d: d["state"] == "waiting")
        assert waiting[0]["data"]["reason"] == "paper_out"
        assert sim.receipts == []
        sim.paper_ok()
        result = await job
        assert result.data["state"] == "printed"
        assert len(sim.receipts) == 1

        sim.cover_open()
        await wait_event(tmp_path, "printer.status", lambda d: d.get("cover_open") is True)
        sim.cover_close()
        await wait_event(tmp_path, "printer.status",
                         lambda d: d.get("cover_open") is False and d["state"] == "ready",
                         count=2)


async def test_job_expires_while_paper_is_out(broker: MosquittoBroker, sim: PrinterSimulator,
                                              tmp_path: Path) -> None:
    port = await sim.serve_tcp()
    async with store(broker, tmp_path, {"kind": "tcp", "host": "127.0.0.1", "port": port},
                     receipt_expiry=0.5) as (_, pos):
        sim.paper_out()
        await wait_event(tmp_path, "printer.status", lambda d: d.get("paper") == "out")
        with pytest.raises(ERRORS[ErrorCode.EXPIRED]) as expired:
            await pos.send("print.receipt", {"document": RECEIPT})
        assert expired.value.details["state"] == "expired"
        sim.paper_ok()
        states = [e["data"]["state"] for e in events(tmp_path, "print.job")]
        assert states == ["accepted", "waiting", "expired"]
        assert sim.receipts == []


async def test_unplug_and_replug_over_tcp(broker: MosquittoBroker, sim: PrinterSimulator,
                                         tmp_path: Path) -> None:
    port = await sim.serve_tcp()
    async with store(broker, tmp_path, {"kind": "tcp", "host": "127.0.0.1", "port": port}) \
            as (register, pos):
        await sim.unplug()
        await wait_event(tmp_path, "printer.status", lambda d: d["connected"] is False)
        with pytest.raises(ERRORS[ErrorCode.DEVICE_UNAVAILABLE]):
            await pos.send("drawer.open", {"reason": "sale"})
        await sim.replug()
        await wait_event(tmp_path, "printer.status",
                         lambda d: d["connected"] is True and d["state"] == "ready", count=2)
        result = await pos.send("print.receipt", {"document": RECEIPT})
        assert result.data["state"] == "printed"
        assert register.state_snapshot()["devices"]["printer"]["connected"] is True


async def test_bad_documents_and_raw_data_are_refused(
        broker: MosquittoBroker, sim: PrinterSimulator, tmp_path: Path) -> None:
    port = await sim.serve_tcp()
    async with store(broker, tmp_path, {"kind": "tcp", "host": "127.0.0.1", "port": port}) \
            as (_, pos):
        bad_ean = {"blocks": [{"type": "barcode", "symbology": "EAN13", "data": "4006381333932"}]}
        with pytest.raises(ERRORS[ErrorCode.INVALID_PAYLOAD]) as caught:
            await pos.send("print.receipt", {"document": bad_ean})
        assert "check digit" in caught.value.message
        with pytest.raises(ERRORS[ErrorCode.INVALID_PAYLOAD]):
            await pos.send("print.receipt", {"document": {"blocks": [{"type": "hologram"}]}})
        with pytest.raises(ERRORS[ErrorCode.INVALID_PAYLOAD]):
            await pos.send("print.raw", {"data": "%%% not base64"})
        raw = await pos.send("print.raw", {"data": base64.b64encode(b"\x1b@raw line\n").decode()})
        assert raw.data["state"] == "printed"
        assert b"raw line" in bytes(sim.received)


async def test_reprint_is_marked_as_a_copy(broker: MosquittoBroker, sim: PrinterSimulator,
                                           tmp_path: Path) -> None:
    port = await sim.serve_tcp()
    async with store(broker, tmp_path, {"kind": "tcp", "host": "127.0.0.1", "port": port}) \
            as (_, pos):
        first = await pos.send("print.receipt", {"document": RECEIPT})
        again = await pos.send("print.receipt", {"document": RECEIPT}, cmd_id=first.cmd_id)
        assert again.duplicate and len(sim.receipts) == 1  # one cmd_id never prints twice
        await pos.send("print.receipt", {"reprint_of": first.cmd_id})
        receipts = await sim.wait_receipts(2)
        assert "COPY" in receipts[1].text and "Kaffebaren" in receipts[1].text
        assert "COPY" not in receipts[0].text


async def test_receipt_and_kick_over_a_pty(broker: MosquittoBroker, sim: PrinterSimulator,
                                           tmp_path: Path) -> None:
    path = sim.open_pty()
    async with store(broker, tmp_path, {"kind": "serial", "path": path, "baudrate": 115200}) \
            as (_, pos):
        result = await pos.send("print.receipt", {"document": RECEIPT, "open_drawer": True})
        assert result.data["state"] == "printed"
        assert result.data["drawer"] == "open"
        assert "Kaffebaren" in (await sim.wait_receipts(1))[0].text
        assert encoded(RECEIPT) in bytes(sim.received)


async def test_receipt_and_kick_over_usb(broker: MosquittoBroker, sim: PrinterSimulator,
                                         tmp_path: Path) -> None:
    backend = FakeUsbBackend()
    device = sim.usb_device(backend)
    assert device.kernel_driver_active
    transport = {"kind": "usb", "vendor_id": "04b8", "product_id": "0e28",
                 "serial_number": "KASSADSIM0001"}
    async with store(broker, tmp_path, transport, usb_backend=backend) as (_, pos):
        result = await pos.send("print.receipt", {"document": RECEIPT})
        assert result.data["state"] == "printed"
        assert encoded(RECEIPT) in bytes(sim.received)
        assert not device.kernel_driver_active  # usblp detached while kassad holds it
        kicked = await pos.send("drawer.open", {"reason": "sale"})
        assert kicked.data == {"drawer": "open"}
        await sim.unplug()
        await wait_event(tmp_path, "printer.status", lambda d: d["connected"] is False)
        await sim.replug()
        await wait_event(tmp_path, "printer.status", lambda d: d["connected"] is True, count=2)
        sim.close_drawer()
        again = await pos.send("print.receipt", {"document": RECEIPT})
        assert again.data["state"] == "printed"


async def test_device_errors_reach_the_requester(broker: MosquittoBroker,
                                                 sim: PrinterSimulator, tmp_path: Path) -> None:
    port = await sim.serve_tcp()
    async with store(broker, tmp_path, {"kind": "tcp", "host": "127.0.0.1", "port": port}) \
            as (_, pos):
        with pytest.raises(CommandError) as caught:
            await pos.send("drawer.open", {"reason": "teleport"})
        assert caught.value.code == "invalid_payload"


async def test_receipt_waiting_for_paper_survives_a_restart_and_prints_once(
        broker: MosquittoBroker, sim: PrinterSimulator, tmp_path: Path) -> None:
    port = await sim.serve_tcp()
    transport = {"kind": "tcp", "host": "127.0.0.1", "port": port}
    sim.paper_out()
    async with KassadClient(broker_config(broker.port), store="S1", register="R1",
                            requester="pos-2", employee="e1", result_retry_interval=0.5) as pos:
        async with store(broker, tmp_path, transport):
            job = asyncio.create_task(pos.send("print.receipt", {"document": RECEIPT}))
            await wait_event(tmp_path, "print.job", lambda d: d["state"] == "waiting")
        # The register stopped with the job waiting; it starts again and the paper comes back.
        async with store(broker, tmp_path, transport):
            sim.paper_ok()
            result = await job
    assert result.data["state"] == "printed"
    assert len(sim.receipts) == 1
    states = [e["data"]["state"] for e in events(tmp_path, "print.job")]
    # Waiting (for paper, then for the printer after the restart) until it could print once.
    assert states[:2] == ["accepted", "waiting"] and states[-2:] == ["printing", "printed"]
    assert set(states[1:-2]) == {"waiting"}


async def test_receipt_interrupted_while_sent_is_indeterminate_and_reprinted_as_copy(
        broker: MosquittoBroker, sim: PrinterSimulator, tmp_path: Path) -> None:
    port = await sim.serve_tcp()
    config = write_config(
        tmp_path / "r1.toml", port=broker.port, journal=tmp_path / "j.db", consumers=[],
        **{"devices.printer": {"model": "TM-T20II", **PRINTER,
                               "transport": {"kind": "tcp", "host": "127.0.0.1",
                                             "port": port}}})
    process = RegisterProcess(config, tmp_path / "register.log")
    process.start(KASSAD_CRASH_AT="job_printing")
    try:
        async with KassadClient(broker_config(broker.port), store="S1", register="R1",
                                requester="pos-1", employee="e1", retry_interval=0.3,
                                result_retry_interval=0.3) as pos:
            job = asyncio.create_task(pos.send("print.receipt", {"document": RECEIPT},
                                               ttl=60))
            assert await process.wait_exit() == 137
            process.start()
            with pytest.raises(ERRORS[ErrorCode.INDETERMINATE]) as caught:
                await job
            assert "never printed again by itself" in caught.value.message
            assert sim.receipts == []
            copy = await pos.send("print.receipt", {"reprint_of": caught.value.reply["cmd_id"]})
            assert copy.data["state"] == "printed"
            receipt = (await sim.wait_receipts(1))[0]
            assert "COPY" in receipt.text
    finally:
        process.terminate()
    states = [e["data"]["state"] for e in events(tmp_path, "print.job")]
    assert states[:3] == ["accepted", "printing", "indeterminate"]


@pytest.mark.parametrize(("fault", "clear", "expect"), [
    ("paper_near_end", "paper_ok", {"paper": "near_end", "state": "ready"}),
    ("paper_out", "paper_ok", {"paper": "out", "state": "not_ready"}),
    ("cover_open", "cover_close", {"cover_open": True, "state": "not_ready"}),
    ("go_offline", "go_online", {"online": False, "state": "not_ready"}),
    ("cutter_error", None, {"cutter_error": True, "error": True, "state": "not_ready"}),
])
async def test_each_printer_fault_is_a_status_event(
        broker: MosquittoBroker, sim: PrinterSimulator, tmp_path: Path, fault: str,
        clear: str | None, expect: dict[str, Any]) -> None:
    port = await sim.serve_tcp()
    async with store(broker, tmp_path, {"kind": "tcp", "host": "127.0.0.1", "port": port}) \
            as (register, _):
        getattr(sim, fault)()
        seen = await wait_event(tmp_path, "printer.status",
                                lambda d: all(d.get(k) == v for k, v in expect.items()))
        assert seen[-1]["data"]["connected"] is True
        snapshot = register.state_snapshot()["devices"]["printer"]
        assert all(snapshot.get(k) == v for k, v in expect.items())
        if clear is not None:
            getattr(sim, clear)()
        else:
            sim.cutter_error(False)
        await wait_event(tmp_path, "printer.status",
                         lambda d: d["state"] == "ready" and d.get("paper") == "ok")


async def test_one_cmd_id_never_kicks_twice(broker: MosquittoBroker, sim: PrinterSimulator,
                                           tmp_path: Path) -> None:
    port = await sim.serve_tcp()
    async with store(broker, tmp_path, {"kind": "tcp", "host": "127.0.0.1", "port": port}) \
            as (_, pos):
        first = await pos.send("drawer.open", {"reason": "sale"}, cmd_id="kick-1")
        sim.close_drawer()
        await wait_event(tmp_path, "drawer.closed")
        again = await pos.send("drawer.open", {"reason": "sale"}, cmd_id="kick-1")
        assert again.duplicate and again.data == first.data
        assert len(sim.kicks) == 1


async def test_kick_interrupted_by_a_crash_is_indeterminate_and_not_repeated(
        broker: MosquittoBroker, sim: PrinterSimulator, tmp_path: Path) -> None:
    port = await sim.serve_tcp()
    config = write_config(
        tmp_path / "r1.toml", port=broker.port, journal=tmp_path / "j.db", consumers=[],
        **{"devices.printer": {"model": "TM-T20II", **PRINTER,
                               "transport": {"kind": "tcp", "host": "127.0.0.1",
                                             "port": port}},
           "devices.drawer": DRAWER})
    process = RegisterProcess(config, tmp_path / "register.log")
    process.start(KASSAD_CRASH_AT="after_ack")
    try:
        async with KassadClient(broker_config(broker.port), store="S1", register="R1",
                                requester="pos-1", employee="e1", retry_interval=0.3,
                                result_retry_interval=0.3) as pos:
            kick = asyncio.create_task(pos.send("drawer.open", {"reason": "sale"}, ttl=60))
            assert await process.wait_exit() == 137
            process.start()
            with pytest.raises(ERRORS[ErrorCode.INDETERMINATE]) as caught:
                await kick
            assert "never kicked again by itself" in caught.value.message
    finally:
        process.terminate()
    assert sim.kicks == []  # it died after the ack, before the kick: and none came later


async def test_drawer_on_its_own_serial_interface(broker: MosquittoBroker,
                                                  tmp_path: Path) -> None:
    async with SerialDrawerSimulator() as box:
        path = box.open_pty()
        config = load_register_config(write_config(
            tmp_path / "r1.toml", port=broker.port, journal=tmp_path / "j.db", consumers=[]))
        drawer = {**DRAWER, "via": "serial", "serial": {"path": path, "poll_interval": 0.05}}
        config = config.model_copy(update={"devices": DevicesConfig.model_validate(
            {"drawer": drawer})})
        async with running_service(RegisterService(config)) as register, \
                KassadClient(broker_config(broker.port), store="S1", register="R1",
                             requester="pos-1", employee="e1") as pos:
            await until(lambda: register.state_snapshot()["devices"]["drawer"]["state"]
                        == "closed", what="sensor read over the serial box")
            result = await pos.send("drawer.open", {"reason": "refund"})
            assert result.data == {"drawer": "open"}
            assert len(box.kicks) == 1
            box.close_drawer()
            await wait_event(tmp_path, "drawer.closed")
            box.open_by_hand()
            await wait_event(tmp_path, "drawer.unexpected_open")
            box.close_drawer()
            await wait_event(tmp_path, "drawer.closed", count=2)
            box.jam()
            with pytest.raises(ERRORS[ErrorCode.KICK_FAILED]):
                await pos.send("drawer.open", {"reason": "no_sale"})
            with pytest.raises(ERRORS[ErrorCode.DEVICE_UNAVAILABLE]):
                await pos.send("print.receipt", {"document": RECEIPT})


async def test_paper_out_in_the_middle_of_a_receipt(broker: MosquittoBroker,
                                                   sim: PrinterSimulator, tmp_path: Path) -> None:
    path = sim.open_pty()
    long_receipt = {"blocks": [{"type": "columns", "left": f"Artikel {n}", "right": "10.00"}
                               for n in range(60)] + [{"type": "cut"}]}
    # 9600 baud: about 3 s of wire time, paced by the driver, so the fault lands mid-job.
    async with store(broker, tmp_path, {"kind": "serial", "path": path, "baudrate": 9600}) \
            as (_, pos):
        job = asyncio.create_task(pos.send("print.receipt", {"document": long_receipt}))
        await wait_event(tmp_path, "print.job", lambda d: d["state"] == "printing")
        sim.paper_out()
        waiting = await wait_event(tmp_path, "print.job", lambda d: d["state"] == "waiting")
        assert waiting[0]["data"]["reason"] == "paper_out"
        sim.paper_ok()
        result = await job
        assert result.data["state"] == "printed"
        receipt = (await sim.wait_receipts(1))[0]
        assert receipt.find("Artikel 59") is not None
    states = [e["data"]["state"] for e in events(tmp_path, "print.job")]
    assert states == ["accepted", "printing", "waiting", "printing", "printed"]
