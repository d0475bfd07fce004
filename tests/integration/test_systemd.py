"""The daemons under systemd: sd_notify on a real notify socket, the watchdog, SIGHUP reload and
SIGTERM while a receipt prints or payments pour in.

``kassad run`` runs as a real process here (signals are the point), with ``NOTIFY_SOCKET`` and
``WATCHDOG_USEC`` set the way systemd sets them for a ``Type=notify`` unit with
``WatchdogSec=``.
"""

from __future__ import annotations

import asyncio
import os
import signal
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from kassad.daemon.client import ERRORS, CommandError, KassadClient
from kassad.daemon.config import load_register_config
from kassad.daemon.contract.errors import ErrorCode
from kassad.daemon.journal.verify import verify_journal
from kassad.daemon.register.service import RegisterService
from kassad.daemon.store.config import StoreConfig
from kassad.daemon.store.service import StoreService
from kassad.daemon.systemd import Notifier
from kassad.simulators.broker import MosquittoBroker
from kassad.simulators.printer.device import PrinterSimulator
from tests.support.notify import Notice, NotifySocket, has
from tests.support.register import (
    RegisterProcess,
    broker_config,
    journal_events,
    running_consumer,
    until,
    write_config,
)

PRINTER = {"model": "TM-T20II", "status_interval": 0.1, "status_timeout": 0.5,
           "reconnect_min": 0.05, "reconnect_max": 0.2, "completion_timeout": 5.0}
DRAWER = {"open_level": "high", "open_timeout": 0.5, "left_open_after": 30.0}
SEK = "SEK"


def sek(amount: int) -> dict[str, Any]:
    return {"amount": amount, "currency": SEK}


@pytest.fixture
def notify(tmp_path: Path) -> Iterator[NotifySocket]:
    sock = NotifySocket(tmp_path / "notify.sock")
    yield sock
    sock.close()


@pytest.fixture
async def printer() -> Any:
    async with PrinterSimulator() as sim:
        yield sim


def register_config(tmp_path: Path, mosquitto: MosquittoBroker, transport: dict[str, Any],
                    **sections: dict[str, Any]) -> Path:
    return write_config(tmp_path / "r1.toml", port=mosquitto.port, journal=tmp_path / "j.db",
                        consumers=[], devices={"printer": {**PRINTER, "transport": transport},
                                               "drawer": DRAWER}, **sections)


async def wait(notify: NotifySocket, predicate: Any, after: int = 0, what: str = "notice",
               within: float = 15.0) -> int:
    return await asyncio.to_thread(notify.wait_for, predicate, within, after, what)


def status_of(notice: Notice) -> str:
    return notice.get("STATUS") or ""


async def test_register_tells_systemd_when_it_is_ready_how_it_is_and_when_it_stops(
        broker: MosquittoBroker, printer: PrinterSimulator, notify: NotifySocket,
        tmp_path: Path) -> None:
    port = await printer.serve_tcp()
    config = register_config(tmp_path, broker, {"kind": "tcp", "host": "127.0.0.1",
                                                "port": port})
    daemon = RegisterProcess(config, tmp_path / "r1.log",
                             env={**notify.env, "WATCHDOG_USEC": "600000"})
    daemon.start()
    try:
        ready = await wait(notify, has("READY"), what="READY=1")
        assert daemon.proc is not None
        assert notify.notices[ready]["MAINPID"] == str(daemon.proc.pid)
        # READY=1 comes once the journal is open and the printer has answered.
        before = [status_of(n) for n in notify.notices[:ready]]
        assert any(s.startswith("starting: opening the journal") for s in before), before
        assert any(s.startswith("starting: probing the printer, the drawer") for s in before)
        assert status_of(notify.notices[ready]).startswith(
            "ready: no session open, printer ready, drawer closed")
        # The watchdog is pinged at half of WATCHDOG_USEC from then on.
        first = await wait(notify, has("WATCHDOG"), after=ready, what="WATCHDOG=1")
        await wait(notify, has("WATCHDOG"), after=first + 1, what="a second WATCHDOG=1")

        async with KassadClient(broker_config(broker.port), store="S1", register="R1",
                                requester="pos-1", employee="e1") as pos:
            await pos.send("session.open", {"starting_float": sek(50000)}, employee="e1")
        await wait(notify, lambda n: "session 1 open" in status_of(n), after=ready,
                   what="STATUS with the open session")
        printer.paper_out()
        await wait(notify, lambda n: "printer paper out" in status_of(n), after=ready,
                   what="STATUS with paper out")

        daemon.proc.send_signal(signal.SIGTERM)
        stopping = await wait(notify, has("STOPPING"), after=ready, what="STOPPING=1")
        assert await daemon.wait_exit() == 0
    finally:
        daemon.terminate()
    kinds = notify.keys()
    assert kinds.index("READY") < kinds.index("WATCHDOG") < kinds.index("STOPPING")
    assert "READY" not in kinds[stopping:]
    assert journal_events(tmp_path / "j.db")[-1]["type"] == "daemon.stopped"


async def test_the_watchdog_stops_when_the_loop_or_the_journal_hangs(
        broker: MosquittoBroker, notify: NotifySocket, tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch) -> None:
    interval = 0.1  # WATCHDOG_USEC 200 ms: a ping every 100 ms
    monkeypatch.setenv("WATCHDOG_USEC", "200000")
    config = load_register_config(write_config(tmp_path / "r1.toml", port=broker.port,
                                               journal=tmp_path / "j.db", consumers=[]))
    service = RegisterService(config, notifier=Notifier(str(notify.path)))
    task = asyncio.create_task(service.run())
    try:
        async with asyncio.timeout(10):
            await service.ready.wait()
        first = await wait(notify, has("WATCHDOG"), what="first ping")
        await wait(notify, has("WATCHDOG"), after=first + 1, what="second ping")

        # A blocked event loop: this test holds it, as a hung handler would.
        blocked_from = time.monotonic()
        time.sleep(8 * interval)  # noqa: ASYNC251 - blocking the loop is the point
        blocked_until = time.monotonic()
        resumed = await wait(notify, lambda n: "WATCHDOG" in n.fields and n.at > blocked_until,
                             what="a ping after the loop is free again")
        assert resumed is not None
        pings = [n.at for n in notify.notices if "WATCHDOG" in n.fields]
        assert not [t for t in pings if blocked_from + interval < t < blocked_until]

        # A stuck journal thread: the loop runs, but nothing could be journaled.
        journal = service._journal
        assert journal is not None
        def hang() -> float:
            time.sleep(10 * interval)
            return time.monotonic()  # when the journal thread is free again

        stuck_from = time.monotonic()
        stuck_until = await journal.run(hang)
        after = await wait(notify, lambda n: "WATCHDOG" in n.fields and n.at > stuck_until,
                           what="a ping once the journal answers again")
        assert after is not None
        pings = [n.at for n in notify.notices if "WATCHDOG" in n.fields]
        assert not [t for t in pings if stuck_from + 2 * interval < t < stuck_until]
    finally:
        service.stop()
        async with asyncio.timeout(15):
            await task


async def test_sighup_applies_what_it_safely_can_and_names_what_needs_a_restart(
        broker: MosquittoBroker, printer: PrinterSimulator, notify: NotifySocket,
        tmp_path: Path) -> None:
    port = await printer.serve_tcp()
    transport = {"kind": "tcp", "host": "127.0.0.1", "port": port}
    config = register_config(tmp_path, broker, transport)
    daemon = RegisterProcess(config, tmp_path / "r1.log", env=notify.env)
    daemon.start()
    try:
        ready = await wait(notify, has("READY"), what="READY=1")
        assert daemon.proc is not None
        async with KassadClient(broker_config(broker.port), store="S1", register="R1",
                                requester="pos-1", employee="e1") as pos:
            await pos.send("session.open", {"starting_float": sek(10000)})
            await pos.send("payment.record", {"kind": "cash_sale", "amount": sek(500_00),
                                              "tendered": sek(500_00), "change": sek(0)})

            # A lower limit for single amounts (reloadable) and a new keepalive (not).
            register_config(tmp_path, broker, transport,
                            money={"max_amount": 100_00}, logging={"level": "DEBUG"},
                            broker={"keepalive": 7})
            daemon.proc.send_signal(signal.SIGHUP)
            reloading = await wait(notify, has("RELOADING"), after=ready, what="RELOADING=1")
            assert int(notify.notices[reloading]["MONOTONIC_USEC"]) > 0
            done = await wait(notify, has("READY"), after=reloading, what="READY=1 after reload")
            assert "restart to apply broker.keepalive" in status_of(notify.notices[done])

            with pytest.raises(ERRORS[ErrorCode.AMOUNT_OUT_OF_RANGE]):
                await pos.send("payment.record", {"kind": "cash_sale", "amount": sek(500_00),
                                                  "tendered": sek(500_00), "change": sek(0)})
            reloaded = [e for e in journal_events(tmp_path / "j.db")
                        if e["type"] == "daemon.reloaded"]
            assert [(e["data"]["applied"], e["data"]["needs_restart"]) for e in reloaded] == [
                (["money.max_amount", "logging.level"], ["broker.keepalive"])]

            # A broken file is refused whole: the running configuration stays.
            config.write_text(config.read_text().replace("max_amount = 10000",
                                                         "max_amount = -1"))
            daemon.proc.send_signal(signal.SIGHUP)
            again = await wait(notify, has("RELOADING"), after=done + 1, what="RELOADING=1")
            failed = await wait(notify, has("READY"), after=again, what="READY=1")
            assert "last reload failed" in status_of(notify.notices[failed])
            result = await pos.send("payment.record", {"kind": "cash_sale",
                                                       "amount": sek(50_00),
                                                       "tendered": sek(50_00), "change": sek(0)})
            assert result.data["session"]["expected_cash"] == {SEK: 10000 + 500_00 + 50_00}
        assert "money.max_amount" in (tmp_path / "r1.log").read_text()
        daemon.proc.send_signal(signal.SIGTERM)
        assert await daemon.wait_exit() == 0
    finally:
        daemon.terminate()


async def test_sigterm_while_a_receipt_prints_finishes_the_receipt(
        broker: MosquittoBroker, printer: PrinterSimulator, notify: NotifySocket,
        tmp_path: Path) -> None:
    path = printer.open_pty()
    # 9600 baud: about 3 s of wire time, paced by the driver: SIGTERM lands mid-receipt.
    config = register_config(tmp_path, broker, {"kind": "serial", "path": path,
                                                "baudrate": 9600})
    receipt = {"blocks": [{"type": "columns", "left": f"Artikel {n}", "right": "10.00"}
                          for n in range(60)] + [{"type": "cut"}]}
    daemon = RegisterProcess(config, tmp_path / "r1.log", env=notify.env)
    daemon.start()
    try:
        await wait(notify, has("READY"), what="READY=1")
        assert daemon.proc is not None
        async with KassadClient(broker_config(broker.port), store="S1", register="R1",
                                requester="pos-1", employee="e1", result_retry_interval=1.0) as pos:
            job = asyncio.create_task(pos.send("print.receipt", {"document": receipt},
                                               cmd_id="receipt-1001", ttl=60))
            await until(lambda: any(e["type"] == "print.job" and e["data"]["state"] == "printing"
                                    for e in journal_events(tmp_path / "j.db")),
                        what="the receipt printing")
            await printer.wait_received(200)
            assert not printer.receipts  # mid-receipt
            daemon.proc.send_signal(signal.SIGTERM)
            assert await daemon.wait_exit(60) == 0
            # On paper: the whole receipt, cut once.
            printed = await printer.wait_receipts(1)
            assert printed[0].find("Artikel 59") is not None
            assert len(printer.receipts) == 1
            types = [(e["type"], e["data"].get("state")) for e in
                     journal_events(tmp_path / "j.db")]
            assert types.index(("print.job", "printed")) < types.index(("daemon.stopped", None))
            # The POS learns the outcome from the register once it is back (asked again by
            # the same cmd_id), and nothing prints twice.
            daemon.start()
            result = await job
            assert result.data["state"] == "printed"
        assert len(printer.receipts) == 1
        assert not [e for e in journal_events(tmp_path / "j.db")
                    if e["type"] == "cmd.indeterminate"]
    finally:
        daemon.terminate()


async def test_sigterm_in_a_burst_of_payments_loses_nothing(
        broker: MosquittoBroker, notify: NotifySocket, tmp_path: Path) -> None:
    journal = tmp_path / "j.db"
    config = write_config(tmp_path / "r1.toml", port=broker.port, journal=journal,
                          consumers=["agg"])
    daemon = RegisterProcess(config, tmp_path / "r1.log", env=notify.env)
    daemon.start()
    told: dict[str, str] = {}  # cmd_id → what the POS was told
    stopped = asyncio.Event()
    try:
        async with running_consumer(broker.port, tmp_path / "agg.db") as agg, \
                KassadClient(broker_config(broker.port), store="S1", register="R1",
                             requester="pos-1", employee="e1", retry_interval=0.3) as pos:
            await wait(notify, has("READY"), what="READY=1")
            await pos.send("session.open", {"starting_float": sek(0)}, ttl=60)
            queue: asyncio.Queue[int] = asyncio.Queue()
            for n in range(1, 151):
                queue.put_nowait(n)

            async def till() -> None:
                while not queue.empty():
                    n = queue.get_nowait()
                    try:
                        await pos.send("payment.record", {
                            "kind": "cash_sale", "amount": sek(100 * n), "tendered": sek(100 * n),
                            "change": sek(0)}, cmd_id=f"pay-{n}", ttl=120)
                        told[f"pay-{n}"] = "ok"
                    except CommandError as e:
                        told[f"pay-{n}"] = e.code
                    if len(told) == 60 and not stopped.is_set():
                        stopped.set()
                        assert daemon.proc is not None
                        daemon.proc.send_signal(signal.SIGTERM)  # as systemctl stop does
                        assert await daemon.wait_exit(45) == 0
                        daemon.start()

            async with asyncio.TaskGroup() as group:
                for _ in range(6):
                    group.create_task(till())
            last = journal_events(journal)[-1]["seq"]
            await until(lambda: max(agg.acked("R1").values(), default=0) >= last, timeout=60,
                        wake=agg.progress, what="the consumer has every event")
            state = await pos.send("state.get")
    finally:
        daemon.terminate()
    # A clean stop leaves nothing in doubt: every payment was done exactly once.
    assert told == {f"pay-{n}": "ok" for n in range(1, 151)}
    events = journal_events(journal)
    paid = [e["cause"]["cmd_id"] for e in events if e["type"] == "payment.recorded"]
    assert sorted(paid) == sorted(told)
    assert state.data["state"]["session"]["expected_cash"] == {
        SEK: sum(100 * n for n in range(1, 151))}
    assert [e["type"] for e in events if e["type"].startswith("daemon.")] == [
        "daemon.started", "daemon.stopped", "daemon.started", "daemon.stopped"]
    assert not [e for e in events if e["type"] == "cmd.indeterminate"]
    assert verify_journal(journal).ok


async def test_store_aggregator_notifies_and_reloads(broker: MosquittoBroker,
                                                    notify: NotifySocket, tmp_path: Path,
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("WATCHDOG_USEC", "400000")
    config = StoreConfig(stores=["S1"], broker=broker_config(broker.port),
                         database=f"sqlite:///{tmp_path / 'store.db'}", http={"port": 0})
    changed = config.model_copy(update={"reorder_timeout": 9.0, "aggregator_id": "agg-2"})
    service = StoreService(config, notifier=Notifier(str(notify.path)),
                           load_config=lambda: changed)
    task = asyncio.create_task(service.run())
    try:
        ready = await wait(notify, has("READY"), what="READY=1")
        line = status_of(notify.notices[ready])
        assert line.startswith("ready: 0 of 0 registers online")
        assert service.http is not None and f":{service.http.port}/" in line
        await wait(notify, has("WATCHDOG"), after=ready, what="WATCHDOG=1")
        service.request_reload()
        reloading = await wait(notify, has("RELOADING"), after=ready, what="RELOADING=1")
        done = await wait(notify, has("READY"), after=reloading, what="READY=1 after reload")
        assert "restart to apply aggregator_id" in status_of(notify.notices[done])
        assert service.ingest is not None and service.ingest.reorder_timeout == 9.0
        service.stop()
        await wait(notify, has("STOPPING"), after=done, what="STOPPING=1")
    finally:
        service.stop()
        async with asyncio.timeout(15):
            await task


def test_the_notifier_does_nothing_outside_systemd() -> None:
    quiet = Notifier.from_env({})
    assert not quiet.enabled
    assert quiet.send("READY=1") is False


def test_abstract_socket_addresses_are_understood(tmp_path: Path) -> None:
    import socket

    name = f"kassad-test-{os.getpid()}"
    server = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    server.bind("\0" + name)
    server.settimeout(2)
    try:
        assert Notifier.from_env({"NOTIFY_SOCKET": "@" + name}).send("READY=1", "STATUS=ok")
        assert server.recv(100) == b"READY=1\nSTATUS=ok"
    finally:
        server.close()
