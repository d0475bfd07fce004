"""``kassad demo``: a whole simulated store on this machine, until Ctrl-C.

It starts the store of :mod:`kassad.simulators.store` (Mosquitto, two registers with their
printers, drawers and counters, the store aggregator with its web page), prints where to look,
plays a day of sales at both registers with one line per step, prints the day's figures as
the store view has them and each journal's verification, and keeps the store running for a
person to look around. Ctrl-C (or SIGTERM, or a hangup) stops everything in order and exits
0; a second Ctrl-C while stopping kills what is left.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import shutil
import signal
import socket
import sys
import tempfile
from collections.abc import Awaitable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from kassad.simulators.store import SimulatedStore

DEFAULT_HTTP_PORT = 8080
DEFAULT_PACE = 0.5
DESCRIPTION = """\
A whole simulated store on this machine: Mosquitto, two registers (kassad run) with their
receipt printers, cash drawers and coin/note counters, and the store aggregator (kassad store)
with its web page. It prints where to look, plays a day of sales at both registers, shows the
day's figures and each journal's verification, then keeps the store running until Ctrl-C,
which stops everything in order (a second Ctrl-C kills what is left)."""


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="kassad demo", description=DESCRIPTION,
        formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--workdir", type=Path, metavar="DIR",
                   help="keep the store's files (configuration, journals, receipts, logs) in "
                        "this new or empty folder; default: a temporary folder, removed at "
                        "the end")
    p.add_argument("--http-port", type=int, metavar="PORT",
                   help=f"the store view's port (default {DEFAULT_HTTP_PORT}, or a free one if "
                        "that is taken)")
    p.add_argument("--pace", type=float, default=DEFAULT_PACE, metavar="SECONDS",
                   help=f"seconds between the POS's steps (default {DEFAULT_PACE}; 0: as fast "
                        "as the store goes)")
    p.add_argument("--exit-after-day", action="store_true",
                   help="stop once the day is done instead of waiting for Ctrl-C")
    return p


def main(argv: list[str]) -> int:
    """``kassad demo ARGS``: the exit status (0 after Ctrl-C; 1 if the store failed)."""
    args = _parser().parse_args(argv)
    if args.pace < 0:
        print("kassad demo: --pace must be 0 or more", file=sys.stderr)
        return 2
    keep = args.workdir is not None
    work = args.workdir if keep else Path(tempfile.mkdtemp(prefix="kassad-demo-"))
    work = work.resolve()
    if keep and work.exists() and any(work.iterdir()):
        print(f"kassad demo: {work} is not empty; the demo starts a new store: give a new "
              "or empty folder", file=sys.stderr)
        return 2
    work.mkdir(parents=True, exist_ok=True)
    try:
        return asyncio.run(_demo(args, work, keep))
    except KeyboardInterrupt:  # Ctrl-C before the store's own handling was in place
        return 130
    finally:
        if not keep:
            shutil.rmtree(work, ignore_errors=True)


def _http_port(wanted: int | None) -> int:
    if wanted is not None:
        return wanted
    with socket.socket() as sock:
        # As the server binds: a port in TIME-WAIT from a previous run is still free.
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind(("127.0.0.1", DEFAULT_HTTP_PORT))
        except OSError:
            sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


class StopSignals:
    """SIGINT, SIGTERM and SIGHUP: the first asks the demo to stop, another one to kill."""

    SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)

    def __init__(self) -> None:
        self.stop = asyncio.Event()
        self.force = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in self.SIGNALS:
            loop.add_signal_handler(sig, self._received)

    def _received(self) -> None:
        if self.stop.is_set():
            if not self.force.is_set():
                _say("\nstopping at once: killing what is still running")
            self.force.set()
        self.stop.set()

    async def unless_stopped(self, work: Awaitable[Any]) -> bool:
        """Await ``work``; True once done, False if a stop came first (``work`` cancelled)."""
        task = asyncio.ensure_future(work)
        stopped = asyncio.ensure_future(self.stop.wait())
        try:
            await asyncio.wait({task, stopped}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            stopped.cancel()
        if task.done():
            task.result()
            return True
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        return False

    def close(self) -> None:
        loop = asyncio.get_running_loop()
        for sig in self.SIGNALS:
            loop.remove_signal_handler(sig)


def _say(text: str = "") -> None:
    print(text, flush=True)


async def _demo(args: argparse.Namespace, work: Path, keep: bool) -> int:
    # Imported here: ``kassad --help`` and the other subcommands need none of this.
    from kassad.daemon.client import KassadError
    from kassad.simulators.store import ChildExited, SimulatedStore

    signals = StopSignals()
    store = SimulatedStore(work, http_port=_http_port(args.http_port))
    status = 0
    _say(f"kassad demo: a simulated store on this machine, its files in {work}")
    _say("starting Mosquitto, two registers with their printers, drawers and counters, and the "
         "store aggregator …")
    try:
        await _run(args, store, signals)
    except (ChildExited, KassadError, TimeoutError, RuntimeError, OSError) as e:
        print(f"\nkassad demo: {e}\nthe logs are in {store.logs}", file=sys.stderr, flush=True)
        status = 1
    finally:
        _say("\nstopping: the registers, then the store aggregator, the simulators and the "
             "broker …")
        codes = await store.stop(signals.force)
        signals.close()
        _say("stopped: " + "".join(f"{name} {_exit_text(code)}, " for name, code in codes.items())
             + "broker stopped." + (f" The files stay in {work}." if keep else ""))
    # A daemon ended by the SIGTERM it was sent (before its handler was in place) stopped as
    # asked; one that had to be killed without a second Ctrl-C did not.
    if not signals.force.is_set() and any(c not in (0, -signal.SIGTERM) for c in codes.values()):
        status = status or 1
    return status


def _exit_text(code: int) -> str:
    return f"exit {code}" if code >= 0 else f"ended by {signal.Signals(-code).name}"


async def _run(args: argparse.Namespace, store: SimulatedStore, signals: StopSignals) -> None:
    """Start, play the day, show it, then keep running until a stop (each step may be cut
    short by one)."""
    if not await signals.unless_stopped(store.start()):
        return
    _where_to_look(store)
    _say(f"\nThe day at both registers ({_pace_text(args.pace)}):")
    if not await signals.unless_stopped(store.run_day(
            pace=args.pace, report=lambda register, line: _say(f"  {register}  {line}"))):
        return
    await _day_summary(store)
    if args.exit_after_day:
        return
    _say(f"\nThe store keeps running: open {store.view.page} — Ctrl-C stops everything.")
    await store.while_running(signals.stop.wait())


def _pace_text(pace: float) -> str:
    if pace == 0:
        return "no pauses"
    return f"{pace:g} s between steps; --pace 0 for none"


def _kassad_command() -> str:
    """How the person reading this runs kassad: on PATH, or this environment's own."""
    own = Path(sys.executable).with_name("kassad")
    found = shutil.which("kassad")
    if found and own.exists() and Path(found).resolve() == own.resolve():
        return "kassad"
    if own.exists():
        return str(own)
    return f"{sys.executable} -m kassad.daemon"


def _where_to_look(store: SimulatedStore) -> None:
    from kassad.simulators.broker import HOST
    from kassad.simulators.store import STORE

    view, kassad = store.view, _kassad_command()
    rigs = list(store.registers.values())
    first = rigs[0]
    _say("\nWhere to look:")
    _say(f"  store view   {view.page}")
    _say(f"  JSON API     {view.api}/sessions   (all of it: {view.base}/api/docs)")
    _say(f"  receipts     {store.receipts}/{{{','.join(store.registers)}}}/  "
         "(each receipt as text and PNG)")
    broker_log = store.broker.log_path if store.broker is not None else "-"
    _say(f"  logs         {store.logs}/  (mosquitto: {broker_log})")
    _say(f"  a register   {kassad} send --host {HOST} --port {store.broker_port} "
         f"--store {STORE} --register {first.spec.name} state.get")
    for rig in rigs:
        spec = rig.spec
        _say(f"  {spec.name} {spec.title}: printer {spec.printer_model} on {rig.printer_at} "
             f"with its drawer, {spec.counter.description} on {rig.counter_path}")
    for rig in rigs:
        _say(f"  {rig.spec.name} devices   {kassad} sim printer control --control-port "
             f"{rig.control_ports['printer']} paper_out  ·  {kassad} sim counter control "
             f"--control-port {rig.control_ports['counter']} state")
    pids = " · ".join(f"{name} {pid}" for name, pid in store.pids().items())
    _say(f"  processes    {pids}")


async def _day_summary(store: SimulatedStore) -> None:
    from kassad.daemon.journal.verify import verify_journal

    _say(f"\nThe day is done. The store view's figures ({store.view.api}/sessions):")
    listing = await store.view.get("/sessions?sort=start")
    for item in sorted(listing["sessions"], key=lambda s: (s["register"], s["number"])):
        session = await store.view.get(f"/sessions/{item['session_id']}")
        _say(f"  {_session_line(session)}")
    cash = await store.view.get("/cash")
    totals = cash["totals"]
    _say(f"  store: cash sales {_money(totals['gross'])}, refunds {_money(totals['refunds'])}, "
         f"net {_money(totals['net'])}")
    _say("The registers' journals (kassad journal verify):")
    for name, rig in store.registers.items():
        report = await asyncio.to_thread(verify_journal, rig.journal)
        _say(f"  {name}  {report.summary()}")


def _session_line(s: Mapping[str, Any]) -> str:
    card = s["payments_by_type"].get("card", {})
    return (f"{s['register']} session {s['number']} ({s['status']}): float "
            f"{_money(s['starting_float'])}, cash sales {_money(s['cash_sales'])} "
            f"({s['cash_sales_count']}), refunds {_money(s['cash_refunds'])} "
            f"({s['cash_refunds_count']}), card {_money(card)}, safe drops "
            f"{_money(s['adjustments_removed'])}; expected {_money(s['expected'] or {})}, "
            f"counted {_money(s['counted'] or {})}, discrepancy "
            f"{_money(s['discrepancy'] or {})}, left {_money(s['left_in_drawer'] or {})}")


def _money(totals: Mapping[str, int]) -> str:
    from kassad.daemon.ledger.money import format_money
    from kassad.simulators.store import CURRENCY

    if not totals:
        return format_money(0, CURRENCY)
    return ", ".join(format_money(v, c) for c, v in sorted(totals.items()))
