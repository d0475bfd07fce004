"""The store aggregator's configuration (``kassad store --config FILE``), like the register's:
one TOML file, environment overrides with the ``KASSAD_STORE_`` prefix."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict

from ..config import (
    BrokerConfig,
    ConfigError,
    Id,
    LoggingConfig,
    Seconds,
    _format_errors,
    config_path,
    read_toml,
)


class HttpConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    host: str = Field("127.0.0.1", description="address the web page and the API listen on")
    port: int = Field(8080, ge=0, le=65535, description="0: any free port (tests)")


class SafeConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    id: Id = Field(description="the safe's id: registers name it in cash.transfer_out/in")
    name: str = Field("", description="as the store view shows it")


class StoreConfig(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix="KASSAD_STORE_", env_nested_delimiter="__", extra="forbid", frozen=True)

    stores: Annotated[list[Id], Field(min_length=1)] = Field(
        description="the stores whose registers this aggregator serves")
    consumer: Id = Field("store-agg", description="acks go to ack/{consumer}: the registers "
                         "list it in delivery.consumers")
    aggregator_id: Id = Field("agg-1", description="this instance, for its status topic")
    broker: BrokerConfig = BrokerConfig(session_expiry=86_400)
    database: str = Field("sqlite:///var/lib/kassad/store.db",
                          description="sqlite:///path or postgresql://user@host/db")
    shared_group: Id | None = Field(
        None, description="several instances share the load with $share/{group}/… (needs "
                          "PostgreSQL)")
    reorder_timeout: Seconds = Field(2.0, description="a gap open this long: ctl/resync")
    batch: int = Field(200, ge=1, le=10_000)
    batch_window: Seconds = Field(0.05, description="wait this long to fill a batch")
    safes: dict[Id, list[SafeConfig]] = Field(
        default_factory=dict, description="store → its safes (issue 9): [[safes.S0421]] "
                                          "id = \"SAFE1\", name = \"Back office\"")
    managers: dict[Id, list[Id]] = Field(
        default_factory=dict, description="store → employee ids with the manager role, who "
                                          "may reconcile by hand; a store not listed takes the "
                                          "role the request claims")
    http: HttpConfig | None = Field(HttpConfig(), description="the store view; null: none")
    logging: LoggingConfig = LoggingConfig()

    @model_validator(mode="after")
    def _safes_of_served_stores(self) -> StoreConfig:
        for store, listed in self.safes.items():
            if store not in self.stores:
                raise ValueError(f"safes: store {store!r} is not in stores")
            ids = [safe.id for safe in listed]
            if len(set(ids)) != len(ids):
                raise ValueError(f"safes.{store}: a safe id is listed twice")
        for store in self.managers:
            if store not in self.stores:
                raise ValueError(f"managers: store {store!r} is not in stores")
        return self

    def safes_by_store(self) -> dict[str, dict[str, str]]:
        return {store: {safe.id: safe.name or safe.id for safe in self.safes.get(store, [])}
                for store in self.stores}

    @classmethod
    def settings_customise_sources(
        cls, settings_cls: type[BaseSettings], init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource, dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        return env_settings, init_settings


#: What SIGHUP changes in a running aggregator; anything else waits for a restart.
RELOADABLE: tuple[str, ...] = ("logging.level", "reorder_timeout", "batch", "batch_window")


def load_store_config(explicit: str | Path | None = None, **overrides: Any) -> StoreConfig:
    path = config_path(explicit)
    values = {**(read_toml(path) if path else {}), **overrides}
    try:
        return StoreConfig(**values)
    except ValidationError as e:
        raise ConfigError(_format_errors(path, e)) from None
