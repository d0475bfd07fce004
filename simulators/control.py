"""What the simulators' control ports share: a JSON-lines server, its client, the main loop.

Each standalone simulator (printer, ccTalk bus, SSP validator) runs until SIGINT/SIGTERM, prints
one JSON line with its faces and ``control_port`` on start, and takes control verbs on TCP
127.0.0.1, one JSON object per line each way::

    → {"verb": "paper_out"}                     ← {"ok": true, "state": {…}}
    → {"verb": "insert_coin", "coin": "SE500A"} ← {"ok": true, "result": true, "state": {…}}
    → {"verb": "warp"}                          ← {"ok": false, "error": "unknown verb 'warp'…"}
    → not json                                  ← {"ok": false, "error": "bad request: …"}

A simulator's control module gives :func:`serve` its verbs table (verb → callable taking the
request's other keys as keyword arguments; its return value, awaited if awaitable, is the
reply's ``result``) and a ``state()`` function for the reply's ``state``; "state" is a verb of
every table. :func:`control` is the client; :func:`run_until_signal` and
:func:`announce_and_serve` are the skeleton of each simulator's ``main``.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import json
import logging
import signal
import sys
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

HOST = "127.0.0.1"
#: A control verb: keyword arguments from the request; returns the result (or an awaitable).
Verb = Callable[..., Any]
_MAX_LINE = 64 * 1024
_LOGGER = logging.getLogger(__name__)
_LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


async def answer(request: dict[str, Any], verbs: Mapping[str, Verb], state: Callable[[], Any], *,
                 errors: tuple[type[Exception], ...] = (TypeError, ValueError),
                 describe: Callable[[Exception], str] = str,
                 always_result: bool = False) -> dict[str, Any]:
    """The reply to one request; never raises for a bad request.

    ``errors`` raised by a verb are refused as ``"<verb>: describe(e)"``. The ``result`` key is
    left out when None, unless ``always_result`` (then it comes before ``state``).
    """
    args = dict(request)
    verb = args.pop("verb", None)
    result: Any = None
    try:
        if verb in verbs:
            result = verbs[verb](**args)
            if inspect.isawaitable(result):
                result = await result
        elif verb != "state":
            known = sorted({*verbs, "state"})
            return {"ok": False, "error": f"unknown verb {verb!r}; known: {known}"}
    except errors as e:
        return {"ok": False, "error": f"{verb}: {describe(e)}"}
    if always_result:
        return {"ok": True, "result": result, "state": state()}
    reply: dict[str, Any] = {"ok": True, "state": state()}
    if result is not None:
        reply["result"] = result
    return reply


async def serve(verbs: Mapping[str, Verb], state: Callable[[], Any], port: int = 0, *,
                host: str = HOST, errors: tuple[type[Exception], ...] = (TypeError, ValueError),
                describe: Callable[[Exception], str] = str,
                always_result: bool = False) -> asyncio.Server:
    """A control server on ``host`` (``port`` 0: any free one) answering as :func:`answer`."""

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
                    reply = await answer(request, verbs, state, errors=errors,
                                         describe=describe, always_result=always_result)
                writer.write(json.dumps(reply).encode() + b"\n")
                await writer.drain()
        except (ConnectionError, asyncio.LimitOverrunError, asyncio.IncompleteReadError):
            pass
        finally:
            writer.close()

    return await asyncio.start_server(session, host, port, limit=_MAX_LINE)


async def control(port: int, verb: str, *, host: str = HOST, timeout: float = 5.0,  # noqa: ASYNC109
                  **args: Any) -> dict[str, Any]:
    """Send one verb to a running simulator's control port and return its JSON reply."""
    async with asyncio.timeout(timeout):
        reader, writer = await asyncio.open_connection(host, port)
        try:
            writer.write(json.dumps({"verb": verb, **args}).encode() + b"\n")
            await writer.drain()
            reply: dict[str, Any] = json.loads(await reader.readline())
            return reply
        finally:
            writer.close()
            with contextlib.suppress(ConnectionError):
                await writer.wait_closed()


async def announce_and_serve(server: asyncio.Server, stop: asyncio.Event, name: str,
                             **faces: Any) -> None:
    """Print the start-up line (``faces``, then the server's ``control_port``), log that
    the ``name`` simulator is up, and serve until ``stop`` is set."""
    port = server.sockets[0].getsockname()[1]
    faces["control_port"] = port
    print(json.dumps(faces), flush=True)
    _LOGGER.info("%s simulator up: %s", name, ", ".join(f"{k} {v}" for k, v in faces.items()))
    async with server:
        await stop.wait()


def run_until_signal(serve: Callable[[asyncio.Event], Awaitable[object]], log_level: str) -> int:
    """Log to stderr at ``log_level`` and run ``serve(stop)``; ``stop`` is set on SIGINT/SIGTERM.

    ``serve`` returns once ``stop`` is set; so does this, with exit status 0.
    """
    logging.basicConfig(level=log_level.upper(), stream=sys.stderr, format=_LOG_FORMAT)

    async def run() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        await serve(stop)

    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(run())
    return 0
