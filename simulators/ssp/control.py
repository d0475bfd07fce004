"""The standalone SSP note validator simulator and its JSON-lines control port.

    python -m kassad.simulators.ssp --pty [--currency EUR] [--max-protocol 6] [--control-port N]

On start it prints one JSON line, ``{"pty": "/dev/pts/7", "control_port": 40123}``, then runs
until SIGINT/SIGTERM. Open the pty at 9600 8N2 (a pty ignores the speed).

Control protocol: TCP on 127.0.0.1, one JSON object per line each way::

    -> {"verb": "insert_note", "channel": 3}   <- {"ok": true, "result": true, "state": {…}}
    -> {"verb": "jam", "kind": "unsafe"}       <- {"ok": true, "result": null, "state": {…}}
    -> {"verb": "warp"}                        <- {"ok": false, "error": "unknown verb …"}

Verbs: the simulator's methods in VERBS (keyword arguments as JSON) and "state".
"""

from __future__ import annotations

import argparse
import asyncio

from kassad.simulators.control import Verb, announce_and_serve, run_until_signal, serve
from kassad.simulators.ssp.device import SspSimulator
from kassad.simulators.ssp.unit import EUR, SEK, ValidatorUnit

VERBS = frozenset({
    "insert_note", "reject", "jam", "stacker_full", "fraud_attempt", "cashbox_removed",
    "cashbox_replaced", "self_disable", "power_cycle", "lose_reply", "corrupt_byte",
    "slow_reply", "silence",
})
CURRENCIES = {"SEK": SEK, "EUR": EUR}


def verbs(sim: SspSimulator) -> dict[str, Verb]:
    """The control verbs of ``sim`` ("state" aside): :data:`VERBS`."""
    return {verb: getattr(sim, verb) for verb in VERBS}


async def serve_control(sim: SspSimulator, port: int = 0) -> asyncio.Server:
    """The control port on 127.0.0.1 (``port`` 0: any free one)."""
    return await serve(verbs(sim), sim.snapshot, port, always_result=True)


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m kassad.simulators.ssp",
                                description="A virtual ITL SSP note validator on a pty.")
    p.add_argument("--pty", action="store_true", required=True, help="serve on a new pty")
    p.add_argument("--currency", choices=sorted(CURRENCIES), default="SEK")
    p.add_argument("--max-protocol", type=int, default=8, help="highest host protocol accepted")
    p.add_argument("--serial", type=int, default=12345678)
    p.add_argument("--address", type=int, default=0)
    p.add_argument("--control-port", type=int, default=0, help="JSON-lines control port")
    p.add_argument("--log-level", default="INFO")
    return p


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    return run_until_signal(lambda stop: _serve(args, stop), args.log_level)


async def _serve(args: argparse.Namespace, stop: asyncio.Event) -> None:
    unit = ValidatorUnit(CURRENCIES[args.currency], serial=args.serial,
                         max_protocol=args.max_protocol)
    async with SspSimulator(unit, address=args.address) as sim:
        path = sim.open_pty()
        server = await serve_control(sim, args.control_port)
        await announce_and_serve(server, stop, "ssp", pty=path)
