"""The shipped example configuration is valid: what the README tells people to copy works."""

import os
from pathlib import Path

from kassad.daemon.config import load_register_config

EXAMPLE = Path(__file__).parents[2] / "systemd" / "kassad.example.toml"


def test_example_configuration_loads(monkeypatch):
    for name in ("KASSAD_CONFIG", "KASSAD_REGISTER", "KASSAD_STORE"):
        monkeypatch.delenv(name, raising=False)
    config = load_register_config(EXAMPLE)
    assert (config.store, config.register_id) == ("S0421", "R07")
    assert config.delivery.consumers == ["store-agg"]
    assert config.money.accepted == ["SEK", "EUR"]


def test_store_example_configuration_loads(monkeypatch):
    from kassad.daemon.store.config import load_store_config

    for name in [n for n in os.environ if n.startswith("KASSAD_STORE")]:
        monkeypatch.delenv(name, raising=False)
    config = load_store_config(EXAMPLE.parent / "store.example.toml")
    assert config.stores == ["S0421"]
    assert config.safes_by_store() == {"S0421": {"SAFE1": "Back office safe"}}
