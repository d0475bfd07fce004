"""The register configuration: TOML file, environment overrides, and errors a person can act on."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from kassad.daemon.config import CONFIG_ENV, ConfigError, load_register_config

GOOD = """\
store = "S1"
register = "R1"

[broker]
host = "broker.local"
port = 8883

[journal]
path = "{journal}"

[delivery]
consumers = ["agg", "backup"]

[money]
base_currency = "EUR"
accepted = ["EUR", "SEK"]
"""

MINIMAL = 'store = "S1"\nregister = "R1"\n'


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch):
    """No KASSAD_* variable of the machine running the tests leaks into them."""
    for name in list(os.environ):
        if name.upper().startswith("KASSAD_") or name.upper() in {"REGISTER", "STORE"}:
            monkeypatch.delenv(name)


def _write(tmp_path: Path, text: str, name: str = "kassad.toml") -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


@pytest.fixture
def good_file(tmp_path) -> Path:
    return _write(tmp_path, GOOD.format(journal=tmp_path / "journal.db"))


def _error(path: Path) -> str:
    with pytest.raises(ConfigError) as info:
        load_register_config(path)
    message = str(info.value)
    assert str(path) in message, message
    return message


# -- a valid file -----------------------------------------------------------------------------


def test_valid_file_loads(good_file, tmp_path):
    config = load_register_config(good_file)
    assert config.store == "S1"
    assert config.register_id == "R1"
    assert config.broker.host == "broker.local"
    assert config.broker.port == 8883
    assert config.journal.path == tmp_path / "journal.db"
    assert config.delivery.consumers == ["agg", "backup"]
    assert config.money.base_currency == "EUR"
    assert config.money.accepted == ["EUR", "SEK"]


def test_valid_file_accepts_str_path(good_file):
    assert load_register_config(str(good_file)).register_id == "R1"


def test_minimal_file_gets_defaults(tmp_path):
    config = load_register_config(_write(tmp_path, MINIMAL))
    assert config.broker.port == 1883
    assert config.money.base_currency == "SEK"
    assert config.money.accepted == ["SEK"]
    assert config.delivery.consumers == []


# -- the environment --------------------------------------------------------------------------


def test_env_overrides_file_broker_port(good_file, monkeypatch):
    monkeypatch.setenv("KASSAD_BROKER__PORT", "1999")
    config = load_register_config(good_file)
    assert config.broker.port == 1999
    # Only the overridden key changes; the rest of the section still comes from the file.
    assert config.broker.host == "broker.local"
    assert config.store == "S1"


def test_env_override_is_validated_too(good_file, monkeypatch):
    monkeypatch.setenv("KASSAD_BROKER__PORT", "70000")
    message = _error(good_file)
    assert "broker.port" in message


def test_env_store_override(good_file, monkeypatch):
    monkeypatch.setenv("KASSAD_STORE", "S9")
    assert load_register_config(good_file).store == "S9"


def test_env_register_override_uses_the_prefix(good_file, monkeypatch):
    """``KASSAD_STORE`` overrides ``store``; ``KASSAD_REGISTER`` must override ``register`` the
    same way (the module says: prefix ``KASSAD_``)."""
    monkeypatch.setenv("KASSAD_REGISTER", "R9")
    assert load_register_config(good_file).register_id == "R9"


def test_unprefixed_register_env_is_ignored(good_file, monkeypatch):
    """An ordinary ``REGISTER`` variable of the environment must not change the register id."""
    monkeypatch.setenv("REGISTER", "EVIL")
    assert load_register_config(good_file).register_id == "R1"


def test_kassad_config_env_picks_the_file(good_file, monkeypatch):
    monkeypatch.setenv(CONFIG_ENV, str(good_file))
    config = load_register_config()
    assert config.broker.port == 8883
    assert config.register_id == "R1"


def test_explicit_path_wins_over_kassad_config(good_file, tmp_path, monkeypatch):
    other = _write(tmp_path, MINIMAL.replace("R1", "R2"), "other.toml")
    monkeypatch.setenv(CONFIG_ENV, str(other))
    assert load_register_config(good_file).register_id == "R1"


def test_unparsable_env_override_is_a_config_error(good_file, monkeypatch):
    """A list given in the environment that is not JSON is a configuration error like any
    other, not a pydantic-settings exception escaping the loader."""
    monkeypatch.setenv("KASSAD_DELIVERY__CONSUMERS", "agg")
    with pytest.raises(ConfigError):
        load_register_config(good_file)


# -- invalid files ----------------------------------------------------------------------------


def test_port_out_of_range(tmp_path):
    message = _error(_write(tmp_path, MINIMAL + "[broker]\nport = 70000\n"))
    assert "broker.port" in message
    assert "65535" in message


def test_unknown_key(tmp_path):
    message = _error(_write(tmp_path, MINIMAL + "[brokr]\nport = 1883\n"))
    assert "brokr" in message
    assert "unknown key" in message


def test_unknown_nested_key(tmp_path):
    message = _error(_write(tmp_path, MINIMAL + "[broker]\nprot = 1883\n"))
    assert "broker.prot" in message
    assert "unknown key" in message


def test_base_currency_not_iso(tmp_path):
    text = MINIMAL + '[money]\nbase_currency = "XXX"\naccepted = ["XXX"]\n'
    message = _error(_write(tmp_path, text))
    assert "money" in message
    assert "XXX" in message
    assert "ISO 4217" in message


def test_base_currency_not_accepted(tmp_path):
    text = MINIMAL + '[money]\nbase_currency = "EUR"\naccepted = ["SEK"]\n'
    message = _error(_write(tmp_path, text))
    assert "money" in message
    assert "base_currency" in message
    assert "accepted" in message


def test_register_id_with_slash(tmp_path):
    message = _error(_write(tmp_path, 'store = "S1"\nregister = "R/1"\n'))
    assert "register" in message
    assert "pattern" in message


def test_missing_store(tmp_path):
    message = _error(_write(tmp_path, 'register = "R1"\n'))
    assert "store" in message
    assert "required" in message.lower()


def test_cert_file_without_key_file(tmp_path):
    text = MINIMAL + '[broker.tls]\nca_file = "/etc/ca.pem"\ncert_file = "/etc/client.pem"\n'
    message = _error(_write(tmp_path, text))
    assert "broker.tls" in message
    assert "cert_file" in message and "key_file" in message


def test_toml_syntax_error(tmp_path):
    message = _error(_write(tmp_path, MINIMAL + "[broker\nport = 1\n"))
    assert "not valid TOML" in message


def test_missing_file(tmp_path):
    message = _error(tmp_path / "nope.toml")
    assert "no such configuration file" in message


def test_missing_file_via_env(tmp_path, monkeypatch):
    path = tmp_path / "nope.toml"
    monkeypatch.setenv(CONFIG_ENV, str(path))
    with pytest.raises(ConfigError, match="no such configuration file"):
        load_register_config()


def test_directory_instead_of_file(tmp_path):
    message = _error(tmp_path)
    assert "cannot read" in message


def test_file_not_utf8_is_a_config_error(tmp_path):
    """TOML is UTF-8; a Latin-1 file (``ö`` as byte 0xF6) must be a ConfigError naming the file,
    not a UnicodeDecodeError escaping the loader."""
    path = tmp_path / "latin1.toml"
    path.write_bytes(b'store = "S1"\nregister = "R1"\n# kassa f\xf6r butik\n')
    _error(path)


# -- the command line -------------------------------------------------------------------------


def _run_cli(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.upper().startswith("KASSAD_")}
    return subprocess.run(
        [sys.executable, "-m", "kassad.daemon", *args],
        capture_output=True, text=True, timeout=30, cwd=cwd, env=env, check=False,
    )


def test_cli_run_with_bad_config_exits_2_without_traceback(tmp_path):
    bad = _write(tmp_path, MINIMAL + "[broker]\nport = 70000\n")
    result = _run_cli("run", "--config", str(bad), cwd=tmp_path)
    assert result.returncode == 2, result.stderr
    assert "broker.port" in result.stderr
    assert "less than or equal to 65535" in result.stderr
    assert str(bad) in result.stderr
    assert "Traceback" not in result.stderr


def test_cli_run_with_missing_config_exits_2(tmp_path):
    result = _run_cli("run", "--config", str(tmp_path / "nope.toml"), cwd=tmp_path)
    assert result.returncode == 2, result.stderr
    assert "no such configuration file" in result.stderr
    assert "Traceback" not in result.stderr


def test_cli_run_with_non_utf8_config_exits_2_without_traceback(tmp_path):
    path = tmp_path / "latin1.toml"
    path.write_bytes(b'store = "S1"\nregister = "R1"\n# kassa f\xf6r butik\n')
    result = _run_cli("run", "--config", str(path), cwd=tmp_path)
    assert "Traceback" not in result.stderr
    assert result.returncode == 2, result.stderr
