"""The standalone printer simulator and its JSON-lines control port.

    python -m kassad.simulators.printer --tcp-port 9100 --pty --control-port 9101 \\
        --receipts-dir receipts/
    python -m kassad.simulators.printer control --control-port 9101 paper_out
    python -m kassad.simulators.printer control --control-port 9101 stick_sensor stuck=open

On start the server prints one JSON line to stdout, ``{"tcp_port": 9100, "pty": "/dev/pts/7",
"control_port": 9101}``, then runs until SIGINT/SIGTERM.

Control protocol: TCP on 127.0.0.1, one JSON object per line in each direction::

    → {"verb": "paper_out"}                     ← {"ok": true, "state": {…}}
    → {"verb": "stick_sensor", "stuck": "open"} ← {"ok": true, "state": {…}}
    → {"verb": "receipts"}                      ← {"ok": true, "state": {…}, "result": [{…}]}
    → {"verb": "warp"}                          ← {"ok": false, "error": "unknown verb 'warp'"}

Verbs: the simulator's control methods (paper_out, cover_open, cutter_error on=false, …, unplug,
replug) plus "state", "receipts" (lines and cut of each) and "kicks".
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from dataclasses import asdict
from pathlib import Path
from typing import Any

from kassad.simulators.control import (
    HOST,
    Verb,
    announce_and_serve,
    control,
    run_until_signal,
    serve,
)
from kassad.simulators.printer.device import PrinterSimulator
from kassad.simulators.printer.state import PrinterState

__all__ = ["HOST", "SYNC_VERBS", "VERBS", "control", "control_main", "main", "serve_control",
           "verbs"]

#: Methods of PrinterSimulator a control client may call, with keyword arguments.
SYNC_VERBS = frozenset({
    "paper_near_end", "paper_out", "paper_ok", "cover_open", "cover_close", "go_offline",
    "go_online", "cutter_error", "unrecoverable_error", "jam_drawer", "stick_sensor",
    "close_drawer", "open_drawer_by_hand", "set_drawer_open_level", "wire_drawer",
    "silent_when_cover_open",
})
VERBS = SYNC_VERBS | {"unplug", "replug", "state", "receipts", "kicks"}


def verbs(sim: PrinterSimulator) -> dict[str, Verb]:
    """The control verbs of ``sim`` ("state" aside): :data:`VERBS`."""

    async def replug(**_: Any) -> dict[str, Any]:
        return {"pty": await sim.replug(), "tcp_port": sim.tcp_port}

    def receipts(**_: Any) -> list[dict[str, Any]]:
        return [{"lines": r.lines, "cut": r.cut} for r in sim.receipts]

    def kicks(**_: Any) -> list[dict[str, Any]]:
        return [asdict(k) for k in sim.kicks]

    table: dict[str, Verb] = {verb: getattr(sim, verb) for verb in SYNC_VERBS}
    table.update(unplug=sim.unplug, replug=replug, receipts=receipts, kicks=kicks)
    return table


async def serve_control(sim: PrinterSimulator, port: int = 0) -> asyncio.Server:
    """The control port on 127.0.0.1 (``port`` 0: any free one)."""
    return await serve(verbs(sim), lambda: sim.state.snapshot(), port)


def _server_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="kassad sim printer",
                                description="A virtual ESC/POS receipt printer with a drawer.")
    p.add_argument("--tcp-port", type=int, default=9100, help="raw TCP port (0: any free one)")
    p.add_argument("--no-tcp", action="store_true", help="no TCP face")
    p.add_argument("--pty", action="store_true", help="also a serial face (a pty)")
    p.add_argument("--control-port", type=int, default=0, help="JSON-lines control port")
    p.add_argument("--receipts-dir", type=Path, help="write each receipt as .txt and .png here")
    p.add_argument("--drawer-open-level", choices=("low", "high"), default="high",
                   help="pin 3 level while the drawer is open")
    p.add_argument("--drawer-pin", type=int, choices=(2, 5), default=2)
    p.add_argument("--width-dots", type=int, default=576, help="576 (80 mm), 512, 384 (58 mm)")
    p.add_argument("--kick-delay", type=float, default=0.0, help="seconds from kick to open")
    p.add_argument("--no-realtime-in-data", action="store_true",
                   help="do not match DLE EOT/ENQ/DC4 inside other commands' data")
    p.add_argument("--silent-when-cover-open", action="store_true")
    p.add_argument("--log-level", default="INFO")
    return p


def main(argv: list[str] | None = None) -> int:
    """Run the simulator until SIGINT/SIGTERM."""
    args = _server_parser().parse_args(argv)
    return run_until_signal(lambda stop: _serve(args, stop), args.log_level)


async def _serve(args: argparse.Namespace, stop: asyncio.Event) -> None:
    state = PrinterState(drawer_open_level=args.drawer_open_level, drawer_pin=args.drawer_pin,
                         silent_when_cover_open=args.silent_when_cover_open)
    async with PrinterSimulator(state, realtime_in_data=not args.no_realtime_in_data,
                                width_dots=args.width_dots, kick_delay=args.kick_delay,
                                receipts_dir=args.receipts_dir) as sim:
        tcp_port = None if args.no_tcp else await sim.serve_tcp(HOST, args.tcp_port)
        pty = sim.open_pty() if args.pty else None
        server = await serve_control(sim, args.control_port)
        await announce_and_serve(server, stop, "printer", tcp_port=tcp_port, pty=pty)


def _value(text: str) -> Any:
    try:
        return json.loads(text)
    except ValueError:
        return text  # a bare word: stick_sensor stuck=open


def control_main(argv: list[str] | None = None) -> int:
    """One-shot control verb: prints the JSON reply; exit 0 if ok, 1 if refused, 2 if down."""
    p = argparse.ArgumentParser(prog="kassad sim printer control",
                                description="Send one control verb to a running simulator.")
    p.add_argument("--control-port", type=int, required=True)
    p.add_argument("--host", default=HOST)
    p.add_argument("verb", choices=sorted(VERBS))
    p.add_argument("args", nargs="*", metavar="key=value", help="JSON values; bare words ok")
    a = p.parse_args(argv)
    kwargs: dict[str, Any] = {}
    for item in a.args:
        key, sep, text = item.partition("=")
        if not sep:
            p.error(f"expected key=value, got {item!r}")
        kwargs[key] = _value(text)
    try:
        reply = asyncio.run(control(a.control_port, a.verb, host=a.host, **kwargs))
    except (OSError, TimeoutError) as e:
        print(f"printer simulator not reachable on {a.host}:{a.control_port}: {e}",
              file=sys.stderr)
        return 2
    print(json.dumps(reply, indent=2))
    return 0 if reply.get("ok") else 1
