"""Self-tests of tests/support: the mosquitto fixture broker and the fault-injecting proxy."""

from __future__ import annotations

import asyncio
import os
import shutil
import socket
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import aiomqtt
import pytest

from kassad.simulators import broker as mosquitto_mod
from kassad.simulators.broker import MosquittoBroker, free_port
from tests.support.tcp_proxy import TcpProxy

V5 = aiomqtt.ProtocolVersion.V5
WAIT = 5.0  # upper bound for anything that should happen promptly


def client(port: int, identifier: str, **kwargs: object) -> aiomqtt.Client:
    return aiomqtt.Client("127.0.0.1", port, protocol=V5, identifier=identifier, **kwargs)  # type: ignore[arg-type]


async def next_message(c: aiomqtt.Client, within: float = WAIT) -> aiomqtt.Message:
    async with asyncio.timeout(within):
        async for message in c.messages:
            return message
    raise AssertionError("message iterator ended")


async def roundtrip(port: int, topic: str = "test/roundtrip", payload: bytes = b"hello") -> None:
    """A fresh subscriber and publisher exchange one QoS 1 message on port."""
    async with asyncio.timeout(WAIT):
        async with client(port, f"sub-{topic}") as sub, client(port, f"pub-{topic}") as pub:
            await sub.subscribe(topic, qos=1)
            await pub.publish(topic, payload, qos=1)
            message = await next_message(sub)
    assert message.topic.matches(topic)
    assert message.payload == payload
    assert message.qos == 1


@pytest.fixture
def broker(tmp_path: Path) -> Iterator[MosquittoBroker]:
    with MosquittoBroker(tmp_path / "broker") as b:
        yield b


@pytest.fixture
async def proxy(broker: MosquittoBroker) -> AsyncIterator[TcpProxy]:
    p = TcpProxy(broker.host, broker.port)
    await p.start()
    try:
        yield p
    finally:
        await p.close()


# -- MosquittoBroker ------------------------------------------------------------------------


async def test_broker_qos1_roundtrip(broker: MosquittoBroker) -> None:
    assert broker.running
    assert broker.url == f"mqtt://127.0.0.1:{broker.port}"
    await roundtrip(broker.port)
    # The log is written (as root this needs `user root`, else mosquitto drops to "mosquitto").
    assert "running" in broker.log_tail()


def test_config_contents(tmp_path: Path) -> None:
    b = MosquittoBroker(
        tmp_path,
        port=free_port(),
        max_queued_messages=7,
        persistence=True,
        extra_config="max_inflight_messages 3\nmessage_size_limit 1000",
    )
    conf = b.config_path.read_text()
    assert f"listener {b.port} 127.0.0.1\n" in conf
    assert "allow_anonymous true" in conf
    assert "max_queued_messages 7" in conf
    assert f"persistence_location {tmp_path}/" in conf
    assert conf.endswith("max_inflight_messages 3\nmessage_size_limit 1000\n")
    assert ("user root" in conf) == (os.geteuid() == 0)
    assert not b.running
    b.stop()  # stop before start is a no-op


def test_listens_on_loopback_only(broker: MosquittoBroker) -> None:
    # All of 127/8 is local on Linux: a wildcard listener would answer on 127.0.0.2 too.
    socket.create_connection(("127.0.0.1", broker.port), timeout=WAIT).close()
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection(("127.0.0.2", broker.port), timeout=WAIT).close()


async def test_restart_same_port(broker: MosquittoBroker) -> None:
    port = broker.port
    async with client(port, "old") as old:
        await old.subscribe("x/#", qos=1)
        old_pid = broker.pid
        broker.restart()  # SO_REUSEADDR: rebinding works at once despite the live connection
        assert broker.running
        assert broker.port == port
        assert broker.pid != old_pid
        with pytest.raises(aiomqtt.MqttError):
            await next_message(old)  # the old connection was dropped
    await roundtrip(port, "after/restart")


async def test_kill_then_connect_fails(broker: MosquittoBroker) -> None:
    broker.kill()
    assert not broker.running
    with pytest.raises(aiomqtt.MqttError):
        async with asyncio.timeout(WAIT), client(broker.port, "refused"):
            pass
    broker.stop()  # idempotent, also after kill
    broker.stop()
    broker.start()
    await roundtrip(broker.port, "after/kill")


async def test_persistence_survives_restart(tmp_path: Path) -> None:
    with MosquittoBroker(tmp_path, persistence=True) as b:
        async with asyncio.timeout(WAIT), client(b.port, "pub") as pub:
            await pub.publish("keep/me", b"retained", qos=1, retain=True)
        b.restart()  # SIGTERM saves the in-memory database into workdir
        assert b.persistence_file.is_file()
        async with asyncio.timeout(WAIT), client(b.port, "sub") as sub:
            await sub.subscribe("keep/me", qos=1)
            message = await next_message(sub)
        assert message.payload == b"retained"
        assert message.retain


def test_port_in_use_is_reported(tmp_path: Path) -> None:
    with socket.socket() as squatter:
        squatter.bind(("127.0.0.1", 0))
        squatter.listen()
        b = MosquittoBroker(tmp_path, port=squatter.getsockname()[1])
        with pytest.raises(RuntimeError, match="already in use"):
            b.start()
        assert not b.running


def test_bad_config_reports_log_tail(tmp_path: Path) -> None:
    b = MosquittoBroker(tmp_path, extra_config="no_such_option 1")
    with pytest.raises(RuntimeError, match="no_such_option"):
        b.start()
    assert not b.running
    b.stop()


def test_missing_binary_says_how_to_install(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(shutil, "which", lambda _name: None)
    monkeypatch.setattr(mosquitto_mod, "FALLBACK_BINARY", tmp_path / "nope")
    with pytest.raises(RuntimeError, match="apt-get install mosquitto"):
        MosquittoBroker(tmp_path)


# -- TcpProxy ---------------------------------------------------------------------------------


async def test_proxy_forwards(broker: MosquittoBroker, proxy: TcpProxy) -> None:
    assert proxy.port != broker.port
    await roundtrip(proxy.port, "via/proxy")
    assert proxy.connections_accepted == 2


async def test_proxy_cut_and_restore(broker: MosquittoBroker, proxy: TcpProxy) -> None:
    async with client(proxy.port, "victim") as victim:
        await victim.subscribe("cut/#", qos=1)
        async with asyncio.timeout(WAIT), client(broker.port, "direct") as direct:
            await direct.publish("cut/1", b"before", qos=1)
        assert (await next_message(victim)).payload == b"before"

        proxy.cut()
        with pytest.raises(aiomqtt.MqttError):
            await next_message(victim)

    accepted = proxy.connections_accepted
    with pytest.raises(aiomqtt.MqttError):  # refused, not accepted-then-reset
        async with asyncio.timeout(WAIT), client(proxy.port, "during-cut"):
            pass
    assert proxy.connections_accepted == accepted

    proxy.restore()
    await roundtrip(proxy.port, "after/restore")


async def test_proxy_stall_holds_bytes_until_restore(
    broker: MosquittoBroker, proxy: TcpProxy
) -> None:
    async with client(proxy.port, "stalled") as sub, client(broker.port, "direct") as pub:
        await sub.subscribe("stall/#", qos=1)
        proxy.stall()
        await pub.publish("stall/1", b"held", qos=1)
        # Bounded wait for something that must NOT happen.
        with pytest.raises(TimeoutError):
            await next_message(sub, within=0.5)
        assert proxy.active_connections == 1
        proxy.restore()
        assert (await next_message(sub)).payload == b"held"


async def test_proxy_target_down_resets_client(broker: MosquittoBroker, proxy: TcpProxy) -> None:
    broker.kill()
    # The proxy accepts, fails upstream and resets. Usually paho's CONNECT send fails at once;
    # if the reset lands after the send, aiomqtt only gives up after its `timeout` (it ignores
    # disconnects before CONNACK), hence the short explicit timeout.
    with pytest.raises(aiomqtt.MqttError):
        async with client(proxy.port, "nobody-home", timeout=WAIT):
            pass
    assert proxy.connections_accepted == 1
    assert proxy.active_connections == 0
