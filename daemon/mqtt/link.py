"""One MQTT 5 connection kept alive forever (aiomqtt 2.5).

A fresh ``aiomqtt.Client`` per attempt: paho keeps failed QoS 1 publishes in RAM and sends them
after a reconnect of the *same* object, out of order (mqtt-research.md §4.3); with a new object
the journal's outbox is the only source of resends. Subscriptions are renewed on every connect.
Reconnects back off exponentially with jitter, from ``reconnect_min`` up to ``reconnect_max``.
"""

from __future__ import annotations

import asyncio
import logging
import random
import socket
import ssl
from collections.abc import Awaitable, Callable, Coroutine, Iterable, Sequence
from typing import Any

import aiomqtt
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from ..config import BrokerConfig

_LOGGER = logging.getLogger(__name__)


class NotConnected(ConnectionError):
    """No broker connection right now; what must not be lost is in the journal."""


class PublishFailed(ConnectionError):
    """The broker did not confirm a publish in time (it may still arrive: consumers dedupe)."""


MessageHandler = Callable[[aiomqtt.Message], Awaitable[None]]
ConnectedHook = Callable[["MqttLink"], Coroutine[Any, Any, None]]
WillFactory = Callable[[], Awaitable[aiomqtt.Will | None]]


def publish_properties(
    *, correlation: bytes | None = None, response_topic: str | None = None,
    expiry_s: int | None = None,
) -> Properties | None:
    if correlation is None and response_topic is None and expiry_s is None:
        return None
    props = Properties(PacketTypes.PUBLISH)
    if correlation is not None:
        props.CorrelationData = correlation
    if response_topic is not None:
        props.ResponseTopic = response_topic
    if expiry_s is not None:
        props.MessageExpiryInterval = max(1, expiry_s)
    return props


def will_properties(delay_s: int) -> Properties | None:
    if delay_s <= 0:
        return None
    props = Properties(PacketTypes.WILLMESSAGE)
    props.WillDelayInterval = delay_s
    return props


class MqttLink:
    """Connect, subscribe, hand every message to ``on_message``, reconnect, forever.

    ``on_connected`` runs as a task for the life of each connection (the outbox relay, the
    birth message); it is cancelled when the connection drops.
    """

    def __init__(
        self,
        broker: BrokerConfig,
        *,
        client_id: str,
        subscriptions: Sequence[str],
        on_message: MessageHandler,
        on_connected: ConnectedHook | None = None,
        will: WillFactory | None = None,
        session_expiry: int | None = None,
        clean_start: bool = False,
        name: str = "mqtt",
    ) -> None:
        self._broker = broker
        self._client_id = client_id
        self._subscriptions = list(subscriptions)
        self._on_message = on_message
        self._on_connected = on_connected
        self._will = will
        self._session_expiry = broker.session_expiry if session_expiry is None else session_expiry
        self._clean_start = clean_start
        self._name = name
        self._client: aiomqtt.Client | None = None
        self.connected = asyncio.Event()
        self.connections = 0

    @property
    def is_connected(self) -> bool:
        return self._client is not None and self.connected.is_set()

    def _make_client(self, will: aiomqtt.Will | None) -> aiomqtt.Client:
        b = self._broker
        connect_props = Properties(PacketTypes.CONNECT)
        # Without a Session Expiry Interval an MQTT 5 session dies with the connection, and
        # commands queued for us during a blip are lost (aiomqtt #277).
        connect_props.SessionExpiryInterval = self._session_expiry
        tls: aiomqtt.TLSParameters | None = None
        if b.tls is not None:
            tls = aiomqtt.TLSParameters(
                ca_certs=str(b.tls.ca_file),
                certfile=str(b.tls.cert_file) if b.tls.cert_file else None,
                keyfile=str(b.tls.key_file) if b.tls.key_file else None,
                cert_reqs=ssl.CERT_REQUIRED,
            )
        client = aiomqtt.Client(
            b.host, b.port,
            identifier=self._client_id,
            protocol=aiomqtt.ProtocolVersion.V5,
            username=b.username,
            password=b.password_value(),
            will=will,
            clean_start=self._clean_start,
            properties=connect_props,
            keepalive=b.keepalive,
            timeout=b.connect_timeout,
            tls_params=tls,
            # Without TCP_NODELAY a reply written right after another small packet waits for
            # the peer's delayed ACK (Nagle): ~40 ms added to every command, measured.
            socket_options=[(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)],
        )
        client.pending_calls_threshold = 1000  # our own window bounds in-flight publishes
        return client

    async def run(self) -> None:
        """Keep the connection up until cancelled."""
        delay = self._broker.reconnect_min
        while True:
            will = await self._will() if self._will else None
            try:
                client = self._make_client(will)
            except OSError as e:  # the password file cannot be read: say so, try again later
                _LOGGER.error("%s: cannot connect to %s:%s: %s", self._name, self._broker.host,
                              self._broker.port, e)
                await asyncio.sleep(delay * (0.5 + random.random()))  # noqa: S311 - jitter only
                delay = min(delay * 2, self._broker.reconnect_max)
                continue
            try:
                async with client:
                    self.connections += 1
                    delay = self._broker.reconnect_min
                    for topic in self._subscriptions:
                        await client.subscribe(topic, qos=1)
                    self._client = client
                    self.connected.set()
                    _LOGGER.info("%s: connected to %s:%s as %s", self._name, self._broker.host,
                                 self._broker.port, self._client_id)
                    async with asyncio.TaskGroup() as group:
                        if self._on_connected is not None:
                            group.create_task(self._on_connected(self), name=f"{self._name}-up")
                        async for message in client.messages:
                            await self._on_message(message)
            except* aiomqtt.MqttError as group_error:
                _LOGGER.warning("%s: broker %s:%s unreachable or lost: %s", self._name,
                                self._broker.host, self._broker.port,
                                "; ".join(str(e) for e in group_error.exceptions))
            finally:
                self._client = None
                self.connected.clear()
            await asyncio.sleep(delay * (0.5 + random.random()))  # noqa: S311 - jitter only
            delay = min(delay * 2, self._broker.reconnect_max)

    async def publish(
        self, topic: str, payload: str | bytes, *, qos: int = 1, retain: bool = False,
        properties: Properties | None = None, timeout: float = 10.0,  # noqa: ASYNC109
    ) -> None:
        client = self._client
        if client is None:
            raise NotConnected(f"{self._name}: not connected to the broker")
        try:
            await client.publish(topic, payload, qos=qos, retain=retain, properties=properties,
                                 timeout=timeout)
        except aiomqtt.MqttError as e:
            raise PublishFailed(f"{self._name}: publish to {topic} failed: {e}") from e


async def cancel_tasks(tasks: Iterable[asyncio.Task[Any]], retry: float = 0.5) -> None:
    """Cancel tasks and wait until they have ended, cancelling again those still running.

    Python 3.11's ``asyncio.wait_for`` (aiomqtt's connect, subscribe and publish use it)
    swallows a cancellation that arrives as its inner future completes, so a single cancel of
    a task talking to the broker can be lost and a TaskGroup would wait for it forever.
    """
    pending = {task for task in tasks if not task.done()}
    while pending:
        for task in pending:
            task.cancel()
        _, pending = await asyncio.wait(pending, timeout=retry)


_SOCKET_WATCHERS = frozenset({"add_reader", "add_writer", "remove_reader", "remove_writer"})


def quiet_socket_races(loop: asyncio.AbstractEventLoop) -> None:
    """One log line, not a traceback, for a known race of aiomqtt 2.x: it asks the loop to
    watch paho's socket through ``call_soon_threadsafe``, and when the connection drops first
    (a reset by the peer) that call finds the socket closed. The link has seen the drop and
    reconnects; nothing is lost. Every other unhandled exception goes to the handler that was
    there before."""
    previous = loop.get_exception_handler()

    def handler(loop: asyncio.AbstractEventLoop, context: dict[str, Any]) -> None:
        error = context.get("exception")
        callback = getattr(context.get("handle"), "_callback", None)
        name = getattr(callback, "__name__", "")
        if isinstance(error, OSError | ValueError) and name in _SOCKET_WATCHERS:
            _LOGGER.warning("an MQTT socket closed before the event loop could watch it "
                            "(%s: %s); the connection is renewed", name, error)
            return
        if previous is not None:
            previous(loop, context)
        else:
            loop.default_exception_handler(context)

    loop.set_exception_handler(handler)


def message_properties(message: aiomqtt.Message) -> tuple[str | None, bytes | None]:
    """(Response Topic, Correlation Data) of a v5 message; absent ones are None."""
    props: Any = message.properties
    if props is None:
        return None, None
    response = getattr(props, "ResponseTopic", None)
    correlation = getattr(props, "CorrelationData", None)
    return (str(response) if response else None,
            bytes(correlation) if correlation is not None else None)
