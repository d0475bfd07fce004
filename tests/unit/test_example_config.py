"""The shipped example configuration is valid: what the README tells people to copy works."""

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
