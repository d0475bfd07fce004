"""The standalone ccTalk bus simulator and its JSON-lines control port.

    python -m kassad.simulators.cctalk --pty [--crc] [--no-echo] [--control-port 9111]

On start it prints one JSON line, ``{"pty": "/dev/pts/7", "control_port": 9111}``, then runs
until SIGINT/SIGTERM. Control: TCP on 127.0.0.1, one JSON object per line each way::

    → {"verb": "insert_coin", "coin": "SE500A"}     ← {"ok": true, "result": true, "state": {…}}
    → {"verb": "garbage", "hex": "01c8"}            ← {"ok": true, "state": {…}}
    → {"verb": "warp"}                              ← {"ok": false, "error": "unknown verb …"}

Verbs: the simulator's methods in :data:`VERBS` with their keyword arguments, "garbage" with
``hex`` (and ``before_reply``), and "state".
"""

from __future__ import annotations

import argparse
import asyncio
from typing import Any

from kassad.simulators.cctalk.bus import CcTalkSimulator
from kassad.simulators.control import Verb, announce_and_serve, run_until_signal, serve

VERBS = frozenset({
    "insert_coin", "insert_bill", "coin_error", "jam", "reject", "fraud_attempt",
    "bill_event", "set_hopper_coins", "jam_hopper", "hopper_fraud", "power_cycle", "silence",
    "lose_reply", "corrupt_byte", "repeat_reply", "nak_next", "busy_next",
})


def verbs(sim: CcTalkSimulator) -> dict[str, Verb]:
    """The control verbs of ``sim`` ("state" aside): :data:`VERBS` and "garbage"."""

    def garbage(**args: Any) -> None:
        sim.garbage(bytes.fromhex(args.pop("hex")), **args)

    table: dict[str, Verb] = {verb: getattr(sim, verb) for verb in VERBS}
    table["garbage"] = garbage
    return table


async def serve_control(sim: CcTalkSimulator, port: int = 0) -> asyncio.Server:
    """The control port on 127.0.0.1 (``port`` 0: any free one)."""
    return await serve(verbs(sim), sim.state, port, errors=(TypeError, ValueError, KeyError),
                       describe=repr)


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m kassad.simulators.cctalk",
                                description="A ccTalk bus: coin acceptor 2, hopper 3, "
                                            "bill validator 40, on a pty.")
    p.add_argument("--pty", action="store_true", help="serve on a pty (the only face; default)")
    p.add_argument("--crc", action="store_true", help="CRC-16 frames instead of checksums")
    p.add_argument("--no-echo", action="store_true", help="do not echo the host's bytes")
    p.add_argument("--control-port", type=int, default=0, help="JSON-lines control port")
    p.add_argument("--payout-interval", type=float, default=0.1, help="seconds per coin paid")
    p.add_argument("--log-level", default="INFO")
    return p


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    return run_until_signal(lambda stop: _serve(args, stop), args.log_level)


async def _serve(args: argparse.Namespace, stop: asyncio.Event) -> None:
    async with CcTalkSimulator(crc=args.crc, echo=not args.no_echo,
                               payout_interval=args.payout_interval) as sim:
        path = sim.open_pty()
        server = await serve_control(sim, args.control_port)
        await announce_and_serve(server, stop, "ccTalk", pty=path)
