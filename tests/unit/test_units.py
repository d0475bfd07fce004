"""The systemd units: they render with an entry point, systemd-analyze verifies them, their
hardening is what the README quotes, and the promises the README makes are in the files."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from kassad.daemon.admin.layout import (
    PLACEHOLDER_EXE,
    UNITS,
    RenderError,
    exec_path,
    read_shipped,
    render_unit,
)

ROOT = Path(__file__).resolve().parents[2]
README_SECTION = "## Running it on a register (systemd)"
needs_analyze = pytest.mark.skipif(shutil.which("systemd-analyze") is None,
                                   reason="systemd-analyze not installed (package systemd)")


def directives(text: str) -> dict[str, list[str]]:
    """Section.Key → values, in order (keys like DeviceAllow= repeat)."""
    out: dict[str, list[str]] = {}
    section = ""
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        if line.startswith("["):
            section = line.strip("[]")
            continue
        key, _, value = line.partition("=")
        out.setdefault(f"{section}.{key}", []).append(value)
    return out


def readme_section() -> str:
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    start = text.index(README_SECTION)
    end = text.find("\n## ", start + len(README_SECTION))
    return text[start:end if end != -1 else None]


def quoted_scores() -> dict[str, float]:
    """The exposure levels the README quotes: rows like | `kassad.service` | 1.3 OK | …"""
    rows = re.findall(r"^\|\s*`(kassad[\w-]*\.service)`\s*\|\s*([0-9.]+)", readme_section(),
                      re.MULTILINE)
    return {name: float(score) for name, score in rows}


@pytest.fixture
def rendered(tmp_path: Path) -> dict[str, Path]:
    exe = Path(sys.executable).parent / "kassad"
    if not exe.exists():
        pytest.skip("no kassad entry point beside this Python (pip install -e .)")
    out = {}
    for name in UNITS:
        path = tmp_path / name
        path.write_text(render_unit(read_shipped(name).decode(), str(exe)))
        out[name] = path
    return out


@needs_analyze
def test_rendered_units_verify_clean(rendered: dict[str, Path]) -> None:
    done = subprocess.run(["systemd-analyze", "verify", *map(str, rendered.values())],
                          capture_output=True, text=True, timeout=60, check=False)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == ""
    ours = [line for line in done.stderr.splitlines() if "kassad" in line]
    assert ours == []


@needs_analyze
@pytest.mark.parametrize("name", UNITS)
def test_security_exposure_at_most_the_readme_figure(rendered: dict[str, Path],
                                                     name: str) -> None:
    quoted = quoted_scores()
    assert name in quoted, f"the README section quotes no exposure level for {name}"
    done = subprocess.run(["systemd-analyze", "security", "--offline=yes", str(rendered[name])],
                          capture_output=True, text=True, timeout=60, check=False)
    match = re.search(r"Overall exposure level for \S+: ([0-9.]+)", done.stdout)
    assert match, done.stdout + done.stderr
    assert float(match.group(1)) <= quoted[name], done.stdout


def test_register_unit_is_what_the_readme_promises() -> None:
    d = directives(read_shipped("kassad.service").decode())
    for key, value in {
        "Service.Type": "notify", "Service.NotifyAccess": "main", "Service.WatchdogSec": "30",
        "Service.ExecReload": "/bin/kill -HUP $MAINPID", "Service.Restart": "on-failure",
        "Service.RestartPreventExitStatus": "2", "Service.TimeoutStopSec": "45",
        "Service.User": "kassad", "Service.SupplementaryGroups": "dialout lp",
        "Service.StateDirectory": "kassad", "Service.ConfigurationDirectory": "kassad",
        "Service.ExecStart": f"{PLACEHOLDER_EXE} run --config /etc/kassad/kassad.toml",
        "Service.ProtectSystem": "strict", "Service.ProtectHome": "yes",
        "Service.PrivateTmp": "yes", "Service.NoNewPrivileges": "yes",
        "Service.DevicePolicy": "closed", "Service.CapabilityBoundingSet": "",
        "Service.MemoryDenyWriteExecute": "yes", "Service.UMask": "0077",
        "Service.SystemCallArchitectures": "native",
        "Service.RestrictAddressFamilies": "AF_UNIX AF_INET AF_INET6 AF_NETLINK",
        "Install.WantedBy": "multi-user.target",
    }.items():
        assert d.get(key) == [value], key
    assert d["Service.DeviceAllow"] == [f"char-{c} rw" for c in (
        "usb", "usb_device", "ttyUSB", "ttyACM", "ttyS")]
    assert d["Service.SystemCallFilter"][0] == "@system-service"
    assert "PrivateDevices" not in " ".join(d)
    assert "network-online.target" in d["Unit.After"][0] and "mosquitto.service" in \
        d["Unit.After"][0]
    assert d["Unit.Wants"] == ["network-online.target"]
    assert "Unit.Requires" not in d  # the broker is a soft ordering only


def test_store_unit_has_no_devices() -> None:
    d = directives(read_shipped("kassad-store.service").decode())
    assert d["Service.ExecStart"] == [f"{PLACEHOLDER_EXE} store --config /etc/kassad/store.toml"]
    assert d["Service.PrivateDevices"] == ["yes"]
    assert d["Service.Type"] == ["notify"]
    assert d["Service.RestartPreventExitStatus"] == ["2"]
    assert "Service.DeviceAllow" not in d and "Service.SupplementaryGroups" not in d


def test_render_puts_the_entry_point_in_exec_start() -> None:
    text = render_unit(read_shipped("kassad.service").decode(), "/opt/kassad/bin/kassad")
    assert exec_path(text) == "/opt/kassad/bin/kassad"
    assert PLACEHOLDER_EXE not in text.replace("# ", "").split("ExecStart=")[1].split("\n")[0]


@pytest.mark.parametrize("bad", ["kassad", "/opt/my kassad/bin/kassad", "/opt/%h/kassad",
                                 "/opt/$HOME/kassad", '/opt/"x"/kassad'])
def test_render_refuses_paths_systemd_would_misread(bad: str) -> None:
    with pytest.raises(RenderError):
        render_unit(read_shipped("kassad.service").decode(), bad)


def test_sysusers_gives_only_the_device_groups() -> None:
    lines = [line.split() for line in read_shipped("kassad-sysusers.conf").decode().splitlines()
             if line.strip() and not line.startswith("#")]
    assert [(w[0], w[1]) for w in lines] == [("u", "kassad"), ("m", "kassad"), ("m", "kassad")]
    assert sorted(w[2] for w in lines if w[0] == "m") == ["dialout", "lp"]


def test_the_device_classes_the_unit_allows_have_their_modules_loaded() -> None:
    modules = [line for line in read_shipped("kassad-modules.conf").decode().splitlines()
               if line and not line.startswith("#")]
    assert modules == ["usbserial", "cdc_acm"]  # they register ttyUSB and ttyACM


MDWE_PROBE = textwrap.dedent("""
    import ctypes, sys
    libc = ctypes.CDLL(None, use_errno=True)
    # PR_SET_MDWE, PR_MDWE_REFUSE_EXEC_GAIN: the kernel's MemoryDenyWriteExecute (Linux 6.3+)
    if libc.prctl(65, 1, 0, 0, 0) != 0:
        sys.exit(77)
    import kassad.daemon.register.service, kassad.daemon.store.service
    import kassad.daemon.mqtt.link, kassad.drivers.transport.usb
    import usb.backend.libusb1, sqlite3
    usb.backend.libusb1.get_backend()            # libusb through ctypes
    callback = ctypes.CFUNCTYPE(ctypes.c_int, ctypes.c_int)(lambda x: x + 1)
    assert callback(41) == 42                    # a libffi closure
    sqlite3.connect(":memory:").execute("select 1")
    print("ok")
""")


def test_memory_deny_write_execute_does_not_break_the_daemon() -> None:
    done = subprocess.run([sys.executable, "-c", MDWE_PROBE], capture_output=True, text=True,
                          timeout=60, check=False)
    if done.returncode == 77:
        pytest.skip("this kernel has no PR_SET_MDWE (Linux < 6.3)")
    assert done.returncode == 0 and done.stdout.strip() == "ok", done.stderr
