"""The doctor's checks one by one, on files in a tmp folder and a fake USB bus."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from kassad.daemon.admin import checks
from kassad.daemon.admin.checks import Result, Status
from kassad.daemon.admin.doctor import format_report
from kassad.daemon.admin.layout import read_shipped, render_unit
from kassad.daemon.config import UsbTransportConfig, load_register_config
from kassad.simulators.usb_backend import FakeUsbBackend, FakeUsbDevice

KASSAD = str(Path(sys.executable).parent / "kassad")


@pytest.fixture
def config_file(tmp_path: Path) -> Path:
    path = tmp_path / "kassad.toml"
    path.write_text(f'store = "S1"\nregister = "R1"\n[journal]\npath = "{tmp_path}/j/j.db"\n'
                    '[broker]\nusername = "S1-R1"\npassword = "secret"\n')
    path.chmod(0o640)
    return path


def test_config_readable_by_everyone_with_a_password_is_a_warning(config_file: Path) -> None:
    config = load_register_config(config_file)
    assert checks.check_config_access(config_file, config, None) is None
    config_file.chmod(0o644)
    result = checks.check_config_access(config_file, config, None)
    assert result is not None and result.status is Status.WARN
    assert result.fix == f"chown root:kassad {config_file} && chmod 0640 {config_file}"


def test_missing_configuration_says_how_to_get_one(tmp_path: Path) -> None:
    result, config = checks.check_config(tmp_path / "nope.toml")
    assert config is None and result.status is Status.FAIL
    assert "no such configuration file" in result.message and "kassad install" in (result.fix
                                                                                  or "")


def test_journal_dir_created_at_start_and_disk_space(config_file: Path,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    config = load_register_config(config_file)
    first, space = checks.check_journal_dir(config, None)
    assert first.status is Status.OK and "created at the first start" in first.message
    assert space.status is Status.OK

    class Usage:
        free = 100 * 2**20

    monkeypatch.setattr(checks.shutil, "disk_usage", lambda path: Usage)
    _, space = checks.check_journal_dir(config, None)
    assert space.status is Status.WARN and "100 MiB free" in space.message


def test_a_journal_that_is_not_sqlite_fails(config_file: Path) -> None:
    config = load_register_config(config_file)
    assert checks.check_journal(config).status is Status.OK  # none yet
    config.journal.path.parent.mkdir()
    config.journal.path.write_bytes(b"this is not a database" * 100)
    result = checks.check_journal(config)
    assert result.status is Status.FAIL and "unreadable" in result.message
    assert "never edit" in (result.fix or "")


@pytest.mark.parametrize(("code", "text"), [
    (134, "not authorised: bad username or password"), (4, "not authorised: bad username"),
    (135, "not authorised"), (5, "not authorised"), (136, None)])
def test_mqtt_refusals(code: int, text: str | None) -> None:
    refusal = checks._mqtt_refusal(code)
    assert (refusal is None) if text is None else (refusal or "").startswith(text)


def test_clock(monkeypatch: pytest.MonkeyPatch) -> None:
    synced, how = checks.clock_synchronised()  # whatever this machine's clock is
    assert synced in (True, False, None) and how
    monkeypatch.setattr(checks, "clock_synchronised", lambda: (False, "adjtimex"))
    result = checks.check_clock()
    assert result.status is Status.WARN and "timedatectl set-ntp true" in (result.fix or "")
    monkeypatch.setattr(checks, "clock_synchronised", lambda: (True, "adjtimex"))
    assert checks.check_clock().status is Status.OK


def test_usb_printer_found_by_vendor_product_and_serial() -> None:
    backend = FakeUsbBackend()
    backend.plug(FakeUsbDevice(0x04B8, 0x0E28, serial_number="X5E1"))
    found = checks.check_usb_printer(
        UsbTransportConfig(kind="usb", vendor_id=0x04B8, product_id=0x0E28,
                           serial_number="X5E1"), "TM-T20II", backend=backend)
    assert found.status is Status.OK and "TM-T20II at usb 04b8:0e28 serial X5E1" in \
        found.message
    other = checks.check_usb_printer(
        UsbTransportConfig(kind="usb", vendor_id=0x04B8, product_id=0x0E28,
                           serial_number="OTHER"), "TM-T20II", backend=backend)
    assert other.status is Status.FAIL and "not found on USB" in other.message
    assert "lsusb -d 04b8:0e28" in (other.fix or "")


def _installed(root: Path, exe: str, rules: str | None = None) -> None:
    units = root / "usr/local/lib/systemd/system"
    units.mkdir(parents=True)
    (units / "kassad.service").write_text(render_unit(read_shipped("kassad.service").decode(),
                                                      exe))
    rules_dir = root / "usr/local/lib/udev/rules.d"
    rules_dir.mkdir(parents=True)
    (rules_dir / "60-kassad.rules").write_text(rules or read_shipped("60-kassad.rules").decode())
    (root / "etc").mkdir()
    (root / "etc/passwd").write_text("kassad:x:999:999::/var/lib/kassad:/usr/sbin/nologin\n")
    (root / "etc/group").write_text("lp:x:7:kassad\ndialout:x:20:\nkassad:x:999:\n")


def test_installation_checks_only_where_installed(tmp_path: Path) -> None:
    assert checks.check_installation(tmp_path) == []


def test_a_good_installation(tmp_path: Path) -> None:
    _installed(tmp_path, KASSAD)
    found = {r.check: r for r in checks.check_installation(tmp_path)}
    assert found["unit"].status is Status.OK and KASSAD in found["unit"].message
    assert found["udev rules"].status is Status.OK
    user = found["service user"]
    assert user.status is Status.WARN and "not in dialout" in user.message  # lp only


def test_a_moved_venv_and_a_broken_local_rule_fail(tmp_path: Path) -> None:
    _installed(tmp_path, "/opt/gone/bin/kassad", rules='KERNEL=="ttyUSB*", GROUP=="dialout"\n')
    found = {r.check: r for r in checks.check_installation(tmp_path)}
    assert found["unit"].status is Status.FAIL and "/opt/gone/bin/kassad" in found["unit"].message
    assert found["udev rules"].status is Status.FAIL
    assert "line 1: GROUP is assigned, not matched" in found["udev rules"].message


def test_report_format() -> None:
    report = format_report(Path("/etc/kassad/kassad.toml"), [
        Result(Status.OK, "config", "fine"),
        Result(Status.FAIL, "broker", "10.0.0.5:1883: connection refused", "start it"),
        Result(Status.WARN, "clock", "not synchronised", "enable NTP")])
    assert report.splitlines() == [
        "kassad doctor: /etc/kassad/kassad.toml",
        "ok    config  fine",
        "FAIL  broker  10.0.0.5:1883: connection refused",
        "              fix: start it",
        "warn  clock   not synchronised",
        "              fix: enable NTP",
        "1 problem(s) to fix, 1 warning(s).",
    ]
