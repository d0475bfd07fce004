"""``kassad ws-bridge``'s configuration (one TOML file, ``KASSAD_WS_BRIDGE_`` environment
overrides), and the pure checks the bridge makes of a WebSocket handshake.

The bridge carries MQTT between browsers and the store's Mosquitto, password and all, so the
model refuses the configurations that would put that password on the network in clear.
"""

from __future__ import annotations

import ipaddress
from pathlib import Path
from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict

from ..config import ConfigError, LoggingConfig, Seconds, _format_errors, config_path, read_toml

#: MQTT over WebSockets: the subprotocol a client must offer (MQTT 5 §6.0, 3.1.1 §6).
SUBPROTOCOL = "mqtt"
#: The broker's message_size_limit in systemd/mosquitto-store.conf.
BROKER_MESSAGE_SIZE_LIMIT = 262_144
Port = Annotated[int, Field(ge=0, le=65535)]


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class ListenTls(_Section):
    cert_file: Path = Field(description="the certificate browsers see (with its chain)")
    key_file: Path


class ListenConfig(_Section):
    host: str = Field("127.0.0.1", description="address to listen on; anything but loopback "
                                               "needs [listen.tls]")
    port: Port = Field(8443, description="0: any free port (tests)")
    path: str = Field("/mqtt", pattern=r"^/[\x21-\x7e]*$",
                      description="the only request path accepted (404 otherwise)")
    origins: list[str] | None = Field(
        None, description="Origin header values accepted (exactly, e.g. "
                          "\"https://pos.s0421.example\"); none listed: any. A client that "
                          "sends no Origin (not a browser) is accepted either way")
    max_connections: int = Field(64, ge=1, le=10_000,
                                 description="more at once are refused (503)")
    tls: ListenTls | None = None


class BrokerTls(_Section):
    ca_file: Path = Field(description="the CA that signed the broker's certificate")
    server_name: str | None = Field(
        None, description="the name in the broker's certificate, when it is not host "
                          "(the bridge connects to 127.0.0.1, the certificate names the "
                          "broker as the registers know it)")


class UpstreamConfig(_Section):
    host: str = "127.0.0.1"
    port: Port = 8883
    tls: BrokerTls | None = None
    connect_timeout: Seconds = 10.0


class WsBridgeConfig(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix="KASSAD_WS_BRIDGE_", env_nested_delimiter="__", extra="forbid",
        frozen=True)

    listen: ListenConfig = ListenConfig()
    broker: UpstreamConfig = UpstreamConfig()
    max_message_bytes: int = Field(
        BROKER_MESSAGE_SIZE_LIMIT + 65_536, ge=1024, le=256 * 1024 * 1024,
        description="a larger WebSocket message from a client closes its connection (1009). "
                    "Keep it above the broker's message_size_limit, so that the broker's own "
                    "refusal (a PUBACK with an error) comes first; the margin is for the "
                    "topic and properties")
    logging: LoggingConfig = LoggingConfig()

    @model_validator(mode="after")
    def _no_password_in_clear(self) -> WsBridgeConfig:
        # Every CONNECT carries a password: only loopback may see it unencrypted.
        if self.listen.tls is None and not is_loopback(self.listen.host):
            raise ValueError(f"listen.host {self.listen.host!r} is not loopback: give "
                             "[listen.tls] (wss://), browsers send their password on it")
        if self.broker.tls is None and not is_loopback(self.broker.host):
            raise ValueError(f"broker.host {self.broker.host!r} is not loopback: give "
                             "[broker.tls], the bridge forwards passwords to it")
        return self

    @classmethod
    def settings_customise_sources(
        cls, settings_cls: type[BaseSettings], init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource, dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        return env_settings, init_settings


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False  # a name other than localhost may resolve anywhere


def load_ws_bridge_config(explicit: str | Path | None = None,
                          **overrides: Any) -> WsBridgeConfig:
    path = config_path(explicit)
    values = {**(read_toml(path) if path else {}), **overrides}
    try:
        return WsBridgeConfig(**values)
    except ValidationError as e:
        raise ConfigError(_format_errors(path, e)) from None


def refusal(listen: ListenConfig, path: str, active: int) -> tuple[int, str] | None:
    """Why a handshake request is refused before the WebSocket checks (those of the origin
    and the subprotocol are the websockets library's): (HTTP status, text), or None."""
    # The query string is not part of the path a client names; the library keeps it.
    if path.partition("?")[0] != listen.path:
        return 404, "Not Found\n"
    if active >= listen.max_connections:
        return 503, "Too many connections\n"
    return None
