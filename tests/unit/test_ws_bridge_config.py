"""kassad ws-bridge's configuration and its handshake checks (pure)."""

from __future__ import annotations

import os
import re
from pathlib import Path

import pytest

from kassad.daemon.admin.layout import read_shipped
from kassad.daemon.config import ConfigError
from kassad.daemon.mqtt.ws_bridge import client_context, server_context
from kassad.daemon.mqtt.ws_config import (
    BROKER_MESSAGE_SIZE_LIMIT,
    BrokerTls,
    ListenConfig,
    ListenTls,
    WsBridgeConfig,
    is_loopback,
    load_ws_bridge_config,
    refusal,
)

EXAMPLE = Path(__file__).parents[2] / "systemd" / "ws-bridge.example.toml"


@pytest.fixture(autouse=True)
def _no_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in [n for n in os.environ if n.startswith("KASSAD_WS_BRIDGE") or
                 n == "KASSAD_CONFIG"]:
        monkeypatch.delenv(name, raising=False)


def test_the_example_loads_and_is_the_safe_setup() -> None:
    config = load_ws_bridge_config(EXAMPLE)
    assert (config.listen.host, config.listen.port, config.listen.path) == ("0.0.0.0", 8443,
                                                                           "/mqtt")
    assert config.listen.tls is not None  # wss://
    assert (config.broker.host, config.broker.port) == ("127.0.0.1", 8883)  # the TLS listener
    assert config.broker.tls is not None and config.broker.tls.server_name


def test_the_message_limit_is_above_the_shipped_brokers() -> None:
    conf = read_shipped("mosquitto-store.conf").decode()
    limit = int(re.search(r"^message_size_limit (\d+)$", conf, re.MULTILINE)[1])  # type: ignore[index]
    assert limit == BROKER_MESSAGE_SIZE_LIMIT
    assert WsBridgeConfig().max_message_bytes > limit


@pytest.mark.parametrize(("host", "loopback"), [
    ("127.0.0.1", True), ("127.1.2.3", True), ("::1", True), ("localhost", True),
    ("0.0.0.0", False), ("::", False), ("10.0.0.5", False), ("broker.example", False)])
def test_is_loopback(host: str, loopback: bool) -> None:
    assert is_loopback(host) is loopback


def test_no_password_in_clear_off_loopback() -> None:
    tls = {"cert_file": "/x.crt", "key_file": "/x.key"}
    with pytest.raises(ConfigError, match=r"listen.host '0.0.0.0' is not loopback"):
        load_ws_bridge_config(None, listen={"host": "0.0.0.0"})
    with pytest.raises(ConfigError, match=r"broker.host '10.0.0.5' is not loopback"):
        load_ws_bridge_config(None, broker={"host": "10.0.0.5"})
    load_ws_bridge_config(None, listen={"host": "0.0.0.0", "tls": tls},
                          broker={"host": "10.0.0.5", "tls": {"ca_file": "/ca.crt"}})
    load_ws_bridge_config(None, broker={"host": "127.0.0.1", "port": 1884})  # loopback: plain


def test_unknown_keys_and_bad_paths_are_refused() -> None:
    with pytest.raises(ConfigError, match=r"listen\.orgins: unknown key"):
        load_ws_bridge_config(None, listen={"orgins": ["https://pos"]})
    with pytest.raises(ConfigError, match=r"listen\.path"):
        load_ws_bridge_config(None, listen={"path": "mqtt"})


def test_the_environment_overrides_the_file(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("KASSAD_WS_BRIDGE_LISTEN__PORT", "9443")
    assert load_ws_bridge_config(EXAMPLE).listen.port == 9443


def test_refusal_by_path_and_by_count() -> None:
    listen = ListenConfig(path="/mqtt", max_connections=2)
    assert refusal(listen, "/mqtt", 0) is None
    assert refusal(listen, "/mqtt?client=pos", 1) is None
    assert refusal(listen, "/", 0) == (404, "Not Found\n")
    assert refusal(listen, "/mqtt/", 0) == (404, "Not Found\n")
    assert refusal(listen, "/mqtt", 2) == (503, "Too many connections\n")


def test_certificate_files_that_do_not_load_are_configuration_errors(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"listen.tls: cannot load .*nothing.crt"):
        server_context(ListenTls(cert_file=tmp_path / "nothing.crt",
                                 key_file=tmp_path / "nothing.key"))
    with pytest.raises(ConfigError, match=r"broker.tls.ca_file: cannot load .*ca.crt"):
        client_context(BrokerTls(ca_file=tmp_path / "ca.crt"))
    assert server_context(None) is None and client_context(None) is None
