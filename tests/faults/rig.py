"""A simulated store for fault injection, and the check that nothing was lost or doubled.

    async with FaultRig(tmp_path) as rig:       # broker, proxy, printer, register, aggregator
        await rig.open_session()
        await rig.burst(workers=4, until=lambda: kills >= 50)   # while a fault task works
        figures = await rig.settle_and_check()  # every assertion of the fault suite

Everything is real: Mosquitto (with persistence, as a store runs it), ``kassad run`` and
``kassad store`` as processes a test can SIGKILL, the printer simulator with its drawer on the
kick port (TCP, like a :9100 printer), a TCP proxy between the register and the broker that
cuts, stalls and resets, and the POS (``KassadClient``) straight on the broker.

The POS remembers every command it sent and the answer it finally got. ``settle_and_check``
closes the session with the cash the POS itself computes from the commands answered ``ok``,
lets the register and the aggregator catch up, and then proves:

* each command answered ``ok`` took effect exactly once in the journal (its effect event,
  by ``cause.cmd_id``); one refused took none; one ``indeterminate`` none (session commands
  are all-or-nothing) or, for a kick, at most one;
* the close balances: the journal's and the store's discrepancy is zero, so no payment was
  lost or counted twice on the way;
* the drawer was kicked at the printer exactly as often as the journal says, give or take
  the kicks of ``indeterminate`` commands (sent, then the daemon died before journaling it);
* with ``receipts=True`` (print.receipt in the burst, a marker line each): each receipt
  answered ``ok`` is on the paper exactly once, an ``indeterminate`` or failed one at most
  once (part of it may have gone out), an expired one never;
* the journal's hash chain verifies;
* the aggregator holds exactly the journal's events — each once, the same bodies (so the
  same hash chain), seq 1…N without a gap — folded into the same session figures, and raised
  no integrity alarm.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import random
import signal
import sqlite3
import subprocess
import sys
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Any, Self

import pytest

from kassad.daemon.client import CommandError, CommandTimeout, KassadClient
from kassad.daemon.journal.verify import verify_journal
from kassad.daemon.ledger.session import LedgerEvent, fold
from kassad.simulators.broker import MosquittoBroker, free_port
from kassad.simulators.printer.device import PrinterSimulator
from kassad.simulators.serial_drawer import SerialDrawerSimulator
from tests.support.register import (
    RegisterProcess,
    broker_config,
    journal_events,
    until,
    write_config,
)
from tests.support.tcp_proxy import TcpProxy

STORE = "S1"
REGISTER = "R1"
CONSUMER = "store-agg"
EMPLOYEE = "e1"
CURRENCY = "SEK"
FLOAT = 50_000
#: Long enough that a command outlives every fault the suite injects (a restart, an outage):
#: the POS resends the same cmd_id until it is answered.
TTL = 120.0

PRINTER = {"model": "TM-T20II", "status_interval": 0.1, "status_timeout": 0.5,
           "reconnect_min": 0.05, "reconnect_max": 0.2, "completion_timeout": 5.0,
           "receipt_expiry": 120.0}
DRAWER = {"open_level": "high", "open_timeout": 1.0, "kick_retries": 0,
          "left_open_after": 30.0, "pulse_on_ms": 100}
#: The event a command's effect leaves in the journal, found by ``cause.cmd_id``.
EFFECT = {"payment.record": "payment.recorded", "session.adjust": "session.adjusted",
          "session.open": "session.opened", "session.close": "session.closed",
          "drawer.open": "drawer.kicked", "print.receipt": "print.job"}
#: Commands whose ``indeterminate`` may have acted once (a device moved before the crash).
DEVICE_COMMANDS = frozenset({"drawer.open", "print.receipt"})
#: Refusals that come after the device acted: carried out, and it did not work (the drawer
#: was kicked and did not open). Each allows that many effects at most.
FAILED_AFTER_ACTING = {"kick_failed": 1 + DRAWER["kick_retries"]}


def sek(amount: int) -> dict[str, Any]:
    return {"amount": amount, "currency": CURRENCY}


def receipt_marker(n: int) -> str:
    """The line that tells the n-th command's receipt from every other on the paper."""
    return f"RECEIPT #{n:06d}#"


@dataclass
class Sent:
    """One command as the POS saw it: what it asked and the answer it finally got."""

    cmd_id: str
    command: str
    params: dict[str, Any]
    outcome: str | None = None  # "ok" or the error code
    data: dict[str, Any] = field(default_factory=dict)


@dataclass
class Figures:
    """What one fault test checked, for the suite's summary (README: reliability)."""

    faults: int = 0
    commands: int = 0
    ok: int = 0
    refused: int = 0
    indeterminate: int = 0
    events: int = 0
    lost: int = 0
    doubled: int = 0
    kicks: int = 0
    receipts: int = 0
    #: The refusals by error code (each checked to have changed nothing, or acted at most
    #: as the code says).
    refusals: Counter[str] = field(default_factory=Counter)


class DaemonProcess(RegisterProcess):
    """``kassad <subcommand> --config FILE`` as a real process (``run`` or ``store``)."""

    def __init__(self, subcommand: str, config: Path, log: Path) -> None:
        super().__init__(config, log)
        self.subcommand = subcommand

    def start(self, **extra_env: str) -> None:
        env = {**os.environ, **self.env, **extra_env}
        with self.log.open("ab") as out:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "kassad.daemon", "--log-level", "INFO", self.subcommand,
                 "--config", str(self.config)], stdout=out, stderr=subprocess.STDOUT, env=env)

    @property
    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    async def stop(self) -> int:
        """SIGTERM and wait for the exit without blocking the loop (the proxy and the POS
        run on it: a blocking wait would stall them while the daemon says goodbye)."""
        assert self.proc is not None
        if self.proc.poll() is None:
            self.proc.terminate()
        return await self.wait_exit(timeout=30)

    def sigkill(self) -> None:
        """SIGKILL without waiting: the caller reaps it (``wait_exit``)."""
        if self.alive:
            assert self.proc is not None
            self.proc.send_signal(signal.SIGKILL)

    def log_count(self, text: str) -> int:
        """How many lines of the log so far contain ``text``."""
        try:
            log = self.log.read_text(encoding="utf-8", errors="replace")
        except OSError:
            return 0
        return sum(1 for line in log.splitlines() if text in line)

    def log_tail(self, lines: int = 40) -> str:
        try:
            text = self.log.read_text(encoding="utf-8", errors="replace")
        except OSError:
            return "(no log)"
        return "\n".join(text.splitlines()[-lines:])


class FaultRig:
    """One register with printer and drawer, the store aggregator, a broker, a POS."""

    def __init__(self, workdir: Path, *, journal: Path | None = None,
                 register_env: dict[str, str] | None = None,
                 register_sections: dict[str, dict[str, Any]] | None = None,
                 receipts: bool = False,
                 drawer_box: SerialDrawerSimulator | None = None) -> None:
        self.workdir = workdir
        #: The drawer on its own serial interface box (configured by the caller in
        #: register_sections), instead of the printer's kick port.
        self.drawer_box = drawer_box
        #: The burst also prints receipts (print.receipt, each with its own marker line).
        self.receipts = receipts
        self.journal = journal or workdir / "journal.db"
        self.store_db = workdir / "store.db"
        self.broker = MosquittoBroker(workdir / "broker", persistence=True)
        self.proxy = TcpProxy(self.broker.host, self.broker.port)
        self.printer = PrinterSimulator()
        self.register_env = register_env or {}
        self.register_sections = register_sections or {}
        self.sent: dict[str, Sent] = {}
        self.figures = Figures()
        self.register: DaemonProcess
        self.aggregator: DaemonProcess
        self._pos: KassadClient | None = None
        self._stack = contextlib.AsyncExitStack()
        self._cashier: asyncio.Task[None] | None = None
        #: While True the cashier leaves an open drawer alone (a test holds it open).
        self.cashier_away = False
        self._next = 0

    # -- life cycle -------------------------------------------------------------------------

    async def __aenter__(self) -> Self:
        try:
            await self._start()
        except BaseException:
            await self._stack.aclose()
            raise
        return self

    async def _start(self) -> None:
        self.broker.start()
        self._stack.callback(self.broker.stop)
        await self.proxy.start()
        self._stack.push_async_callback(self.proxy.close)
        printer_port = await self.printer.serve_tcp()
        self._stack.push_async_callback(self.printer.close)
        sections: dict[str, dict[str, Any]] = {
            "devices.printer": {**PRINTER, "transport": {"kind": "tcp", "host": "127.0.0.1",
                                                         "port": printer_port}},
            "devices.drawer": dict(DRAWER),  # a copy: register_sections update it below
            "reports": {"print_z_at_close": False, "slips": False},
        }
        for name, values in self.register_sections.items():
            sections.setdefault(name, {}).update(values)
        config = write_config(self.workdir / "register.toml", port=self.proxy.port,
                              journal=self.journal, consumers=[CONSUMER], **sections)
        self.register = DaemonProcess("run", config, self.workdir / "register.log")
        self.register.env = self.register_env
        self._stack.callback(self.register.terminate)
        store_config = self.workdir / "store.toml"
        store_config.write_text(
            f'stores = ["{STORE}"]\nconsumer = "{CONSUMER}"\n'
            f'database = "sqlite:///{self.store_db}"\nreorder_timeout = 0.5\n'
            f'[http]\nport = 0\n'
            f'[broker]\nhost = "127.0.0.1"\nport = {self.broker.port}\n'
            'reconnect_min = 0.05\nreconnect_max = 0.5\nkeepalive = 5\n')
        self.aggregator = DaemonProcess("store", store_config, self.workdir / "store.log")
        self._stack.callback(self.aggregator.terminate)
        self.aggregator.start()
        self.register.start()
        self._pos = await self._stack.enter_async_context(KassadClient(
            broker_config(self.broker.port), store=STORE, register=REGISTER,
            requester="pos-1", employee=EMPLOYEE, retry_interval=0.3,
            result_retry_interval=0.5, ttl=TTL))
        self._cashier = asyncio.create_task(self._close_drawer_when_opened(), name="cashier")
        self._stack.push_async_callback(self._stop_cashier)

    async def __aexit__(self, exc_type: type[BaseException] | None,
                        exc: BaseException | None, tb: TracebackType | None) -> None:
        await self._stack.aclose()

    async def _stop_cashier(self) -> None:
        if self._cashier is not None:
            self._cashier.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._cashier

    async def _close_drawer_when_opened(self) -> None:
        """The cashier: whenever a kick opens the drawer, they take the cash and close it."""
        rng = random.Random(7)
        device = self.drawer_box or self.printer
        while True:
            with contextlib.suppress(TimeoutError):
                await device.wait_for(lambda: self.drawer_is_open() and not self.cashier_away,
                                      timeout=3600)
                await asyncio.sleep(rng.uniform(0.3, 0.6))  # a hand on the drawer, not a sync
                device.close_drawer()

    def drawer_is_open(self) -> bool:
        """The drawer itself (not what its sensor says)."""
        if self.drawer_box is not None:
            return self.drawer_box.drawer_open
        return self.printer.state.drawer_open

    def free_port(self) -> int:
        return free_port()

    # -- the POS ----------------------------------------------------------------------------

    def next_id(self, prefix: str) -> str:
        self._next += 1
        return f"{prefix}-{self._next}"

    async def send(self, command: str, params: dict[str, Any],
                   cmd_id: str | None = None) -> Sent:
        """Send until answered and remember the answer (an error is an answer too)."""
        assert self._pos is not None
        sent = Sent(cmd_id or self.next_id(command.replace(".", "-")), command, params)
        self.sent[sent.cmd_id] = sent
        try:
            result = await self._pos.send(command, params, cmd_id=sent.cmd_id, ttl=TTL)
        except CommandError as e:
            sent.outcome = e.code
            sent.data = e.details
        except CommandTimeout:
            sent.outcome = "timeout"
        else:
            sent.outcome = "ok"
            sent.data = result.data
        return sent

    async def open_session(self) -> Sent:
        sent = await self.send("session.open", {"starting_float": sek(FLOAT)})
        assert sent.outcome == "ok", sent
        return sent

    def sale(self, n: int) -> tuple[str, dict[str, Any]]:
        """The n-th command of a burst: mostly payments, some float added, some kicks."""
        amount = 100 + n  # every amount distinct: a double or a loss shows in the totals
        if n % 11 == 5:
            return "drawer.open", {"reason": "sale"}
        if self.receipts and n % 5 == 1:
            return "print.receipt", {"document": {"blocks": [
                {"type": "text", "text": "kassad fault suite"},
                {"type": "text", "text": receipt_marker(n)},
                {"type": "cut"}]}}
        if n % 7 == 3:
            return "session.adjust", {"direction": "add", "amount": sek(amount)}
        if n % 3 == 0:
            return "payment.record", {"kind": "other", "payment_type": "card",
                                      "amount": sek(amount)}
        return "payment.record", {"kind": "cash_sale", "amount": sek(amount),
                                  "tendered": sek(amount), "change": sek(0)}

    async def burst(self, workers: int, *, until_done: Callable[[], bool],
                    at_least: int = 0) -> None:
        """Workers send commands from :meth:`sale` until ``until_done()`` and ``at_least``
        commands were sent; each waits for its command's answer before the next."""
        counter = iter(range(1, 10**9))

        async def worker() -> None:
            for n in counter:
                if until_done() and n > at_least:
                    return
                command, params = self.sale(n)
                await self.send(command, params)

        async with asyncio.TaskGroup() as group:
            for _ in range(workers):
                group.create_task(worker())

    def answered(self) -> int:
        """How many commands have their final answer."""
        return sum(1 for s in self.sent.values() if s.outcome is not None)

    async def until_answered(self, more: int) -> None:
        """Until ``more`` commands than now have their answer (the burst goes on meanwhile)."""
        target = self.answered() + more
        await until(lambda: self.answered() >= target, 60, what=f"{target} commands answered")

    def expected_cash(self) -> int:
        """The drawer's cash by the POS's own books: the float and what was answered ok."""
        total = FLOAT
        for sent in self.sent.values():
            if sent.outcome != "ok":
                continue
            if sent.command == "payment.record" and sent.params["kind"] == "cash_sale":
                total += sent.params["amount"]["amount"]
            elif sent.command == "session.adjust":
                sign = 1 if sent.params["direction"] == "add" else -1
                total += sign * sent.params["amount"]["amount"]
        return total

    # -- the checks -------------------------------------------------------------------------

    def store_rows(self, sql: str, *args: Any) -> list[tuple[Any, ...]]:
        if not self.store_db.exists():
            return []
        con = sqlite3.connect(f"file:{self.store_db}?mode=ro", uri=True, timeout=5)
        try:
            return con.execute(sql, args).fetchall()
        except sqlite3.OperationalError:
            return []  # not created yet
        finally:
            con.close()

    def store_acked(self) -> int:
        """How far the aggregator has acknowledged the stream (stored and folded), as the
        register recorded its ``ack/{consumer}``."""
        if not self.journal.exists():
            return 0
        con = sqlite3.connect(f"file:{self.journal}?mode=ro", uri=True, timeout=5)
        try:
            row = con.execute("SELECT upto_seq FROM consumer_acks WHERE consumer = ?",
                              (CONSUMER,)).fetchone()
        except sqlite3.OperationalError:
            return 0
        finally:
            con.close()
        return int(row[0]) if row else 0

    async def wait_store_caught_up(self, timeout: float = 60.0) -> int:  # noqa: ASYNC109
        """Until the aggregator has folded every event the journal holds (the register runs
        on: it is the one that delivers them)."""
        def caught_up() -> bool:
            return self.store_acked() >= len(journal_events(self.journal))

        await until(caught_up, timeout, what="the store to hold every journaled event")
        return self.store_acked()

    async def settle_and_check(self, *, close: bool = True) -> Figures:
        """Close the session with the POS's own figure, stop the register, let the store
        catch up, and check everything (see the module's docstring)."""
        for sent in self.sent.values():
            assert sent.outcome not in (None, "timeout", "internal_error",
                                        "journal_unavailable"), sent
        if close:
            counted = self.expected_cash()
            closing = await self.send("session.close", {"counted": sek(counted),
                                                        "leave_in_drawer": sek(FLOAT)})
            assert closing.outcome == "ok", closing
            assert closing.data["session"]["discrepancy"] == {CURRENCY: 0}, closing.data
        caught_up = await self.wait_store_caught_up()
        self.check_store(caught_up)
        self.check_effects()
        if any(s.command == "print.receipt" for s in self.sent.values()):
            self.check_receipts()
        assert await self.register.stop() == 0, self.register.log_tail()
        return self.figures

    def check_effects(self) -> None:
        events = journal_events(self.journal)
        report = verify_journal(self.journal)
        assert report.ok, report.summary()
        effects: Counter[str] = Counter()
        for e in events:
            # A device's event names its command in data (it is journaled by the device).
            cmd_id = ((e.get("cause") or {}).get("cmd_id") or e["data"].get("cmd_id")
                      or (e["data"].get("job_id") if e["type"] == "print.job" else None))
            if (cmd_id in self.sent and e["type"] == EFFECT.get(self.sent[cmd_id].command)
                    and (e["type"] != "print.job" or e["data"].get("state") == "printed")):
                effects[cmd_id] += 1
        f = self.figures
        for sent in self.sent.values():
            n = effects[sent.cmd_id]
            f.commands += 1
            if sent.outcome == "ok":
                f.ok += 1
                f.lost += n < 1
                f.doubled += n > 1
                assert n == 1, f"{sent.cmd_id} ({sent.command}) answered ok, took effect {n}x"
            elif sent.outcome == "indeterminate":
                f.indeterminate += 1
                limit = 1 if sent.command in DEVICE_COMMANDS else 0
                f.doubled += n > limit
                assert n <= limit, f"{sent.cmd_id} indeterminate, took effect {n}x"
            else:
                f.refused += 1
                f.refusals[sent.outcome or ""] += 1
                limit = FAILED_AFTER_ACTING.get(sent.outcome or "", 0)
                f.doubled += n > limit
                assert n <= limit, f"{sent.cmd_id} refused ({sent.outcome}), took effect {n}x"
        journaled_kicks = sum(1 for e in events if e["type"] in ("drawer.kicked",
                                                                   "drawer.kicked_again"))
        maybe = sum(1 for s in self.sent.values()
                    if s.command == "drawer.open" and s.outcome == "indeterminate")
        received = self.kicks_received()
        assert journaled_kicks <= received <= journaled_kicks + maybe, (
            f"{received} kicks at the printer, {journaled_kicks} journaled, {maybe} "
            "indeterminate")
        f.kicks += received
        f.events += len(events)

    def kicks_received(self) -> int:
        """Every kick the printer received, those it ignored (its pin still pulsing, or in an
        unrecoverable error) included; or the kicks the drawer's own box received."""
        if self.drawer_box is not None:
            return len(self.drawer_box.kicks)
        return len(self.printer.kicks) + self.printer.ignored_kicks + self.printer.refused_kicks

    def check_receipts(self) -> None:
        """Each print.receipt answered ok is on the paper exactly once (its marker line); an
        indeterminate one at most once; a failed one at most once (part of it may have gone
        out before the printer went away, as its reason says); an expired one never."""
        paper = "\n".join([*(r.text for r in self.printer.receipts),
                           self.printer.current_receipt.text])
        for sent in self.sent.values():
            if sent.command != "print.receipt":
                continue
            marker = sent.params["document"]["blocks"][1]["text"]
            n = paper.count(marker)
            if sent.outcome == "ok":
                self.figures.lost += n < 1
                self.figures.doubled += n > 1
                assert n == 1, f"{sent.cmd_id} answered ok, printed {n}x"
            else:
                limit = 1 if sent.outcome in ("indeterminate", "print_failed") else 0
                self.figures.doubled += n > limit
                assert n <= limit, f"{sent.cmd_id} {sent.outcome} {sent.data}, printed {n}x"
        self.figures.receipts += len(self.printer.receipts)

    def check_store(self, caught_up: int) -> None:
        """The store holds the journal's events 1…``caught_up`` (at least), each once, equal."""
        rows = self.store_rows("SELECT seq, body FROM events WHERE store = ? AND register = ? "
                               "ORDER BY epoch, seq", STORE, REGISTER)
        journal = journal_events(self.journal)  # read after the store: it can only be longer
        stored = [json.loads(body) for _, body in rows]
        seqs = [int(seq) for seq, _ in rows]
        self.figures.lost += max(0, len(journal) - len(set(seqs)))
        assert len(seqs) >= caught_up, "journaled events missing from the store"
        assert seqs == list(range(1, len(seqs) + 1)), "the store's seqs have gaps or extras"
        assert stored == journal[:len(stored)], "the store's events differ from the journal's"
        alarms = self.store_rows("SELECT kind, detail FROM alarms")
        assert alarms == [], f"integrity alarms in the store: {alarms}"
        ledger = fold(LedgerEvent.from_envelope(e) for e in journal)
        by_id = {s.session_id: s for s in (ledger.last_closed, ledger.open_session) if s}
        for session_id, summary in self.store_rows(
                "SELECT session_id, summary FROM sessions WHERE store = ? AND register = ?",
                STORE, REGISTER):
            if session_id in by_id:
                assert json.loads(summary) == by_id[session_id].summary()


@contextlib.contextmanager
def journal_on_small_disk(folder: Path, size: str = "4m") -> Iterator[Path]:
    """A tmpfs of ``size`` mounted on ``folder``: a disk that really fills up."""
    if os.geteuid() != 0:
        pytest.skip("mounting a small tmpfs for the journal needs root (CI runs as root)")
    folder.mkdir(parents=True, exist_ok=True)
    subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "kassad-faults", str(folder)],
                   check=True, capture_output=True)
    try:
        yield folder
    finally:
        subprocess.run(["umount", "-l", str(folder)], check=False, capture_output=True)
