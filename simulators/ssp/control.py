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
import json
import logging
import signal
import sys
from typing import Any

from kassad.simulators.ssp.device import SspSimulator
from kassad.simulators.ssp.unit import EUR, SEK, ValidatorUnit

_LOGGER = logging.getLogger(__name__)

HOST = "127.0.0.1"
VERBS = frozenset({
    "insert_note", "reject", "jam", "stacker_full", "fraud_attempt", "cashbox_removed",
    "cashbox_replaced", "self_disable", "power_cycle", "lose_reply", "corrupt_byte",
    "slow_reply", "silence",
})
CURRENCIES = {"SEK": SEK, "EUR": EUR}
_MAX_LINE = 64 * 1024


def handle(sim: SspSimulator, request: dict[str, Any]) -> dict[str, Any]:
    """Run one control request against ``sim``; never raises for a bad request."""
    args = dict(request)
    verb = args.pop("verb", None)
    result: Any = None
    try:
        if verb in VERBS:
            result = getattr(sim, verb)(**args)
        elif verb != "state":
            return {"ok": False, "error": f"unknown verb {verb!r}; known: {sorted(VERBS)}"}
    except (TypeError, ValueError) as e:
        return {"ok": False, "error": f"{verb}: {e}"}
    return {"ok": True, "result": result, "state": sim.snapshot()}


async def serve_control(sim: SspSimulator, port: int = 0) -> asyncio.Server:
    """The control port on 127.0.0.1 (``port`` 0: any free one)."""

    async def session(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while line := await reader.readline():
                try:
                    request = json.loads(line)
                    if not isinstance(request, dict):
                        raise ValueError("a request is a JSON object")
                except ValueError as e:
                    reply: dict[str, Any] = {"ok": False, "error": f"bad request: {e}"}
                else:
                    reply = handle(sim, request)
                writer.write(json.dumps(reply).encode() + b"\n")
                await writer.drain()
        except (ConnectionError, asyncio.LimitOverrunError, asyncio.IncompleteReadError):
            pass
        finally:
            writer.close()

    return await asyncio.start_server(session, HOST, port, limit=_MAX_LINE)


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
    logging.basicConfig(level=args.log_level.upper(), stream=sys.stderr,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    return asyncio.run(_serve(args))


async def _serve(args: argparse.Namespace) -> int:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    unit = ValidatorUnit(CURRENCIES[args.currency], serial=args.serial,
                         max_protocol=args.max_protocol)
    async with SspSimulator(unit, address=args.address) as sim:
        path = sim.open_pty()
        server = await serve_control(sim, args.control_port)
        port = server.sockets[0].getsockname()[1]
        print(json.dumps({"pty": path, "control_port": port}), flush=True)
        _LOGGER.info("ssp simulator up: pty %s, control port %s", path, port)
        async with server:
            await stop.wait()
    return 0
