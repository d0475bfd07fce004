"""The shipped Mosquitto configuration (systemd/mosquitto-store.conf and mosquitto-kassad.acl,
adapted only in paths, ports and the store id) on a real Mosquitto: TLS, a password file,
client certificates, the ACL. What is forbidden is shown dropped by publishing a legitimate
marker after it to a client that may read both: the marker arrives, the forgery never did.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import secrets
import signal
import ssl
import subprocess
import sys
import tomllib
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import aiomqtt
import pytest
from websockets.asyncio.client import connect as ws_connect
from websockets.exceptions import (
    ConnectionClosed,
    ConnectionClosedError,
    InvalidHandshake,
    InvalidMessage,
    InvalidStatus,
)
from websockets.typing import Origin, Subprotocol

from kassad.daemon.admin.layout import read_shipped
from kassad.daemon.client import KassadClient
from kassad.daemon.config import BrokerConfig, TlsConfig
from kassad.daemon.contract.events import utc_timestamp
from kassad.daemon.mqtt.ws_bridge import WsBridge
from kassad.daemon.mqtt.ws_config import WsBridgeConfig, load_ws_bridge_config
from kassad.daemon.store.config import StoreConfig
from kassad.daemon.store.service import StoreService
from kassad.daemon.systemd import Notifier
from kassad.simulators.broker import HOST, MosquittoBroker, free_port
from tests.support.notify import NotifySocket, has
from tests.support.register import (
    FAST_BROKER,
    eventually,
    running_register,
    until,
    write_config,
)


def shipped(name: str) -> str:
    return read_shipped(name).decode("utf-8")

STORE = "S1"  # the ACL's example store S0421 becomes S1; its POS blocks serve R01 and R02


def free_ports(n: int) -> list[int]:
    """``n`` different free ports (free_port() twice in a row may give the same one)."""
    ports: list[int] = []
    while len(ports) < n:
        port = free_port()
        if port not in ports:
            ports.append(port)
    return ports


def openssl(*args: str, cwd: Path) -> None:
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True, timeout=60)


@dataclass
class Pki:
    """A throwaway CA, the broker's certificate and key, client certificates, passwords."""

    folder: Path
    passwords: dict[str, str] = field(default_factory=dict)

    @property
    def ca(self) -> Path:
        return self.folder / "ca.crt"

    def client_cert(self, name: str, cn: str) -> tuple[Path, Path]:
        key, csr, crt = (self.folder / f"{name}.{ext}" for ext in ("key", "csr", "crt"))
        openssl("req", "-new", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
                "-nodes", "-keyout", str(key), "-out", str(csr),
                "-subj", "/CN=" + cn.replace("/", "\\/"), cwd=self.folder)
        openssl("x509", "-req", "-in", str(csr), "-CA", "ca.crt", "-CAkey", "ca.key",
                "-CAcreateserial", "-days", "2", "-out", str(crt), cwd=self.folder)
        return crt, key


def make_pki(folder: Path, users: list[str]) -> Pki:
    folder.mkdir(parents=True)
    openssl("req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
            "-nodes", "-keyout", "ca.key", "-out", "ca.crt", "-days", "2",
            "-subj", "/CN=kassad test CA", cwd=folder)
    (folder / "san.cnf").write_text(f"subjectAltName=IP:{HOST},DNS:localhost\n")
    openssl("req", "-new", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
            "-nodes", "-keyout", "broker.key", "-out", "broker.csr", "-subj", "/CN=localhost",
            cwd=folder)
    openssl("x509", "-req", "-in", "broker.csr", "-CA", "ca.crt", "-CAkey", "ca.key",
            "-CAcreateserial", "-days", "2", "-extfile", "san.cnf", "-out", "broker.crt",
            cwd=folder)
    pki = Pki(folder)
    passwd = folder / "passwd"
    for user in users:
        pki.passwords[user] = secrets.token_urlsafe(16)
        subprocess.run(["mosquitto_passwd", *([] if passwd.exists() else ["-c"]), "-b",
                        str(passwd), user, pki.passwords[user]], check=True,
                       capture_output=True, timeout=60)
    return pki


USERS = [f"{STORE}/R01", f"{STORE}/R02", "S2/R01", "pos-R01", "pos-R02", f"agg-{STORE}"]


def shipped_config(pki: Pki, port: int, cert_port: int) -> str:
    """The shipped drop-in with its paths and ports changed (and loopback only), and the
    client-certificate listener switched on."""
    text = shipped("mosquitto-store.conf")
    text = text.replace("#certificates: ", "")
    text = (text.replace("/etc/mosquitto/kassad/kassad.acl", str(pki.folder / "kassad.acl"))
            .replace("/etc/mosquitto/kassad/", f"{pki.folder}/")
            .replace("listener 8883", f"listener {port} {HOST}")
            .replace("listener 8884", f"listener {cert_port} {HOST}"))
    acl = shipped("mosquitto-kassad.acl").replace("S0421", STORE)
    (pki.folder / "kassad.acl").write_text(acl)
    return text


@dataclass
class SecureBroker:
    broker: MosquittoBroker
    pki: Pki
    cert_port: int

    @property
    def port(self) -> int:
        return self.broker.port

    def tls(self, cert: tuple[Path, Path] | None = None) -> aiomqtt.TLSParameters:
        return aiomqtt.TLSParameters(ca_certs=str(self.pki.ca),
                                     certfile=str(cert[0]) if cert else None,
                                     keyfile=str(cert[1]) if cert else None)

    def client(self, user: str | None, *, password: str | None = None,
               identifier: str | None = None, port: int | None = None,
               cert: tuple[Path, Path] | None = None, **extra: Any) -> aiomqtt.Client:
        if password is None and user is not None and cert is None:
            password = self.pki.passwords[user]
        return aiomqtt.Client(HOST, port or self.port, username=user, password=password,
                              identifier=identifier or f"t-{(user or 'anon').replace('/', '-')}",
                              protocol=aiomqtt.ProtocolVersion.V5, tls_params=self.tls(cert),
                              **{"timeout": 10, **extra})

    def broker_config(self, user: str, **extra: Any) -> BrokerConfig:
        return BrokerConfig(host=HOST, port=self.port, username=user,
                            password=self.pki.passwords[user],  # type: ignore[arg-type]
                            tls=TlsConfig(ca_file=self.pki.ca), **FAST_BROKER, **extra)


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    return make_pki(tmp_path_factory.mktemp("pki") / "pki", USERS)


@pytest.fixture
def secure(tmp_path: Path, pki: Pki) -> Iterator[SecureBroker]:
    port, cert_port = free_ports(2)
    with MosquittoBroker(tmp_path / "broker", port=port,
                         listeners=shipped_config(pki, port, cert_port)) as broker:
        yield SecureBroker(broker, pki, cert_port)


class Inbox:
    """What one client receives, in order."""

    def __init__(self, client: aiomqtt.Client) -> None:
        self.client = client
        self.seen: list[tuple[str, bytes]] = []
        self._news = asyncio.Event()

    async def pump(self) -> None:
        async for message in self.client.messages:
            payload = message.payload if isinstance(message.payload, bytes) else b""
            self.seen.append((message.topic.value, payload))
            self._news.set()

    async def until(self, topic: str, payload: bytes, timeout: float = 10.0,  # noqa: ASYNC109
                    ) -> list[tuple[str, bytes]]:
        """Everything received up to and including (topic, payload)."""
        async with asyncio.timeout(timeout):
            while (topic, payload) not in self.seen:
                self._news.clear()
                await self._news.wait()
        return self.seen[: self.seen.index((topic, payload)) + 1]


@contextlib.asynccontextmanager
async def listening(client: aiomqtt.Client, *filters: str) -> AsyncIterator[Inbox]:
    async with client:
        for topic in filters:
            await client.subscribe(topic, qos=1)
        inbox = Inbox(client)
        task = asyncio.create_task(inbox.pump())
        try:
            yield inbox
        finally:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task


def marker() -> bytes:
    return json.dumps({"marker": secrets.token_hex(8)}).encode()


BASE1, BASE2 = f"kassad/v1/{STORE}/R01", f"kassad/v1/{STORE}/R02"


# -- who gets in ------------------------------------------------------------------------------


def refusal_code(error: BaseException) -> int | None:
    rc = getattr(error, "rc", None)
    return None if rc is None else int(getattr(rc, "value", rc))


async def test_without_credentials_or_with_a_wrong_password_nothing_connects(
        secure: SecureBroker) -> None:
    for client, codes in (
            (secure.client(None), {135}),  # not authorized: no username, no anonymous
            (secure.client("pos-R01", password="wrong"), {134, 135}),  # bad password
            (secure.client("nobody", password="x"), {134, 135}),  # no such user
            # A client certificate alone is no login on the password listener.
            (secure.client(None, cert=secure.pki.client_cert("c1", "pos-R01")), {135}),
    ):
        with pytest.raises(aiomqtt.MqttCodeError) as refused:
            async with client:
                pass
        assert refusal_code(refused.value) in codes
    # Plain MQTT on the TLS port: no CONNACK at all.
    plain = aiomqtt.Client(HOST, secure.port, username="pos-R01",
                           password=secure.pki.passwords["pos-R01"],
                           protocol=aiomqtt.ProtocolVersion.V5, timeout=3)
    with pytest.raises(aiomqtt.MqttError):
        async with plain:
            pass
    # A certificate is required on the certificate listener: without one, no TLS session.
    with pytest.raises(aiomqtt.MqttError):
        async with secure.client("pos-R01", port=secure.cert_port, timeout=3):
            pass


# -- registers ---------------------------------------------------------------------------------


async def test_a_register_cannot_publish_or_read_as_another(secure: SecureBroker) -> None:
    agg = secure.client(f"agg-{STORE}")
    async with (listening(agg, f"kassad/v1/{STORE}/+/evt", f"kassad/v1/{STORE}/+/status",
                          f"kassad/v1/{STORE}/+/state") as store_side,
                listening(secure.client(f"{STORE}/R01"), f"{BASE2}/cmd/#", f"{BASE1}/cmd/#",
                          f"{BASE2}/ack/#") as r01,
                secure.client(f"{STORE}/R02") as r02, secure.client("pos-R02") as pos2):
        forged = json.dumps({"forged": True}).encode()
        r01_client = r01.client
        for kind in ("evt", "status", "state"):
            await r01_client.publish(f"{BASE2}/{kind}", forged, qos=1, retain=kind != "evt")
        await r01_client.publish("kassad/v1/S2/R01/evt", forged, qos=1)  # another store's
        await r02.publish(f"{BASE2}/ack/store-agg", forged, qos=1)  # R02 writes no acks
        await pos2.publish(f"{BASE2}/cmd/drawer.open", forged, qos=1)  # R02's, not R01's
        # R01's own publishes come through; everything before them was dropped.
        own = marker()
        await r01_client.publish(f"{BASE1}/evt", own, qos=1)
        got = await store_side.until(f"{BASE1}/evt", own)
        assert [t for t, p in got if p == forged] == []
        cmd = marker()
        async with secure.client("pos-R01") as pos1:
            await pos1.publish(f"{BASE1}/cmd/state.get", cmd, qos=1)
        got = await r01.until(f"{BASE1}/cmd/state.get", cmd)
        assert [t for t, _ in got] == [f"{BASE1}/cmd/state.get"]


async def test_a_register_by_its_certificate(secure: SecureBroker) -> None:
    """use_identity_as_username: the CN S1/R01 is the username; no password at all."""
    cert = secure.pki.client_cert("r01", f"{STORE}/R01")
    async with (listening(secure.client(f"agg-{STORE}"), f"kassad/v1/{STORE}/+/evt")
                as store_side,
                secure.client(None, port=secure.cert_port, cert=cert,
                              identifier=f"{STORE}-R01") as r01):
        forged = marker()
        await r01.publish(f"{BASE2}/evt", forged, qos=1)
        own = marker()
        await r01.publish(f"{BASE1}/evt", own, qos=1)
        assert await store_side.until(f"{BASE1}/evt", own) == [(f"{BASE1}/evt", own)]
    # A username given beside the certificate is ignored: the CN decides.
    claims = secure.client(f"{STORE}/R02", password="x", port=secure.cert_port, cert=cert)
    async with (listening(secure.client(f"agg-{STORE}"), f"kassad/v1/{STORE}/+/evt")
                as store_side, claims):
        await claims.publish(f"{BASE2}/evt", forged, qos=1)
        own = marker()
        await claims.publish(f"{BASE1}/evt", own, qos=1)
        assert await store_side.until(f"{BASE1}/evt", own) == [(f"{BASE1}/evt", own)]


# -- POS ------------------------------------------------------------------------------------------


async def test_a_pos_cannot_forge_events_or_acks_nor_read_others_replies(
        secure: SecureBroker) -> None:
    async with (listening(secure.client(f"agg-{STORE}"), f"kassad/v1/{STORE}/+/evt",
                          f"kassad/v1/{STORE}/+/status", f"kassad/v1/{STORE}/+/state")
                as store_side,
                listening(secure.client(f"{STORE}/R01"), f"{BASE1}/cmd/#", f"{BASE1}/ack/#",
                          f"{BASE1}/ctl/#") as r01,
                listening(secure.client("pos-R01"), f"kassad/v1/{STORE}/+/res/#",
                          f"kassad/v1/{STORE}/+/evt", f"{BASE1}/cmd/#") as pos1):
        forged = json.dumps({"forged": True}).encode()
        pos = pos1.client
        for topic in (f"{BASE1}/evt", f"{BASE1}/status", f"{BASE1}/state",
                      f"{BASE1}/ack/store-agg", f"{BASE1}/ctl/resync", f"{BASE1}/res/pos-R01",
                      f"{BASE2}/cmd/drawer.open", "kassad/v1/pos-R01/evt",
                      "kassad/v1/pos-R01/x/evt"):
            await pos.publish(topic, forged, qos=1, retain=topic.endswith(("status", "state")))
        # The register's replies: to pos-R02 first (pos-R01 must not see it), then its own.
        async with secure.client(f"{STORE}/R01", identifier="t-S1-R01-replies") as register:
            other, mine, event = marker(), marker(), marker()
            await register.publish(f"{BASE1}/res/pos-R02", other, qos=1)
            await register.publish(f"{BASE1}/res/pos-R01", mine, qos=1)
            await register.publish(f"{BASE1}/evt", event, qos=1)
        assert await pos1.until(f"{BASE1}/res/pos-R01", mine) == [
            (f"{BASE1}/res/pos-R01", mine)]  # no other reply, no event, not its own command
        got = await store_side.until(f"{BASE1}/evt", event)
        assert [p for _, p in got] == [event]
        command = marker()
        await pos.publish(f"{BASE1}/cmd/state.get", command, qos=1)
        assert await r01.until(f"{BASE1}/cmd/state.get", command) == [
            (f"{BASE1}/cmd/state.get", command)]


# -- the aggregator ------------------------------------------------------------------------------


async def test_the_aggregator_reads_its_store_only(secure: SecureBroker) -> None:
    async with (listening(secure.client(f"agg-{STORE}"), "kassad/v1/+/+/evt",
                          "kassad/v1/+/+/cmd/#", "kassad/v1/+/+/res/#") as store_side,
                secure.client("S2/R01") as other_store, secure.client(f"{STORE}/R02") as r02,
                secure.client("pos-R01") as pos):
        theirs = marker()
        await other_store.publish("kassad/v1/S2/R01/evt", theirs, qos=1)
        await pos.publish(f"{BASE1}/cmd/state.get", theirs, qos=1)  # commands are not its
        await r02.publish(f"{BASE2}/res/pos-R02", theirs, qos=1)  # nor others' replies
        ours = marker()
        await r02.publish(f"{BASE2}/res/store-agg-agg-1", ours, qos=1)
        await r02.publish(f"{BASE2}/evt", ours, qos=1)
        got = await store_side.until(f"{BASE2}/evt", ours)
        assert got == [(f"{BASE2}/res/store-agg-agg-1", ours), (f"{BASE2}/evt", ours)]
        # It may not forge a register's events either.
        forged = marker()
        await store_side.client.publish(f"{BASE2}/evt", forged, qos=1)
        await store_side.client.publish(f"kassad/v1/agg-{STORE}/evt", forged, qos=1)
        last = marker()
        await r02.publish(f"{BASE2}/evt", last, qos=1)
        got = await store_side.until(f"{BASE2}/evt", last)
        assert forged not in [p for _, p in got]


# -- the real daemon, client and aggregator through it; no secret in any log ---------------------


async def test_register_pos_and_aggregator_end_to_end_and_no_password_logged(
        secure: SecureBroker, tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    pki = secure.pki
    secret_file = tmp_path / "register.password"
    secret_file.write_text(pki.passwords[f"{STORE}/R01"] + "\n")
    secret_file.chmod(0o600)
    config = write_config(
        tmp_path / "r01.toml", port=secure.port, journal=tmp_path / "j.db", store=STORE,
        register="R01", consumers=["store-agg"], logging={"level": "DEBUG"},
        broker={"username": f"{STORE}/R01", "password_file": str(secret_file),
                "tls": {"ca_file": str(pki.ca)}})
    store_config = StoreConfig(stores=[STORE], broker=secure.broker_config(f"agg-{STORE}"),
                               database=f"sqlite:///{tmp_path / 'store.db'}",
                               reorder_timeout=0.5, http=None,
                               logging={"level": "DEBUG"})  # type: ignore[arg-type]
    store = StoreService(store_config)
    running = asyncio.create_task(store.run())
    try:
        async with (running_register(config) as register,
                    KassadClient(secure.broker_config("pos-R01"), store=STORE, register="R01",
                                 requester="pos-R01", employee="e17") as pos):
            opened = await pos.send("session.open",
                                    {"starting_float": {"amount": 50_000, "currency": "SEK"}})
            assert opened.data["session"]["starting_float"] == {"SEK": 50_000}

            async def stored() -> bool:
                sessions = await store.storage.sessions([STORE], None, None)
                return len(sessions) == 1
            await eventually(stored, 20, "the aggregator stored the session")
            # kassad send as the POS user, over TLS, with the password in a file.
            pos_secret = tmp_path / "pos.password"
            pos_secret.write_text(pki.passwords["pos-R01"] + "\n")
            argv = [sys.executable, "-m", "kassad.daemon", "send", "--host", HOST, "--port",
                    str(secure.port), "--store", STORE, "--register", "R01", "--username",
                    "pos-R01", "--password-file", str(pos_secret), "--ca-file", str(pki.ca),
                    "--ttl", "10", "session.adjust", "direction=add", "amount=10.00SEK"]
            for extra, code in (([], 1), (["--employee", "e17"], 0)):
                proc = await asyncio.create_subprocess_exec(
                    *argv, *extra, stdout=asyncio.subprocess.PIPE,
                    stderr=asyncio.subprocess.STDOUT)
                out, _ = await proc.communicate()
                assert proc.returncode == code, out.decode()
                assert (b"not_permitted" in out) is (code == 1)
                assert pki.passwords["pos-R01"].encode() not in out
            # The aggregator's ack reached the register through the ACL.
            outbox = register._outbox
            assert outbox is not None
            await until(lambda: outbox.acked["store-agg"] >= outbox.head, 20,
                        "the register has the aggregator's ack")
    finally:
        store.stop()
        async with asyncio.timeout(15):
            await running
    logged = caplog.text + secure.broker.log_tail(10_000)
    assert "connected to" in caplog.text  # DEBUG logging was on and captured
    for user, password in pki.passwords.items():
        assert password not in logged, f"the password of {user} is in a log"


# -- WebSockets: kassad ws-bridge in front of the TLS listener ----------------------------------
# Debian 12's Mosquitto has no websockets listener (mosquitto-websockets.conf needs one built
# with them); the bridge, run from the shipped ws-bridge.example.toml, takes wss:// and passes
# the bytes to the TLS listener above, so the broker's password file and ACL decide.

ORIGIN = "https://pos.s1.example"  # the web page the test's bridge accepts


@dataclass
class Bridge:
    port: int
    log: Path

    @property
    def url(self) -> str:
        return f"wss://{HOST}:{self.port}/mqtt"

    def log_text(self) -> str:
        return self.log.read_text(encoding="utf-8", errors="replace")


def bridge_config(pki: Pki, port: int, broker_port: int) -> str:
    """The shipped example with its paths and ports changed, an Origin list, at DEBUG."""
    text = shipped("ws-bridge.example.toml")
    for old, new in (
            ('host = "0.0.0.0"', f'host = "{HOST}"'), ("port = 8443", f"port = {port}"),
            ("port = 8883", f"port = {broker_port}"),
            ("/etc/kassad/ws-bridge.crt", str(pki.folder / "broker.crt")),
            ("/etc/kassad/ws-bridge.key", str(pki.folder / "broker.key")),
            ("/etc/kassad/ca.crt", str(pki.ca)),
            ('server_name = "broker.s0421.example"', 'server_name = "localhost"'),
            ('# origins = ["https://pos.s0421.example"]', f'origins = ["{ORIGIN}"]'),
            ('level = "INFO"', 'level = "DEBUG"')):
        assert old in text, old
        text = text.replace(old, new)
    return text


@pytest.fixture
def bridge(secure: SecureBroker, tmp_path: Path) -> Iterator[Bridge]:
    """``kassad ws-bridge`` as systemd runs it: its own process, ready when it says READY=1."""
    (port,) = free_ports(1)
    config = tmp_path / "ws-bridge.toml"
    config.write_text(bridge_config(secure.pki, port, secure.port))
    log = tmp_path / "ws-bridge.log"
    notify = NotifySocket(tmp_path / "notify.sock")
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "kassad.daemon", "ws-bridge", "--config", str(config)],
            stdout=out, stderr=subprocess.STDOUT, env={**os.environ, **notify.env})
    try:
        try:
            notify.wait_for(has("READY"), timeout=20, what="READY=1")
        except TimeoutError:
            raise AssertionError(f"the bridge did not start:\n{log.read_text()}") from None
        yield Bridge(port, log)
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            code = proc.wait(15)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
            notify.close()
    assert code == 0, log.read_text()


def ws_client(secure: SecureBroker, bridge: Bridge, user: str | None, *,
              origin: str = ORIGIN, path: str = "/mqtt", **extra: Any) -> aiomqtt.Client:
    """An MQTT 5 client over wss:// (paho offers the subprotocol "mqtt"), trusting the CA."""
    extra.setdefault("identifier", f"ws-{(user or 'anon').replace('/', '-')}")
    return secure.client(user, port=bridge.port, transport="websockets", websocket_path=path,
                         websocket_headers={"Origin": origin}, **extra)


def test_the_shipped_bridge_connects_to_the_tls_listener() -> None:
    """Its example goes to the TLS listener of mosquitto-store.conf, over loopback."""
    example = tomllib.loads(shipped("ws-bridge.example.toml"))
    assert example["broker"]["host"] == "127.0.0.1"
    assert f"listener {example['broker']['port']}" in shipped("mosquitto-store.conf")
    assert example["broker"]["tls"]["ca_file"] and example["listen"]["tls"]["cert_file"]


async def test_a_browser_pos_sends_a_command_to_a_register_through_the_bridge(
        secure: SecureBroker, bridge: Bridge, tmp_path: Path) -> None:
    pki = secure.pki
    secret_file = tmp_path / "register.password"
    secret_file.write_text(pki.passwords[f"{STORE}/R01"] + "\n")
    config = write_config(
        tmp_path / "r01.toml", port=secure.port, journal=tmp_path / "j.db", store=STORE,
        register="R01", consumers=["store-agg"],
        broker={"username": f"{STORE}/R01", "password_file": str(secret_file),
                "tls": {"ca_file": str(pki.ca)}})
    async with (running_register(config),
                listening(ws_client(secure, bridge, "pos-R01"), f"{BASE1}/res/pos-R01") as pos):
        cmd_id = secrets.token_hex(8)
        now = datetime.now(UTC)
        command = {"v": 1, "cmd_id": cmd_id, "issued_at": utc_timestamp(now),
                   "expires_at": utc_timestamp(now + timedelta(seconds=30)),
                   "requester": "pos-R01", "employee": "e17",
                   "params": {"starting_float": {"amount": 50_000, "currency": "SEK"}}}
        await pos.client.publish(f"{BASE1}/cmd/session.open", json.dumps(command), qos=1)

        def result() -> dict[str, Any] | None:
            for _, payload in pos.seen:
                reply = json.loads(payload)
                if reply.get("cmd_id") == cmd_id and reply.get("phase") == "result":
                    return dict(reply)
            return None
        await until(lambda: result() is not None, 20, "the register's result")
        reply = result()
        assert reply is not None and reply["status"] == "ok", reply
        assert reply["data"]["session"]["starting_float"] == {"SEK": 50_000}
    # The bridge logged the connection and its end (DEBUG on), and no password, no payload.
    await until(lambda: "disconnected" in bridge.log_text(), 10, "the disconnect logged")
    logged = bridge.log_text()
    assert "ws 127.0.0.1:" in logged and "connected (origin https://pos.s1.example)" in logged
    for user, password in pki.passwords.items():
        assert password not in logged, f"the password of {user} is in the bridge's log"
    assert cmd_id not in logged and "starting_float" not in logged


async def test_over_websockets_a_pos_cannot_forge_events_nor_read_others_replies(
        secure: SecureBroker, bridge: Bridge) -> None:
    async with (listening(secure.client(f"{STORE}/R01"), f"{BASE1}/cmd/#", f"{BASE1}/ack/#",
                          f"{BASE1}/ctl/#") as r01,
                listening(secure.client(f"agg-{STORE}"), f"kassad/v1/{STORE}/+/evt",
                          f"kassad/v1/{STORE}/+/status", f"kassad/v1/{STORE}/+/state")
                as store_side,
                listening(ws_client(secure, bridge, "pos-R01"), f"kassad/v1/{STORE}/+/res/#",
                          f"kassad/v1/{STORE}/+/evt", f"{BASE1}/cmd/#") as pos):
        forged = json.dumps({"forged": True}).encode()
        for topic in (f"{BASE1}/evt", f"{BASE1}/status", f"{BASE1}/state",
                      f"{BASE1}/ack/store-agg", f"{BASE1}/ctl/resync", f"{BASE1}/res/pos-R01",
                      f"{BASE2}/cmd/drawer.open", "kassad/v1/pos-R01/evt"):
            await pos.client.publish(topic, forged, qos=1,
                                     retain=topic.endswith(("status", "state")))
        other, mine, event = marker(), marker(), marker()
        await r01.client.publish(f"{BASE1}/res/pos-R02", other, qos=1)
        await r01.client.publish(f"{BASE1}/res/pos-R01", mine, qos=1)
        await r01.client.publish(f"{BASE1}/evt", event, qos=1)
        # Its own reply only: not pos-R02's, no event, not its own command, no forgery.
        assert await pos.until(f"{BASE1}/res/pos-R01", mine) == [
            (f"{BASE1}/res/pos-R01", mine)]
        assert [p for _, p in await store_side.until(f"{BASE1}/evt", event)] == [event]
        command = marker()
        await pos.client.publish(f"{BASE1}/cmd/state.get", command, qos=1)
        assert await r01.until(f"{BASE1}/cmd/state.get", command) == [
            (f"{BASE1}/cmd/state.get", command)]


async def test_over_websockets_no_or_a_wrong_password_is_refused_at_connect(
        secure: SecureBroker, bridge: Bridge) -> None:
    for client, codes in (
            (ws_client(secure, bridge, None), {135}),
            (ws_client(secure, bridge, "pos-R01", password="wrong"), {134, 135}),
            (ws_client(secure, bridge, "nobody", password="x"), {134, 135})):
        with pytest.raises(aiomqtt.MqttCodeError) as refused:
            async with client:
                pass
        assert refusal_code(refused.value) in codes
    # The broker's refusal closed the bridge's side too; the same POS with its password is in.
    async with ws_client(secure, bridge, "pos-R01"):
        pass
    await until(lambda: bridge.log_text().count("disconnected") >= 4, 10, "four disconnects")
    assert "the broker closed the connection" in bridge.log_text()


async def test_the_websocket_handshake_refuses_a_wrong_subprotocol_path_or_origin(
        secure: SecureBroker, bridge: Bridge) -> None:
    trusted = ssl.create_default_context(cafile=str(secure.pki.ca))
    mqtt = [Subprotocol("mqtt")]
    for url, subprotocols, origin, status in (
            (bridge.url, [Subprotocol("chat")], ORIGIN, 400),
            (bridge.url, None, ORIGIN, 400),  # no subprotocol at all
            (bridge.url.replace("/mqtt", "/"), mqtt, ORIGIN, 404),
            (bridge.url.replace("/mqtt", "/mqtt/x"), mqtt, ORIGIN, 404),
            (bridge.url, mqtt, "https://evil.example", 403)):
        with pytest.raises(InvalidStatus) as refused:
            async with ws_connect(url, ssl=trusted, subprotocols=subprotocols,
                                  origin=Origin(origin), open_timeout=10):
                pass
        assert refused.value.response.status_code == status, (url, subprotocols, origin)
    # Through paho too: a wrong path is no MQTT connection.
    with pytest.raises(aiomqtt.MqttError, match="WebSocket handshake error"):
        async with ws_client(secure, bridge, "pos-R01", path="/other"):
            pass
    # wss only: the broker's CA must be trusted, and plain ws:// gets no handshake.
    with pytest.raises(ssl.SSLCertVerificationError):
        async with ws_connect(bridge.url, ssl=ssl.create_default_context(),
                              subprotocols=mqtt, origin=Origin(ORIGIN), open_timeout=10):
            pass
    with pytest.raises((InvalidMessage, OSError, InvalidHandshake)):
        async with ws_connect(bridge.url.replace("wss:", "ws:"), subprotocols=mqtt,
                              origin=Origin(ORIGIN), open_timeout=10):
            pass
    # Accepted: subprotocol mqtt, and a client that is not a browser may send no Origin.
    # Binary frames only (MQTT 5 §6.0): a text frame closes with 1003.
    async with ws_connect(bridge.url, ssl=trusted, subprotocols=mqtt, open_timeout=10) as ws:
        assert ws.subprotocol == "mqtt"
        await ws.send("CONNECT")
        with pytest.raises(ConnectionClosedError) as closed:
            await ws.recv()
        assert closed.value.rcvd is not None and closed.value.rcvd.code == 1003
    # A message over max_message_bytes closes with 1009 before anything reaches the broker.
    limit = load_ws_bridge_config(bridge.log.parent / "ws-bridge.toml").max_message_bytes
    async with ws_connect(bridge.url, ssl=trusted, subprotocols=mqtt, origin=Origin(ORIGIN),
                          open_timeout=10, max_size=None) as ws:
        with contextlib.suppress(ConnectionClosedError):
            await ws.send(b"\x00" * (limit + 1))
        with pytest.raises(ConnectionClosedError) as closed:
            await ws.recv()
        assert closed.value.rcvd is not None and closed.value.rcvd.code == 1009


async def test_the_bridge_in_process_limits_connections_closes_on_stop_and_without_broker(
        secure: SecureBroker) -> None:
    """max_connections (503), stop() closing a live connection (1001) and its broker socket,
    and a broker that does not answer (1013), with WsBridge in this test's loop."""
    pki = secure.pki
    trusted = ssl.create_default_context(cafile=str(pki.ca))
    mqtt = [Subprotocol("mqtt")]

    def config(broker_port: int, **listen: Any) -> WsBridgeConfig:
        return load_ws_bridge_config(
            None, listen={"host": HOST, "port": 0, **listen,
                          "tls": {"cert_file": str(pki.folder / "broker.crt"),
                                  "key_file": str(pki.folder / "broker.key")}},
            broker={"host": HOST, "port": broker_port,
                    "tls": {"ca_file": str(pki.ca), "server_name": "localhost"}})

    @contextlib.asynccontextmanager
    async def running(bridge: WsBridge) -> AsyncIterator[str]:
        task = asyncio.create_task(bridge.run())
        try:
            async with asyncio.timeout(10):
                await bridge.ready.wait()
            yield f"wss://{HOST}:{bridge.port}/mqtt"
        finally:
            bridge.stop()
            async with asyncio.timeout(15):
                await task

    bridge = WsBridge(config(secure.port, max_connections=1), notifier=Notifier(None))
    async with running(bridge) as url, ws_connect(url, ssl=trusted, subprotocols=mqtt) as first:
        await until(lambda: bridge.active == 1, 10, "the first connection bridged")
        with pytest.raises(InvalidStatus) as refused:
            async with ws_connect(url, ssl=trusted, subprotocols=mqtt, open_timeout=10):
                pass
        assert refused.value.response.status_code == 503
        bridge.stop()
        with pytest.raises(ConnectionClosed) as closed:
            await first.recv()
        assert closed.value.rcvd is not None and closed.value.rcvd.code == 1001
    assert bridge.active == 0

    (nobody,) = free_ports(1)  # the broker's ports are bound: never given out
    bridge = WsBridge(config(nobody), notifier=Notifier(None))
    async with running(bridge) as url, ws_connect(url, ssl=trusted, subprotocols=mqtt) as ws:
        with pytest.raises(ConnectionClosedError) as closed:
            await ws.recv()
        assert closed.value.rcvd is not None and closed.value.rcvd.code == 1013
