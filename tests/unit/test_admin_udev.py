"""The udev rules: every line parses (our checker, and udevadm where it can run here), the
checker catches what udev would reject, and the vendor ids match the README's list."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
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
