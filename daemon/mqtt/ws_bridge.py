"""``kassad ws-bridge``: MQTT over WebSockets for browser POS applications, in front of a
Mosquitto built without websockets (Debian 12's 2.0.11).

Each WebSocket connection (``wss://…/mqtt``, subprotocol ``mqtt``: MQTT 5 §6) gets its own
TCP connection to the broker's MQTT listener, and the bytes go through unchanged both ways.
The bridge never parses or answers MQTT: the broker authenticates every CONNECT with its
password file and applies its ACL, so the rules are exactly those of the TCP listener.

Bounds per connection: a client's message is at most ``max_message_bytes``; at most
:data:`MAX_QUEUE` of them wait unread, and the next is read only once the broker's socket
has taken the last (``drain``); the broker's bytes are read in :data:`CHUNK`-byte pieces, the
next only when the WebSocket has sent the last. Either side closing closes the other. The
log has addresses, sizes and close codes, never bytes: a CONNECT holds a password.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import ssl
from dataclasses import dataclass

from websockets.asyncio.server import ServerConnection, serve
from websockets.exceptions import ConnectionClosed
from websockets.frames import CloseCode
from websockets.http11 import Request, Response
from websockets.typing import Origin, Subprotocol

from ..config import ConfigError
from ..systemd import Notifier, run_watchdog, watchdog_interval
from .ws_config import SUBPROTOCOL, BrokerTls, ListenTls, WsBridgeConfig, refusal

_LOGGER = logging.getLogger("kassad.ws_bridge")
# The library's DEBUG lines show each frame's first bytes, a CONNECT's password among them:
# its logger stays at INFO whatever the service's level (handshakes, refusals, closes).
_LIBRARY_LOGGER = logging.getLogger("kassad.ws_bridge.websockets")
_LIBRARY_LOGGER.setLevel(logging.INFO)

#: Bytes read from the broker at once; its reader stops reading at twice this.
CHUNK = 65_536
#: Client messages received but not yet written to the broker (the library's high-water mark).
MAX_QUEUE = 4
#: Bytes waiting to be sent on either socket before the sender waits.
WRITE_LIMIT = 65_536
#: How long closing the broker's socket (TLS close_notify) may take.
CLOSE_TIMEOUT = 5.0


def server_context(tls: ListenTls | None) -> ssl.SSLContext | None:
    """The listener's TLS (wss://), or None; ConfigError when the files do not load."""
    if tls is None:
        return None
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    try:
        context.load_cert_chain(tls.cert_file, tls.key_file)
    except (OSError, ssl.SSLError) as e:
        raise ConfigError(f"listen.tls: cannot load {tls.cert_file} with {tls.key_file}: "
                          f"{getattr(e, 'strerror', None) or e}") from None
    return context


def client_context(tls: BrokerTls | None) -> ssl.SSLContext | None:
    """TLS to the broker, checking its certificate and name, or None (loopback only)."""
    if tls is None:
        return None
    try:
        context = ssl.create_default_context(cafile=str(tls.ca_file))
    except (OSError, ssl.SSLError) as e:
        raise ConfigError(f"broker.tls.ca_file: cannot load {tls.ca_file}: "
                          f"{getattr(e, 'strerror', None) or e}") from None
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    return context


@dataclass
class _Traffic:
    up: int = 0  # bytes from the client to the broker
    down: int = 0


def _address(address: object) -> str:
    if isinstance(address, tuple) and len(address) >= 2:
        host = str(address[0])
        return f"[{host}]:{address[1]}" if ":" in host else f"{host}:{address[1]}"
    return str(address)


class WsBridge:
    """The listener and its connections; ``run()`` until ``stop()``."""

    def __init__(self, config: WsBridgeConfig, notifier: Notifier | None = None) -> None:
        self.config = config
        self.notifier = notifier or Notifier.from_env()
        self._server_ssl = server_context(config.listen.tls)
        self._client_ssl = client_context(config.broker.tls)
        self._stopping = asyncio.Event()
        self.ready = asyncio.Event()
        self.port: int | None = None  # the bound port, once ready (listen.port may be 0)
        self.active = 0

    def stop(self) -> None:
        self._stopping.set()

    def _where(self) -> str:
        listen, broker = self.config.listen, self.config.broker
        scheme = "wss" if self._server_ssl else "ws"
        return (f"{scheme}://{_address((listen.host, self.port))}{listen.path} → broker "
                f"{_address((broker.host, broker.port))}"
                f"{' (TLS)' if self._client_ssl else ''}")

    def _status(self) -> None:
        self.notifier.status(f"{self.active} connection(s); {self._where()}")

    async def run(self) -> None:
        listen = self.config.listen
        # A missing Origin is accepted with any list: only browsers send one, and a program
        # that is not a browser could send any Origin it likes.
        origins = (None if listen.origins is None
                   else [*(Origin(o) for o in listen.origins), None])
        async with serve(
                self._handle, listen.host, listen.port, ssl=self._server_ssl,
                subprotocols=[Subprotocol(SUBPROTOCOL)], origins=origins,
                process_request=self._check_request,
                # No permessage-deflate: compressing a password beside data an attacker
                # chooses leaks it by the length (CRIME), and MQTT payloads are small.
                compression=None, max_size=self.config.max_message_bytes,
                max_queue=MAX_QUEUE, write_limit=WRITE_LIMIT, server_header=None,
                logger=_LIBRARY_LOGGER) as server:
            self.port = int(server.sockets[0].getsockname()[1])
            _LOGGER.info("listening: %s", self._where())
            self.notifier.ready(f"0 connection(s); {self._where()}")
            self.ready.set()
            watchdog: asyncio.Task[None] | None = None
            interval = watchdog_interval()
            if interval is not None:
                watchdog = asyncio.create_task(
                    run_watchdog(self.notifier, interval, self._health), name="watchdog")
            try:
                await self._stopping.wait()
            finally:
                if watchdog is not None:
                    watchdog.cancel()
                    with contextlib.suppress(asyncio.CancelledError):
                        await watchdog
                self.notifier.stopping(f"stopping: closing {self.active} connection(s)")
                _LOGGER.info("stopping: closing %d connection(s)", self.active)
            # Leaving the block closes every WebSocket (1001 going away) and waits for the
            # handlers, which close the broker's sockets.

    async def _health(self) -> str | None:
        return None  # answering at all means the loop runs

    def _check_request(self, connection: ServerConnection, request: Request) -> Response | None:
        why = refusal(self.config.listen, request.path, self.active)
        if why is None:
            return None
        status, text = why
        _LOGGER.info("ws %s refused: %d %s", _address(connection.remote_address), status,
                     text.strip())
        return connection.respond(status, text)

    async def _handle(self, ws: ServerConnection) -> None:
        self.active += 1
        self._status()
        try:
            await self._bridge(ws)
        finally:
            self.active -= 1
            self._status()

    async def _bridge(self, ws: ServerConnection) -> None:
        peer = _address(ws.remote_address)
        broker = self.config.broker
        server_name = None
        if self._client_ssl is not None:
            assert broker.tls is not None
            server_name = broker.tls.server_name or broker.host
        loop = asyncio.get_running_loop()
        started = loop.time()
        try:
            async with asyncio.timeout(broker.connect_timeout):
                reader, writer = await asyncio.open_connection(
                    broker.host, broker.port, ssl=self._client_ssl, server_hostname=server_name,
                    limit=CHUNK)
        except (OSError, TimeoutError) as e:  # ssl.SSLError is an OSError
            _LOGGER.warning("ws %s: broker %s unreachable (%s): closing", peer,
                            _address((broker.host, broker.port)), e or "timed out")
            await ws.close(CloseCode.TRY_AGAIN_LATER, "broker unreachable")
            return
        writer.transport.set_write_buffer_limits(high=WRITE_LIMIT)
        origin = ws.request.headers.get("Origin") if ws.request is not None else None
        via = _address(writer.get_extra_info("sockname"))
        # "via" is the address the broker's log shows for this client.
        _LOGGER.info("ws %s connected (origin %s): broker connection from %s", peer,
                     origin or "none", via)
        traffic = _Traffic()
        up = asyncio.create_task(self._client_to_broker(ws, writer, traffic))
        down = asyncio.create_task(self._broker_to_client(reader, ws, traffic))
        try:
            done, _ = await asyncio.wait({up, down}, return_when=asyncio.FIRST_COMPLETED)
            first = done.pop()
            why = first.result() if not first.cancelled() and first.exception() is None \
                else f"error: {first.exception()!r}"
        finally:
            for task in (up, down):
                task.cancel()
            await asyncio.gather(up, down, return_exceptions=True)
            writer.close()
            with contextlib.suppress(OSError, TimeoutError):
                async with asyncio.timeout(CLOSE_TIMEOUT):
                    await writer.wait_closed()
            await ws.close()
        _LOGGER.info("ws %s disconnected after %.1f s (%d bytes up, %d down; via %s): %s",
                     peer, loop.time() - started, traffic.up, traffic.down, via, why)

    @staticmethod
    async def _client_to_broker(ws: ServerConnection, writer: asyncio.StreamWriter,
                                traffic: _Traffic) -> str:
        try:
            while True:
                message = await ws.recv()
                if isinstance(message, str):
                    # MQTT 5 §6.0: MQTT travels in binary frames; anything else closes.
                    await ws.close(CloseCode.UNSUPPORTED_DATA, "MQTT needs binary frames")
                    return "a text frame (closed 1003)"
                writer.write(message)
                traffic.up += len(message)
                await writer.drain()  # the next message waits until the broker took this one
        except ConnectionClosed as e:
            return f"client side closed ({e})"
        except OSError as e:
            return f"broker connection lost ({e.strerror or e!r})"

    @staticmethod
    async def _broker_to_client(reader: asyncio.StreamReader, ws: ServerConnection,
                                traffic: _Traffic) -> str:
        try:
            while chunk := await reader.read(CHUNK):
                # Packets need not align with frames (MQTT 5 §6.0): each chunk is one message.
                await ws.send(chunk)
                traffic.down += len(chunk)
        except ConnectionClosed as e:
            return f"client side closed ({e})"
        except OSError as e:
            return f"broker connection lost ({e.strerror or e!r})"
        return "the broker closed the connection"
