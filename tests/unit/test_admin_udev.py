"""The udev rules: every line parses (our checker, and udevadm where it can run here), the
checker catches what udev would reject, the vendor ids match the README's list, and udevadm
applies them to printers and adaptors on a fake sysfs as the README says (groups, modes,
/dev/kassad/ names)."""

from __future__ import annotations

import grp
import os
import re
import shutil
import struct
import subprocess
from dataclasses import dataclass
from pathlib import Path

import pytest

from kassad.daemon.admin.layout import RULES, read_shipped
from kassad.daemon.admin.udev import check_file, parse_rules

ROOT = Path(__file__).resolve().parents[2]
SYSTEM_RULES = Path("/usr/lib/udev/rules.d")


def rules_text() -> str:
    return read_shipped(RULES).decode()


def problems(text: str) -> list[str]:
    return [str(p) for p in parse_rules(text)[1]]


def test_shipped_rules_parse() -> None:
    rules, found = parse_rules(rules_text())
    assert found == []
    assert len(rules) > 10
    keys = {t.key for r in rules for t in r.tokens}
    assert {"GROUP", "MODE", "SYMLINK", "GOTO", "LABEL", "IMPORT"} <= keys


def test_devices_get_the_service_users_groups() -> None:
    rules, _ = parse_rules(rules_text())
    groups = {t.value for r in rules for t in r.tokens if t.key == "GROUP"}
    modes = {t.value for r in rules for t in r.tokens if t.key == "MODE"}
    assert groups == {"lp", "dialout"} and modes == {"0660"}
    links = [t.value for r in rules for t in r.tokens if t.key == "SYMLINK"]
    assert all(v.startswith("kassad/") for v in links)
    assert "kassad/printer-usb-%k" in links and "kassad/printer-lp%n" in links


@pytest.mark.parametrize(("line", "expected"), [
    ('FOO=="bar"', "unknown key 'FOO'"),
    ('KERNEL="ttyUSB0"', "KERNEL can only be matched"),
    ('GROUP=="lp"', "GROUP is assigned, not matched"),
    ('ENV=="1"', "ENV needs an {attribute}"),
    ('KERNEL{x}=="a"', "KERNEL takes no {attribute}"),
    ('IMPORT{nope}="usb_id"', "attribute must be one of"),
    ('IMPORT{builtin}="usb_ids"', "unknown builtin 'usb_ids'"),
    ('MODE="rw"', "not an octal mode"),
    ('GOTO="nowhere"', 'GOTO="nowhere" has no LABEL'),
    ("KERNEL==ttyUSB0", "cannot parse"),
    ('KERNEL=="a" GROUP="lp"', "cannot parse"),
    ('KERNEL=="a", ', "stray comma"),
    ('SYMLINK+="kassad/%q"', "unknown substitution %q"),
    ('SYMLINK+="kassad/$env"', "needs {…}"),
    ('GROUP+="lp"', "GROUP does not take +="),
    ('OPTIONS+="fast"', "unknown option"),
])
def test_checker_reports_what_udev_rejects(line: str, expected: str) -> None:
    found = problems(line + "\n")
    assert found and expected in found[0], found


def test_continuation_lines_and_comments() -> None:
    text = '# comment\n\nKERNEL=="ttyUSB*", \\\n  GROUP="dialout"\nKERNEL=="x", FOO="1"\n'
    rules, found = parse_rules(text)
    assert [r.line for r in rules] == [3, 5]
    assert found[0].line == 5 and "FOO" in found[0].message


@pytest.mark.skipif(not SYSTEM_RULES.is_dir(), reason="no /usr/lib/udev/rules.d here")
def test_checker_accepts_the_systems_own_rules() -> None:
    # udev's and the distribution's rules are known good: no false alarms on any of them.
    for path in sorted(SYSTEM_RULES.glob("*.rules")):
        assert check_file(path) == [], path


def _vendor_ids_in_rules() -> set[str]:
    ids: set[str] = set()
    for rule in parse_rules(rules_text())[0]:
        for tok in rule.tokens:
            if tok.attr == "idVendor" and tok.op == "==" and tok.value != "?*":
                ids.update(tok.value.split("|"))
    return ids


def test_vendor_ids_match_the_readme() -> None:
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    section = readme[readme.index("## Running it on a register (systemd)"):]
    section = section[:section.find("\n## ", 10)]
    listed = set(re.findall(r"^\|\s*`([0-9a-f]{4})(?::[0-9a-f]{4})?`", section, re.MULTILINE))
    assert listed == _vendor_ids_in_rules()
    assert {"04b8", "0519", "1504", "1d90", "2730", "0403", "067b", "1a86", "10c4"} <= listed


def _udevadm_in_private_namespace(rules_dir: Path, device: str) -> subprocess.CompletedProcess[str]:
    # udevadm test (systemd 252) reads the rules from /etc/udev/rules.d and really creates
    # symlinks under /dev: run it where /etc/udev/rules.d is ours and /dev, /run/udev are
    # throwaway tmpfs mounts.
    script = ("mount --make-rprivate / && mount -t tmpfs tmpfs /dev && "
              "mkdir -p /run/udev && mount -t tmpfs tmpfs /run/udev && "
              f"mount --bind {rules_dir} /etc/udev/rules.d && "
              f"udevadm test --action=add {device}")
    return subprocess.run(["unshare", "--mount", "sh", "-c", script], capture_output=True,
                          text=True, timeout=60, check=False)


def test_udevadm_accepts_the_rules(tmp_path: Path) -> None:
    if shutil.which("udevadm") is None or shutil.which("unshare") is None:
        pytest.skip("udevadm (package udev) or unshare not installed")
    if os.geteuid() != 0:
        pytest.skip("udevadm test in a private mount namespace needs root")
    ttys = sorted(Path("/sys/class/tty").glob("ttyS*"))
    if not ttys or not Path("/etc/udev/rules.d").is_dir():
        pytest.skip("no /sys/class/tty/ttyS* device or /etc/udev/rules.d to test with")
    (tmp_path / RULES).write_text(rules_text())
    done = _udevadm_in_private_namespace(tmp_path, str(ttys[0]))
    if "Operation not permitted" in done.stderr and done.returncode != 0:
        pytest.skip(f"cannot make a private mount namespace here: {done.stderr[-200:]}")
    assert done.returncode == 0, done.stderr[-2000:]
    output = done.stdout + done.stderr
    assert f"Reading rules file: /etc/udev/rules.d/{RULES}" in output
    complaints = [line for line in output.splitlines()
                  if RULES in line and not line.startswith("Reading rules file")]
    assert complaints == []
    # The same run with a broken copy does complain: the test above can see a bad line.
    (tmp_path / RULES).write_text(rules_text() + 'KERNEL=="x", FOO="1"\n')
    broken = _udevadm_in_private_namespace(tmp_path, str(ttys[0]))
    assert "Invalid key 'FOO'" in broken.stdout + broken.stderr


# -- the rules applied to devices: udevadm test on a fake sysfs ---------------------------------

PCI = "devices/pci0000:00/0000:00:14.0"


class FakeSysfs:
    """Just enough of /sys for udev's usb_id, path_id and hwdb builtins: a PCI host
    controller, its root hub, and the USB devices a test plugs in."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self._node(root / PCI, "bus", "pci", {"PCI_SLOT_NAME": "0000:00:14.0"},
                   {"vendor": "0x8086", "device": "0xa36d"}, "xhci_hcd")
        self._node(root / PCI / "usb1", "bus", "usb", {"DEVTYPE": "usb_device"},
                   {"idVendor": "1d6b", "idProduct": "0002", "busnum": "1", "devnum": "1"}, "usb")

    def _node(self, path: Path, kind: str, subsystem: str, uevent: dict[str, object],
              attrs: dict[str, object] | None = None, driver: str | None = None,
              bus: str | None = None) -> Path:
        path.mkdir(parents=True, exist_ok=True)
        (path / "uevent").write_text("".join(f"{k}={v}\n" for k, v in uevent.items()))
        for name, value in (attrs or {}).items():
            data = value if isinstance(value, bytes) else f"{value}\n".encode()
            (path / name).write_bytes(data)
        target = self.root / kind / subsystem
        target.mkdir(parents=True, exist_ok=True)
        (path / "subsystem").symlink_to(os.path.relpath(target, path))
        if driver:
            where = self.root / "bus" / (bus or subsystem) / "drivers" / driver
            where.mkdir(parents=True, exist_ok=True)
            (path / "driver").symlink_to(os.path.relpath(where, path))
        return path

    def usb(self, port: int, vid: int, pid: int, interface_class: int, *, serial: str = "",
            manufacturer: str = "ACME", product: str = "Device",
            interface_driver: str | None = None) -> tuple[Path, Path]:
        """A USB device on root-hub port ``port`` (address port + 1) with one interface."""
        address = port + 1
        device = struct.pack("<BBHBBBBHHHBBBB", 18, 1, 0x200, 0, 0, 0, 64, vid, pid, 0x100,
                             1, 2, 3, 1)
        config = struct.pack("<BBHBBBBB", 9, 2, 25, 1, 1, 0, 0xC0, 50)
        interface = struct.pack("<9B", 9, 4, 0, 0, 1, interface_class, 1, 2, 0)
        endpoint = struct.pack("<BBBBHB", 7, 5, 0x01, 2, 64, 0)
        attrs: dict[str, object] = {
            "idVendor": f"{vid:04x}", "idProduct": f"{pid:04x}", "manufacturer": manufacturer,
            "product": product, "bcdDevice": "0100", "busnum": 1, "devnum": address,
            "devpath": port, "descriptors": device + config + interface + endpoint}
        if serial:
            attrs["serial"] = serial
        dev = self._node(
            self.root / PCI / "usb1" / f"1-{port}", "bus", "usb",
            {"MAJOR": 189, "MINOR": address - 1, "DEVNAME": f"bus/usb/001/{address:03d}",
             "DEVTYPE": "usb_device", "PRODUCT": f"{vid:x}/{pid:x}/100", "BUSNUM": "001",
             "DEVNUM": f"{address:03d}"}, attrs, "usb")
        intf = self._node(
            dev / f"1-{port}:1.0", "bus", "usb",
            {"DEVTYPE": "usb_interface", "INTERFACE": f"{interface_class}/1/2"},
            {"bInterfaceNumber": "00", "bInterfaceClass": f"{interface_class:02x}",
             "bInterfaceSubClass": "01", "bInterfaceProtocol": "02"}, interface_driver, "usb")
        return dev, intf

    def tty(self, interface: Path, name: str, major: int, driver: str) -> Path:
        parent = interface
        if name.startswith("ttyUSB"):  # usb-serial puts a port device between them
            parent = self._node(interface / name, "bus", "usb-serial", {"DRIVER": driver},
                                {"port_number": 0}, driver)
        return self._node(parent / "tty" / name, "class", "tty",
                          {"MAJOR": major, "MINOR": 0, "DEVNAME": name})

    def lp(self, interface: Path, number: int) -> Path:
        return self._node(interface / "usbmisc" / f"lp{number}", "class", "usbmisc",
                          {"MAJOR": 180, "MINOR": number, "DEVNAME": f"usb/lp{number}"})


@dataclass
class Applied:
    group: int | None
    mode: str | None
    links: set[str]
    properties: dict[str, str]


def apply_rules(tmp_path: Path, sysfs: FakeSysfs, device: Path) -> Applied:
    """udevadm test with our rules on a device of the fake sysfs, in a private namespace."""
    rules = tmp_path / "rules"
    rules.mkdir(exist_ok=True)
    (rules / RULES).write_text(rules_text())
    syspath = "/sys/" + str(device.relative_to(sysfs.root))
    script = ("mount --make-rprivate / && mount -t tmpfs tmpfs /dev && "
              "mkdir -p /run/udev && mount -t tmpfs tmpfs /run/udev && "
              f"mount --bind {rules} /etc/udev/rules.d && mount --bind {sysfs.root} /sys && "
              # sd-device refuses a /sys that is not sysfs unless told: this one is a tmpfs.
              f"SYSTEMD_DEVICE_VERIFY_SYSFS=0 udevadm test --action=add {syspath}")
    done = subprocess.run(["unshare", "--mount", "sh", "-c", script], capture_output=True,
                          text=True, timeout=60, check=False)
    assert done.returncode == 0, done.stderr[-3000:]
    log = done.stdout + done.stderr
    groups = re.findall(r"^\S+: \S+:\d+ GROUP (\d+)$", log, re.MULTILINE)
    modes = re.findall(r"^\S+: \S+:\d+ MODE (\d+)$", log, re.MULTILINE)
    properties = dict(line.split("=", 1) for line in done.stdout.splitlines()
                      if re.match(r"^[A-Z_]+=", line))
    links = {link.removeprefix("/dev/") for link in properties.get("DEVLINKS", "").split()}
    return Applied(int(groups[-1]) if groups else None, modes[-1] if modes else None,
                   {link for link in links if link.startswith("kassad/")}, properties)


@pytest.fixture
def sysfs(tmp_path: Path) -> FakeSysfs:
    if shutil.which("udevadm") is None or shutil.which("unshare") is None:
        pytest.skip("udevadm (package udev) or unshare not installed")
    if os.geteuid() != 0 or not Path("/etc/udev/rules.d").is_dir():
        pytest.skip("udevadm test in a private mount namespace needs root and /etc/udev")
    try:
        grp.getgrnam("lp")
        grp.getgrnam("dialout")
    except KeyError:
        pytest.skip("this system has no lp or dialout group")
    probe = subprocess.run(["unshare", "--mount", "true"], capture_output=True, check=False)
    if probe.returncode != 0:
        pytest.skip("cannot make a private mount namespace here")
    return FakeSysfs(tmp_path / "sys")


def lp_gid() -> int:
    return grp.getgrnam("lp").gr_gid


def dialout_gid() -> int:
    return grp.getgrnam("dialout").gr_gid


@pytest.mark.parametrize(("vid", "pid", "cls", "product", "serial", "links"), [
    # An Epson in vendor-class mode: no printer interface, known by its vendor id.
    (0x04B8, 0x0E28, 0xFF, "TM-T20II", "X5E1",
     {"kassad/printer-usb-1-4", "kassad/by-id/printer-ACME_TM-T20II_X5E1"}),
    # Any maker's printer-class interface (07/01).
    (0x1234, 0x5678, 0x07, "POS80", "", {"kassad/printer-usb-1-4"}),
    # Xprinter's board (NXP's vendor id) with the product id seen on it; with a serial number
    # it is named by it too.
    (0x1FC9, 0x2016, 0xFF, "XP-80", "XP1", {"kassad/printer-usb-1-4",
                                            "kassad/by-id/printer-ACME_XP-80_XP1"}),
])
def test_usb_printers_get_group_lp_and_stable_names(tmp_path: Path, sysfs: FakeSysfs, vid: int,
                                                    pid: int, cls: int, product: str,
                                                    serial: str, links: set[str]) -> None:
    device, _ = sysfs.usb(4, vid, pid, cls, serial=serial, product=product)
    applied = apply_rules(tmp_path, sysfs, device)
    assert (applied.group, applied.mode) == (lp_gid(), "0660")
    assert applied.links == links


@pytest.mark.parametrize(("vid", "pid", "cls"), [
    (0x046D, 0xC52B, 0x03),  # a keyboard receiver
    (0x1FC9, 0x000C, 0xFF),  # another NXP-based device: the chip maker's id alone is not enough
    (0x0483, 0x3748, 0xFF),  # an ST-Link programmer
])
def test_other_usb_devices_are_left_alone(tmp_path: Path, sysfs: FakeSysfs, vid: int, pid: int,
                                          cls: int) -> None:
    device, _ = sysfs.usb(4, vid, pid, cls)
    applied = apply_rules(tmp_path, sysfs, device)
    assert applied.links == set() and "KASSAD_PRINTER" not in applied.properties
    assert applied.group != lp_gid()


def test_the_kernels_lp_node(tmp_path: Path, sysfs: FakeSysfs) -> None:
    _, interface = sysfs.usb(4, 0x04B8, 0x0E28, 0x07, interface_driver="usblp")
    applied = apply_rules(tmp_path, sysfs, sysfs.lp(interface, 0))
    assert (applied.group, applied.mode) == (lp_gid(), "0660")
    assert applied.links == {"kassad/printer-lp0"}


def test_usb_serial_adaptors_get_dialout_and_names_by_port_and_serial(tmp_path: Path,
                                                                      sysfs: FakeSysfs) -> None:
    _, ftdi = sysfs.usb(3, 0x0403, 0x6001, 0xFF, serial="A50285BI", manufacturer="FTDI",
                        product="FT232R USB UART", interface_driver="ftdi_sio")
    applied = apply_rules(tmp_path, sysfs, sysfs.tty(ftdi, "ttyUSB0", 188, "ftdi_sio"))
    assert (applied.group, applied.mode) == (dialout_gid(), "0660")
    assert applied.links == {"kassad/serial-usb-1-3-if00",
                             "kassad/by-id/serial-FTDI_FT232R_USB_UART_A50285BI-if00"}
    # The README's example of a role name by port matches this ID_PATH.
    assert applied.properties["ID_PATH"].endswith("-usb-0:3:1.0")


def test_an_adaptor_without_a_serial_number_is_named_by_port_only(tmp_path: Path,
                                                                  sysfs: FakeSysfs) -> None:
    _, ch340 = sysfs.usb(2, 0x1A86, 0x7523, 0xFF, interface_driver="ch341")
    applied = apply_rules(tmp_path, sysfs, sysfs.tty(ch340, "ttyUSB0", 188, "ch341"))
    assert applied.links == {"kassad/serial-usb-1-2-if00"}


def test_other_serial_devices_get_no_kassad_name(tmp_path: Path, sysfs: FakeSysfs) -> None:
    _, arduino = sysfs.usb(2, 0x2341, 0x0043, 0x02, interface_driver="cdc_acm")
    applied = apply_rules(tmp_path, sysfs, sysfs.tty(arduino, "ttyACM0", 166, "cdc_acm"))
    assert applied.links == set()
