"""``kassad demo``: a broker, a receipt printer with its drawer, one register daemon, a
consumer and a scripted POS.

Everything runs as it would in a store, on loopback: Mosquitto, ``kassad run`` and
``kassad store`` as processes; the printer simulator (TCP, like a :9100 printer) and the
POS in this process. The POS sends the worked case over MQTT, printing each reply, then prints
a receipt that opens the drawer, which the cashier closes. At the end it shows the receipt,
what the consumer received, and verifies the register's journal.
"""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

from kassad.daemon.client import CommandError, KassadClient
from kassad.daemon.config import BrokerConfig
from kassad.daemon.journal.verify import verify_journal
from kassad.daemon.ledger.money import format_money
from kassad.daemon.store.storage.sqlite import SqliteStorage
from kassad.simulators.broker import MosquittoBroker, free_port
from kassad.simulators.pos import WORKED_CASE, Outcome, Step, run_steps
from kassad.simulators.printer.device import PrinterSimulator

STORE, REGISTER, CONSUMER = "demo-store", "R1", "store-agg"


RECEIPT = {"blocks": [
    {"type": "text", "text": "Kaffebaren", "bold": True, "align": "center",
     "double_height": True},
    {"type": "text", "text": "Storgatan 1, Kassa 1", "align": "center"},
    {"type": "rule"},
    {"type": "columns", "left": "Kaffe", "right": "35.00"},
    {"type": "columns", "left": "Kanelbulle", "right": "29.50"},
    {"type": "columns", "left": "Smörgås ost & skinka", "right": "85.00"},
    {"type": "rule"},
    {"type": "columns", "left": "Totalt SEK", "right": "149.50", "bold": True},
    {"type": "columns", "left": "Kontant", "right": "200.00"},
    {"type": "columns", "left": "Växel", "right": "50.50"},
    {"type": "qr", "data": "https://kassad.example/r/1001", "size": 4},
    {"type": "text", "text": "Tack för besöket!", "align": "center"},
    {"type": "cut"},
]}


def _register_toml(port: int, journal: Path, printer_port: int) -> str:
    return f"""\
store = "{STORE}"
register = "{REGISTER}"

[broker]
host = "127.0.0.1"
port = {port}

[journal]
path = "{journal}"

[delivery]
consumers = ["{CONSUMER}"]

[money]
base_currency = "SEK"
accepted = ["SEK", "EUR"]

[devices.printer]
model = "TM-T20II"
transport = {{ kind = "tcp", host = "127.0.0.1", port = {printer_port} }}
status_interval = 0.25

[devices.drawer]
open_level = "high"
left_open_after = 30.0
"""


def _spawn(args: list[str], log: Path) -> subprocess.Popen[bytes]:
    with log.open("ab") as out:
        return subprocess.Popen([sys.executable, "-m", "kassad.daemon", *args], stdout=out,
                                stderr=subprocess.STDOUT)


def _stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def _print_reply(reply: dict[str, Any]) -> None:
    print("   ", json.dumps(reply, ensure_ascii=False), flush=True)


def _print_step(step: Step, outcome: Outcome) -> None:
    if isinstance(outcome, CommandError):
        print(f"    ✗ refused as expected: {outcome.code}: {outcome.message}\n", flush=True)
        return
    session = outcome.data.get("session") or {}
    figures = {k: session.get(k) for k in ("number", "status", "expected_cash", "expected",
                                           "counted", "discrepancy", "removed")
               if session.get(k) not in (None, {})}
    print(f"    ✓ {figures}\n", flush=True)


async def _pos(port: int, printer: PrinterSimulator) -> None:
    async def announce(step: Step, outcome: Outcome) -> None:
        _print_step(step, outcome)

    steps_seen: list[str] = []

    def on_reply(reply: dict[str, Any]) -> None:
        if reply.get("phase") == "ack":
            steps_seen.append(str(reply.get("command")))
        _print_reply(reply)

    async with KassadClient(BrokerConfig(host="127.0.0.1", port=port), store=STORE,
                            register=REGISTER, requester="demo-pos", on_reply=on_reply) as pos:
        await pos.wait_connected()
        for step in WORKED_CASE:
            print(f"→ {step.title}  [{step.command}]", flush=True)
            await run_steps(pos, (step,), on_step=announce)

        print("→ print the receipt of the sale and open the drawer  [print.receipt]",
              flush=True)
        result = await pos.send("print.receipt", {"document": RECEIPT, "open_drawer": True},
                                employee="e17")
        print(f"    ✓ job {result.data['state']}, drawer {result.data.get('drawer')}\n")
        receipt = (await printer.wait_receipts(1))[-1]
        print("    the printer simulator printed:")
        for line in receipt.lines:
            print(f"    │ {line}")
        print(f"    (cut: {receipt.cut})\n")
        print("→ the cashier closes the drawer", flush=True)
        printer.close_drawer()
        await _until_drawer(pos, "closed")
        print("    ✓ the sensor says closed (drawer.closed journaled)\n", flush=True)


async def _until_drawer(pos: KassadClient, wanted: str) -> None:
    async with asyncio.timeout(10):
        while True:
            state = await pos.send("state.get")
            if state.data["state"]["devices"]["drawer"]["state"] == wanted:
                return
            await asyncio.sleep(0.1)  # a person watching the screen, not a test


async def _store(work: Path, broker_port: int, journal: Path, events_db: Path) -> None:
    async with PrinterSimulator(receipts_dir=work / "receipts") as printer:
        printer_port = await printer.serve_tcp()
        print(f"printer: simulated TM-T20II with a cash drawer on 127.0.0.1:{printer_port}")
        config = work / "register-R1.toml"
        config.write_text(_register_toml(broker_port, journal, printer_port))
        register = _spawn(["run", "--config", str(config)], work / "register-R1.log")
        store_config = work / "store.toml"
        http_port = free_port()
        store_config.write_text(_store_toml(broker_port, events_db, http_port))
        consumer = _spawn(["store", "--config", str(store_config)], work / "store-agg.log")
        print(f"register: kassad run (pid {register.pid}), store aggregator: kassad store "
              f"(pid {consumer.pid}), store view on http://127.0.0.1:{http_port}/"
              f"?store={STORE}\n")
        try:
            await _pos(broker_port, printer)
        finally:
            await asyncio.to_thread(_stop, register)
            await asyncio.to_thread(_stop, consumer)


def _store_toml(port: int, database: Path, http_port: int) -> str:
    return f"""\
stores = ["{STORE}"]
consumer = "{CONSUMER}"
database = "sqlite://{database}"
reorder_timeout = 1.0

[http]
host = "127.0.0.1"
port = {http_port}

[broker]
host = "127.0.0.1"
port = {port}
"""


async def _store_view(database: Path) -> None:
    storage = SqliteStorage(database)
    await storage.open()
    try:
        print("the store aggregator's view:")
        for s in await storage.sessions([STORE], None, None):
            end = ", ".join(f"{format_money(v, c)}" for c, v in s.discrepancy_end.items())
            print(f"    {s.register} session {s.number}: {s.status}, opened {s.opened_at}"
                  + (f", closed {s.closed_at}, discrepancy {end}" if s.closed_at else ""))
        for r in await storage.registers(STORE):
            print(f"    register {r.register}: {'online' if r.online else 'offline'}, "
                  f"alarms {', '.join(r.alarms) or 'none'}")
        alarms = await storage.alarms(STORE)
        print(f"    alarms: {len(alarms) or 'none'}")
    finally:
        await storage.close()


def main(workdir: Path | None = None) -> int:
    work = workdir or Path(tempfile.mkdtemp(prefix="kassad-demo-"))
    work.mkdir(parents=True, exist_ok=True)
    journal, events_db = work / "register-R1.db", work / "store-agg.db"
    print(f"kassad demo — files in {work}\n")
    with MosquittoBroker(work / "broker") as broker:
        print(f"broker: mosquitto on 127.0.0.1:{broker.port}")
        asyncio.run(_store(work, broker.port, journal, events_db))
    asyncio.run(_store_view(events_db))
    print(verify_journal(journal).summary())
    print(f"\nlogs: {work}/register-R1.log, {work}/store-agg.log; "
          f"export the journal with: kassad journal export --journal {journal}")
    return 0
