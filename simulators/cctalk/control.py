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
import contextlib
import json
import logging
import signal
import sys
from typing import Any

from kassad.simulators.cctalk.bus import CcTalkSimulator

_LOGGER = logging.getLogger(__name__)

HOST = "127.0.0.1"
VERBS = frozenset({
    "insert_coin", "insert_bill", "coin_error", "jam", "reject", "fraud_attempt",
    "bill_event", "set_hopper_coins", "jam_hopper", "hopper_fraud", "power_cycle", "silence",
    "lose_reply", "corrupt_byte", "repeat_reply", "nak_next", "busy_next",
})
_MAX_LINE = 64 * 1024


def handle(sim: CcTalkSimulator, request: dict[str, Any]) -> dict[str, Any]:
    """Run one control request; never raises for a bad request."""
    args = dict(request)
    verb = args.pop("verb", None)
    result: Any = None
    try:
        if verb in VERBS:
            result = getattr(sim, verb)(**args)
        elif verb == "garbage":
            sim.garbage(bytes.fromhex(args.pop("hex")), **args)
        elif verb != "state":
            known = sorted(VERBS | {"garbage", "state"})
            return {"ok": False, "error": f"unknown verb {verb!r}; known: {known}"}
    except (TypeError, ValueError, KeyError) as e:
        return {"ok": False, "error": f"{verb}: {e!r}"}
    reply: dict[str, Any] = {"ok": True, "state": sim.state()}
    if result is not None:
        reply["result"] = result
    return reply


async def serve_control(sim: CcTalkSimulator, port: int = 0) -> asyncio.Server:
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
    logging.basicConfig(level=args.log_level.upper(), stream=sys.stderr,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(_serve(args))
    return 0


async def _serve(args: argparse.Namespace) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    async with CcTalkSimulator(crc=args.crc, echo=not args.no_echo,
                               payout_interval=args.payout_interval) as sim:
        path = sim.open_pty()
        server = await serve_control(sim, args.control_port)
        port = server.sockets[0].getsockname()[1]
        print(json.dumps({"pty": path, "control_port": port}), flush=True)
        _LOGGER.info("ccTalk simulator up: pty %s, control port %s", path, port)
        async with server:
            await stop.wait()
