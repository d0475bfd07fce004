"""``kassad install`` into a tmp ``--root``: the files with their modes, the user made by the
real systemd-sysusers, a second run that changes nothing, a user's configuration kept."""

from __future__ import annotations

import os
import shutil
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from kassad.daemon.admin import install
from kassad.daemon.admin.layout import read_shipped

KASSAD = str(Path(sys.executable).parent / "kassad")
needs_sysusers = pytest.mark.skipif(shutil.which("systemd-sysusers") is None,
                                    reason="systemd-sysusers not installed (package systemd)")
needs_root = pytest.mark.skipif(os.geteuid() != 0, reason="chown root:kassad needs root")

FILES = {  # installed path → mode
    "usr/local/lib/systemd/system/kassad.service": 0o644,
    "usr/local/lib/systemd/system/kassad-store.service": 0o644,
    "usr/local/lib/systemd/system/kassad-ws-bridge.service": 0o644,
    "usr/local/lib/udev/rules.d/60-kassad.rules": 0o644,
    "usr/local/lib/sysusers.d/kassad.conf": 0o644,
    "usr/local/lib/modules-load.d/kassad.conf": 0o644,
    "usr/local/share/kassad/mosquitto/kassad.conf": 0o644,
    "usr/local/share/kassad/mosquitto/kassad-websockets.conf": 0o644,
    "usr/local/share/kassad/mosquitto/kassad.acl": 0o644,
    "etc/kassad/kassad.toml": 0o640,
    "etc/kassad/store.toml": 0o640,
    "etc/kassad/ws-bridge.toml": 0o640,
}


@pytest.fixture
def root(tmp_path: Path) -> Path:
    """A root with the groups Debian's base-passwd gives every system (lp 7, dialout 20)."""
    root = tmp_path / "root"
    (root / "etc").mkdir(parents=True)
    (root / "etc/passwd").write_text("root:x:0:0:root:/root:/bin/bash\n")
    (root / "etc/group").write_text("root:x:0:\nlp:x:7:\ndialout:x:20:\n")
    return root


def run_install(root: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "kassad.daemon.admin.install", "--root", str(root),
         "--kassad", KASSAD, *args], capture_output=True, text=True, timeout=60, check=False)


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


@needs_sysusers
@needs_root
def test_install_twice_into_a_root(root: Path) -> None:
    first = run_install(root)
    assert first.returncode == 0, first.stderr
    for rel, want in FILES.items():
        assert mode(root / rel) == want, rel
    unit = (root / "usr/local/lib/systemd/system/kassad.service").read_text()
    assert f"ExecStart={KASSAD} run --config /etc/kassad/kassad.toml" in unit
    bridge = (root / "usr/local/lib/systemd/system/kassad-ws-bridge.service").read_text()
    assert f"ExecStart={KASSAD} ws-bridge --config /etc/kassad/ws-bridge.toml" in bridge
    assert (root / "etc/kassad/kassad.toml").read_bytes() == read_shipped("kassad.example.toml")

    passwd = dict(line.split(":", 1) for line in (root / "etc/passwd").read_text().splitlines())
    assert "kassad" in passwd and passwd["kassad"].endswith(":/var/lib/kassad:/usr/sbin/nologin")
    groups = {line.split(":")[0]: line.split(":") for line in
              (root / "etc/group").read_text().splitlines()}
    assert "kassad" in groups["dialout"][3].split(",") and "kassad" in groups["lp"][3].split(",")
    assert (groups["dialout"][2], groups["lp"][2]) == ("20", "7")  # the existing groups
    kassad_gid = int(groups["kassad"][2])
    for rel in ("etc/kassad", "etc/kassad/kassad.toml", "etc/kassad/store.toml",
                "etc/kassad/ws-bridge.toml"):
        st = (root / rel).stat()
        assert (st.st_uid, st.st_gid) == (0, kassad_gid), rel
    assert mode(root / "etc/kassad") == 0o750
    assert "14 change(s) made." in first.stdout
    assert "systemctl enable --now kassad" in first.stdout  # the next steps

    before = {rel: (root / rel).stat().st_mtime_ns for rel in FILES}
    second = run_install(root)
    assert second.returncode == 0, second.stderr
    assert "Nothing changed: everything was already in place." in second.stdout
    assert {rel: (root / rel).stat().st_mtime_ns for rel in FILES} == before
    assert "created" not in second.stdout and "updated" not in second.stdout


@needs_sysusers
def test_a_users_configuration_is_kept_and_a_changed_unit_is_put_back(root: Path) -> None:
    assert run_install(root).returncode == 0
    config = root / "etc/kassad/kassad.toml"
    config.write_text('store = "S9"\nregister = "R9"\n')
    unit = root / "usr/local/lib/systemd/system/kassad.service"
    unit.write_text(unit.read_text().replace("WatchdogSec=30", "WatchdogSec=0"))
    unit.chmod(0o666)

    again = run_install(root)
    assert again.returncode == 0, again.stderr
    assert config.read_text() == 'store = "S9"\nregister = "R9"\n'
    assert "kept       /etc/kassad/kassad.toml (yours: never replaced)" in again.stdout
    assert "WatchdogSec=30" in unit.read_text() and mode(unit) == 0o644
    assert "updated    /usr/local/lib/systemd/system/kassad.service" in again.stdout
    assert "1 change(s) made." in again.stdout


def test_dry_run_changes_nothing(root: Path) -> None:
    before = sorted(p.relative_to(root) for p in root.rglob("*"))
    done = run_install(root, "--dry-run")
    assert done.returncode == 0, done.stderr
    assert sorted(p.relative_to(root) for p in root.rglob("*")) == before
    assert "would create /usr/local/lib/systemd/system/kassad.service" in done.stdout
    assert "would create user kassad" in done.stdout
    assert "14 change(s) would be made." in done.stdout


def test_prefix_usr_for_a_package_build(root: Path) -> None:
    done = run_install(root, "--prefix", "/usr", "--dry-run")
    assert "would create /usr/lib/udev/rules.d/60-kassad.rules" in done.stdout


def test_refuses_to_install_to_slash_when_not_root(monkeypatch: pytest.MonkeyPatch,
                                                   capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setattr(install.os, "geteuid", lambda: 1000)
    assert install.main([]) == 1
    err = capsys.readouterr().err
    assert "needs root" in err and "--root DIR" in err


def test_refuses_an_entry_point_the_service_cannot_see(root: Path) -> None:
    done = run_install(root, "--kassad", "/home/anna/venv/bin/kassad")
    assert done.returncode == 1
    assert "ProtectHome" in done.stderr and "/opt" in done.stderr
    assert not (root / "usr").exists()


def test_reloads_are_told_not_run_outside_a_live_system(root: Path) -> None:
    done = run_install(root)
    assert f"to do      systemctl daemon-reload   (on the system installed into {root})" \
        in done.stdout
    assert "to do      udevadm control --reload" in done.stdout
