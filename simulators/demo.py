"""``kassad demo``: a broker, one register daemon, a consumer and a scripted POS.

Everything runs as it would in a store, on loopback: Mosquitto, ``kassad run`` and
``kassad ack-consumer`` as processes, and the POS (this process) sending the worked case
over MQTT and printing each reply. At the end it shows what the consumer received and
verifies the register's journal.
"""

from __future__ import annotations

import asyncio
import json
import sqlite3
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

from kassad.daemon.client import CommandError, KassadClient
from kassad.daemon.config import BrokerConfig
from kassad.daemon.journal.verify import verify_journal
from kassad.simulators.broker import MosquittoBroker
from kassad.simulators.pos import Outcome, Step, run_steps

STORE, REGISTER, CONSUMER = "demo-store", "R1", "store-agg"


def _register_toml(port: int, journal: Path) -> str:
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


async def _pos(port: int) -> None:
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
        from kassad.simulators.pos import WORKED_CASE

        for step in WORKED_CASE:
            print(f"→ {step.title}  [{step.command}]", flush=True)
            await run_steps(pos, (step,), on_step=announce)


def _consumer_summary(db: Path) -> str:
    con = sqlite3.connect(db)
    try:
        rows = con.execute("SELECT type, COUNT(*) FROM events GROUP BY type ORDER BY type")
        counts = ", ".join(f"{t} ×{n}" for t, n in rows)
        (total,) = con.execute("SELECT COUNT(*) FROM events").fetchone()
    finally:
        con.close()
    return f"{total} events: {counts}"


def main(workdir: Path | None = None) -> int:
    work = workdir or Path(tempfile.mkdtemp(prefix="kassad-demo-"))
    work.mkdir(parents=True, exist_ok=True)
    journal, events_db = work / "register-R1.db", work / "store-agg.db"
    print(f"kassad demo — files in {work}\n")
    with MosquittoBroker(work / "broker") as broker:
        print(f"broker: mosquitto on 127.0.0.1:{broker.port}")
        config = work / "register-R1.toml"
        config.write_text(_register_toml(broker.port, journal))
        register = _spawn(["run", "--config", str(config)], work / "register-R1.log")
        consumer = _spawn(["ack-consumer", "--host", "127.0.0.1", "--port", str(broker.port),
                           "--store", STORE, "--consumer", CONSUMER, "--db", str(events_db)],
                          work / "store-agg.log")
        print(f"register: kassad run (pid {register.pid}), consumer: kassad ack-consumer "
              f"(pid {consumer.pid})\n")
        try:
            asyncio.run(_pos(broker.port))
        finally:
            _stop(register)
            _stop(consumer)
    print(f"consumer stored {_consumer_summary(events_db)}")
    print(verify_journal(journal).summary())
    print(f"\nlogs: {work}/register-R1.log, {work}/store-agg.log; "
          f"export the journal with: kassad journal export --journal {journal}")
    return 0
