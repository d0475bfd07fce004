"""What a SIGHUP reload applies and what it leaves for a restart."""

from __future__ import annotations

from typing import Any

import pytest
from pydantic import BaseModel

from kassad.daemon.config import RELOADABLE, RegisterConfig
from kassad.daemon.reload import changed_keys, plan_reload
from kassad.daemon.store.config import RELOADABLE as STORE_RELOADABLE
from kassad.daemon.store.config import StoreConfig
from kassad.daemon.systemd import watchdog_interval


def register(**sections: Any) -> RegisterConfig:
    values: dict[str, Any] = {"store": "S1", "register_id": "R1",
                              "devices": {"printer": {"transport": {"kind": "tcp",
                                                                    "host": "10.0.0.5"}},
                                          "drawer": {}}}
    for name, section in sections.items():
        values[name] = {**values.get(name, {}), **section}
    return RegisterConfig(**values)


def _field_paths(model: type[BaseModel], prefix: str = "") -> set[str]:
    paths = set()
    for name, field in model.model_fields.items():
        paths.add(prefix + name)
        for arg in (field.annotation, *getattr(field.annotation, "__args__", ())):
            if isinstance(arg, type) and issubclass(arg, BaseModel):
                paths |= _field_paths(arg, f"{prefix}{name}.")
    return paths


@pytest.mark.parametrize(("model", "keys"), [(RegisterConfig, RELOADABLE),
                                             (StoreConfig, STORE_RELOADABLE)])
def test_every_reloadable_key_names_a_real_setting(model: type[BaseModel],
                                                   keys: tuple[str, ...]) -> None:
    assert set(keys) <= _field_paths(model)


def test_reloadable_changes_apply_and_the_rest_wait_for_a_restart() -> None:
    old = register()
    new = register(logging={"level": "DEBUG"}, money={"max_amount": 5000},
                   broker={"host": "10.0.0.9"},
                   devices={"printer": {"transport": {"kind": "tcp", "host": "10.0.0.6"},
                                        "receipt_expiry": 120.0},
                            "drawer": {"left_open_after": 20.0, "pulse_on_ms": 50}})
    result = plan_reload(old, new, RELOADABLE)
    assert result.applied == ("money.max_amount", "devices.printer.receipt_expiry",
                              "devices.drawer.pulse_on_ms", "devices.drawer.left_open_after",
                              "logging.level")
    assert result.needs_restart == ("broker.host", "devices.printer.transport.host")
    running = result.config
    assert running.logging.level == "DEBUG" and running.money.max_amount == 5000
    assert running.devices.drawer is not None and running.devices.drawer.left_open_after == 20.0
    # What waits for a restart keeps its running value.
    assert running.broker.host == old.broker.host
    assert running.devices.printer == old.devices.printer.model_copy(  # type: ignore[union-attr]
        update={"receipt_expiry": 120.0})
    assert "needs a restart: broker.host" in result.summary()


def test_a_device_added_or_removed_needs_a_restart() -> None:
    old = register()
    new = RegisterConfig(store="S1", register_id="R1")
    assert changed_keys(old, new) == ["devices.printer", "devices.drawer"]
    assert plan_reload(old, new, RELOADABLE).config == old


def test_no_change_is_no_change() -> None:
    result = plan_reload(register(), register(), RELOADABLE)
    assert (result.applied, result.needs_restart, result.summary()) == ((), (), "no changes")


@pytest.mark.parametrize(("env", "interval"), [
    ({"WATCHDOG_USEC": "30000000"}, 15.0),
    ({"WATCHDOG_USEC": "0"}, None),
    ({"WATCHDOG_USEC": "soon"}, None),
    ({}, None),
    ({"WATCHDOG_USEC": "30000000", "WATCHDOG_PID": "1"}, None),  # meant for another process
])
def test_watchdog_interval_is_half_of_watchdog_usec(env: dict[str, str],
                                                    interval: float | None) -> None:
    assert watchdog_interval(env) == interval
