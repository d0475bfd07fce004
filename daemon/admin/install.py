"""``kassad install``: put the units, udev rules, service user, module list and example
configurations in place on a Debian or Raspberry Pi OS machine.

Idempotent: each file is compared with what would be written, and only a difference is
written (atomically: a temporary file in the same directory, fsync, rename). A configuration
under /etc/kassad is the administrator's: it is written only when absent. ``--root DIR``
installs into a directory (a package build, the tests); ``--dry-run`` prints the plan.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from . import accounts
from .layout import (
    CONFIG_DIR,
    DEFAULT_PREFIX,
    DEVICE_GROUPS,
    SERVICE_USER,
    RenderError,
    Shipped,
    read_shipped,
    render_unit,
    shipped_files,
    under_root,
)

# ProtectHome=yes hides these from the service: a kassad installed there cannot be started.
_HIDDEN_FROM_SERVICE = ("/home/", "/root/", "/run/user/")


@dataclass(frozen=True)
class Change:
    verb: str  # created, updated, unchanged, kept, failed; "would create" … in a dry run
    what: str
    target: PurePosixPath | None = None  # the file, for the reloads it calls for

    @property
    def changed(self) -> bool:
        return self.verb not in ("unchanged", "kept")


_DRY = {"created": "would create", "updated": "would update"}


class InstallError(Exception):
    """Nothing can be installed: the message says why and what to do."""


def entry_point() -> str:
    """The ``kassad`` script of the environment this runs from (a venv's bin/, or pip's)."""
    beside = Path(sys.executable).parent / "kassad"
    if beside.is_file() and os.access(beside, os.X_OK):
        return str(beside.absolute())
    found = shutil.which("kassad")
    if found:
        return str(Path(found).absolute())
    raise InstallError("cannot find the kassad command beside this Python or on PATH; "
                       "pass --kassad /path/to/kassad")


def _check_exe(exe: str, must_exist: bool) -> None:
    if not exe.startswith("/"):
        raise InstallError(f"--kassad {exe}: give an absolute path")
    if any(exe.startswith(p) for p in _HIDDEN_FROM_SERVICE):
        raise InstallError(
            f"{exe} is under /home, /root or /run/user, which the service cannot see "
            "(ProtectHome=yes); install kassad under /opt: python3 -m venv /opt/kassad && "
            "/opt/kassad/bin/pip install kassad && sudo /opt/kassad/bin/kassad install")
    if must_exist and not os.access(exe, os.X_OK):
        raise InstallError(f"{exe} is not an executable file")


# -- files ------------------------------------------------------------------------------------


def _make_dirs(path: Path) -> None:
    missing = []
    while not path.exists():
        missing.append(path)
        path = path.parent
    for folder in reversed(missing):
        folder.mkdir()
        folder.chmod(0o755)  # whatever the umask: udev and systemd-sysusers read these


def write_atomic(path: Path, data: bytes, mode: int, gid: int | None = None) -> None:
    """Replace ``path`` with ``data`` so that a crash leaves the old or the new file, whole."""
    _make_dirs(path.parent)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            os.fchmod(f.fileno(), mode)
            if gid is not None:
                os.fchown(f.fileno(), 0, gid)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
    dir_fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dir_fd)  # the rename itself survives a power cut
    finally:
        os.close(dir_fd)


class Installer:
    def __init__(self, root: Path, prefix: PurePosixPath, exe: str, dry_run: bool) -> None:
        self.root, self.prefix, self.exe, self.dry_run = root, prefix, exe, dry_run
        self.changes: list[Change] = []
        self.failed = False

    def _note(self, verb: str, what: str, target: PurePosixPath | None = None) -> Change:
        change = Change(_DRY.get(verb, verb) if self.dry_run else verb, what, target)
        self.changes.append(change)
        return change

    def _gid(self) -> int | None:
        """The group of /etc/kassad and its files: kassad's, when it exists and we may chown."""
        if os.geteuid() != 0:  # a package build as a normal user: the package sets owners
            return None
        return accounts.group_id(self.root, SERVICE_USER)

    def _desired(self, item: Shipped) -> bytes:
        data = read_shipped(item.source)
        if item.source.endswith(".service"):
            data = render_unit(data.decode("utf-8"), self.exe).encode("utf-8")
        return data

    def install_file(self, item: Shipped) -> Change:
        path = under_root(self.root, item.target)
        shown = str(item.target)
        gid = self._gid() if item.user_owned else None
        if path.exists() and item.user_owned:
            return self._note("kept", f"{shown} (yours: never replaced)")
        data = self._desired(item)
        if not path.exists():
            verb = "created"
        else:
            st = path.stat()
            if path.read_bytes() == data and (st.st_mode & 0o7777) == item.mode:
                return self._note("unchanged", shown, item.target)
            verb = "updated"
        if not self.dry_run:
            write_atomic(path, data, item.mode, gid)
        suffix = f" (mode {item.mode:04o}" + (", root:kassad)" if gid is not None else ")")
        return self._note(verb, shown + suffix, item.target)

    def config_dir(self) -> None:
        path = under_root(self.root, CONFIG_DIR)
        gid = self._gid()
        want_mode = 0o750
        if path.is_dir():
            st = path.stat()
            if (st.st_mode & 0o7777) == want_mode and (gid is None or st.st_gid == gid):
                self._note("unchanged", f"{CONFIG_DIR}/")
                return
            verb = "updated"
        else:
            verb = "created"
        if not self.dry_run:
            _make_dirs(path.parent)
            path.mkdir(exist_ok=True)
            path.chmod(want_mode)
            if gid is not None:
                os.chown(path, 0, gid)
        owner = ", root:kassad" if gid is not None else ""
        self._note(verb, f"{CONFIG_DIR}/ (mode 0750{owner})")

    def service_user(self, sysusers_conf: PurePosixPath) -> None:
        before = accounts.lookup(self.root, SERVICE_USER)
        if before is not None and all(g in before.groups for g in DEVICE_GROUPS):
            described = accounts.describe(before, DEVICE_GROUPS)
            self._note("unchanged", f"user {SERVICE_USER}: {described}")
            return
        if self.dry_run:
            self._note("created" if before is None else "updated",
                       f"user {SERVICE_USER} in groups {', '.join(DEVICE_GROUPS)} "
                       "(systemd-sysusers)")
            return
        tool = shutil.which("systemd-sysusers")
        if tool is None:
            self.failed = True
            self._note("failed", f"user {SERVICE_USER}: systemd-sysusers not found; create it: "
                       "adduser --system --group --home /var/lib/kassad --no-create-home kassad"
                       " && adduser kassad dialout && adduser kassad lp")
            return
        argv = [tool, str(under_root(self.root, sysusers_conf))]
        if self.root != Path("/"):
            argv[1:1] = ["--root", str(self.root)]
        try:
            done = subprocess.run(argv, capture_output=True, text=True, check=False,
                                  timeout=120)
            why = (done.stderr.strip() or f"exit {done.returncode}") if done.returncode else ""
        except (OSError, subprocess.TimeoutExpired) as e:
            why = str(e)
        after = accounts.lookup(self.root, SERVICE_USER)
        if why or after is None:
            self.failed = True
            self._note("failed", f"user {SERVICE_USER}: {' '.join(argv)}: {why or 'no user'}")
            return
        self._note("created" if before is None else "updated",
                   f"user {SERVICE_USER}: {accounts.describe(after, DEVICE_GROUPS)}")

    def run(self) -> None:
        items = shipped_files(self.prefix)
        system = [i for i in items if not i.user_owned]
        for item in system:
            self.install_file(item)
        sysusers = next(i.target for i in system if "sysusers.d" in str(i.target))
        self.service_user(sysusers)
        self.config_dir()
        for item in items:
            if item.user_owned:
                self.install_file(item)


# -- after the files: reloads ----------------------------------------------------------------


def _run(argv: list[str]) -> str | None:
    """Run a reload command; None when it worked, else why not."""
    try:
        done = subprocess.run(argv, capture_output=True, text=True, check=False, timeout=60)
    except (OSError, subprocess.TimeoutExpired) as e:
        return str(e)
    return None if done.returncode == 0 else (done.stderr.strip() or f"exit {done.returncode}")


def reload_steps(changes: list[Change], why_not: str | None) -> list[str]:
    """Tell systemd and udev about changed files: run the commands, or, with ``why_not``
    (not installing to a running system), say what to run."""
    touched = {str(c.target.parent) for c in changes if c.changed and c.target is not None}
    wanted: list[list[str]] = []
    if any(t.endswith("/systemd/system") for t in touched):
        wanted.append(["systemctl", "daemon-reload"])
    if any(t.endswith("/udev/rules.d") for t in touched):
        wanted.append(["udevadm", "control", "--reload"])
        # Apply the new rules to printers and adaptors that are already plugged in.
        wanted.append(["udevadm", "trigger", "--action=change", "--subsystem-match=usb",
                       "--subsystem-match=usbmisc", "--subsystem-match=tty"])
    if any(t.endswith("/modules-load.d") for t in touched):
        wanted.append(["modprobe", "-a", "usbserial", "cdc_acm"])
    lines = []
    for argv in wanted:
        why = why_not
        if why is None:
            why = _run(argv) if shutil.which(argv[0]) else f"{argv[0]} not found"
        lines.append(f"  ran        {' '.join(argv)}" if why is None
                     else f"  to do      {' '.join(argv)}   ({why})")
    return lines


def _why_not_live(root: Path) -> str | None:
    if root != Path("/"):
        return f"on the system installed into {root}"
    if not Path("/run/systemd/system").is_dir():
        return "systemd is not running here"
    return None


NEXT_STEPS = """\
Next:
  1. Edit /etc/kassad/kassad.toml: store, register, the broker and the devices.
  2. Check it: kassad doctor --config /etc/kassad/kassad.toml
  3. Start it now and at every boot: systemctl enable --now kassad
  The store aggregator, on the machine that runs it: edit /etc/kassad/store.toml, then
  systemctl enable --now kassad-store
  The store's Mosquitto (TLS, passwords, the ACL): the files in share/kassad/mosquitto/ and
  the README's "Security" section."""


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="kassad install",
        description="Install kassad's systemd units, udev rules, service user (kassad, in "
                    "groups dialout and lp) and example configurations (/etc/kassad, only "
                    "when absent). Running it again changes only what differs.")
    p.add_argument("--root", default="/", help="install into this directory instead of / "
                   "(like DESTDIR: package builds, tests); no reloads are run")
    p.add_argument("--prefix", default=str(DEFAULT_PREFIX),
                   help="where units, rules and sysusers.d go: PREFIX/lib/… (default "
                        "/usr/local; a distribution package uses /usr)")
    p.add_argument("--kassad", help="the kassad command the units run (default: the one "
                   "beside this Python, or on PATH)")
    p.add_argument("--dry-run", action="store_true", help="print what would be done; change "
                   "nothing")
    return p


def main(argv: list[str]) -> int:
    args = build_parser().parse_args(argv)
    root = Path(args.root).absolute()
    live = root == Path("/")
    if live and not args.dry_run and os.geteuid() != 0:
        print("kassad install: installing to / needs root: sudo kassad install\n"
              "  (--root DIR installs into a directory; --dry-run shows what would be done)",
              file=sys.stderr)
        return 1
    try:
        exe = args.kassad or entry_point()
        _check_exe(exe, must_exist=args.kassad is None or live)
        installer = Installer(root, PurePosixPath(args.prefix), exe, args.dry_run)
        where = "/" if live else str(root)
        print(f"kassad install into {where}{' (dry run)' if args.dry_run else ''}; "
              f"the units run {exe}")
        installer.run()
    except (InstallError, RenderError) as e:
        print(f"kassad install: {e}", file=sys.stderr)
        return 1
    except OSError as e:
        print(f"kassad install: {e}", file=sys.stderr)
        return 1
    for change in installer.changes:
        print(f"  {change.verb:<10} {change.what}")
    if not args.dry_run:
        for line in reload_steps(installer.changes, _why_not_live(root)):
            print(line)
    changed = sum(c.changed for c in installer.changes)
    if installer.failed:
        print("kassad install: not complete, see the lines marked failed", file=sys.stderr)
        return 1
    if changed == 0:
        print("Nothing changed: everything was already in place.")
    elif args.dry_run:
        print(f"{changed} change(s) would be made.")
    else:
        print(f"{changed} change(s) made.")
    print(NEXT_STEPS)
    return 0


if __name__ == "__main__":  # python -m kassad.daemon.admin.install
    sys.exit(main(sys.argv[1:]))
