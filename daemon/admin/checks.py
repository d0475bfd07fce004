"""``kassad doctor``'s checks: each a small function that looks at one thing and returns a
:class:`Result` saying ok, warn or FAIL, and for anything not ok what to do about it.

Checks only look: they open a device and close it again, connect to the broker and
disconnect, read the journal read-only. Nothing is written, nothing is sent to a device.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import fcntl
import os
import shutil
import socket
import stat
import subprocess
from collections.abc import Awaitable
from dataclasses import dataclass
from enum import Enum
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING, Any

from . import accounts, udev
from .layout import (
    DEVICE_GROUPS,
    SERVICE_USER,
    STATE_DIR,
    UNITS,
    exec_path,
    rules_search_dirs,
    unit_search_dirs,
)

if TYPE_CHECKING:
    from ..config import (
        RegisterConfig,
        SerialTransportConfig,
        TcpTransportConfig,
        UsbTransportConfig,
    )

LOW_SPACE = 500 * 1024 * 1024  # below this a busy day's journal and its WAL may not fit
SPACE_FACTOR = 10  # free space under ten times the journal's size: it cannot be copied aside
TIME_ERROR = 5  # adjtimex(2): the kernel's clock is not synchronised


class Status(Enum):
    OK = "ok"
    WARN = "warn"
    FAIL = "FAIL"


@dataclass(frozen=True)
class Result:
    status: Status
    check: str
    message: str
    fix: str | None = None


def ok(check: str, message: str) -> Result:
    return Result(Status.OK, check, message)


def warn(check: str, message: str, fix: str) -> Result:
    return Result(Status.WARN, check, message, fix)


def fail(check: str, message: str, fix: str) -> Result:
    return Result(Status.FAIL, check, message, fix)


# -- the service user's view of files ----------------------------------------------------------


Account = accounts.Account


def _allows(path: Path, account: Account, bits: int) -> bool:
    """Would ``account`` get ``bits`` (4 read, 2 write) on ``path`` from its mode?"""
    st = path.stat()
    if st.st_uid == account.uid:
        return bool(st.st_mode & (bits << 6))
    gids = {account.gid} | {g for g in (accounts.group_id(Path("/"), name)
                                        for name in account.groups) if g is not None}
    if st.st_gid in gids:
        return bool(st.st_mode & (bits << 3))
    return bool(st.st_mode & bits)


def _who(path: Path) -> str:
    st = path.stat()
    try:
        import grp
        import pwd

        owner = f"{pwd.getpwuid(st.st_uid).pw_name}:{grp.getgrgid(st.st_gid).gr_name}"
    except KeyError:
        owner = f"{st.st_uid}:{st.st_gid}"
    return f"{owner} {stat.filemode(st.st_mode)}"


# -- configuration -----------------------------------------------------------------------------


def check_config(path: Path) -> tuple[Result, RegisterConfig | None]:
    from ..config import ConfigError, load_register_config

    try:
        config = load_register_config(path)
    except ConfigError as e:
        text = str(e)
        fix = f"edit {path}: the line above names the key and the problem"
        if "Permission denied" in text:
            fix = "run kassad doctor as root (sudo), or as a member of group kassad"
        elif "no such configuration file" in text:
            fix = "kassad install puts an example there; or give --config FILE"
        return fail("config", text.replace("\n", "\n      "), fix), None
    return ok("config", f"{path}: store {config.store}, register {config.register_id}"), config


def check_config_access(path: Path, config: RegisterConfig,
                        account: Account | None) -> Result | None:
    secret = config.broker.password is not None or (
        config.broker.tls is not None and config.broker.tls.key_file is not None)
    mode = path.stat().st_mode
    if secret and mode & 0o004:
        return warn("config", f"{path} holds a password or key and every user can read it "
                    f"({_who(path)})", f"chown root:kassad {path} && chmod 0640 {path}")
    if account is not None and not _allows(path, account, 4):
        return fail("config", f"user {account.name} cannot read {path} ({_who(path)})",
                    f"chown root:kassad {path} && chmod 0640 {path}")
    return None


def check_password_file(config: RegisterConfig, account: Account | None) -> Result | None:
    """[broker] password_file: there, readable by the service user, by nobody else."""
    secret = config.broker.password_file
    if secret is None:
        return None
    fix = f"chown root:kassad {secret} && chmod 0640 {secret}"
    if not secret.is_file():
        return fail("config", f"broker.password_file {secret}: no such file",
                    f"put the broker password of this register in {secret}; {fix}")
    if secret.stat().st_mode & 0o004:
        return warn("config", f"broker.password_file {secret}: every user can read it "
                    f"({_who(secret)})", fix)
    if account is not None and not _allows(secret, account, 4):
        return fail("config", f"broker.password_file {secret}: user {account.name} cannot "
                    f"read it ({_who(secret)})", fix)
    return None


# -- journal -----------------------------------------------------------------------------------


def _journal_files(journal: Path) -> list[Path]:
    return [p for p in (journal, Path(f"{journal}-wal"), Path(f"{journal}-shm")) if p.exists()]


def check_journal_dir(config: RegisterConfig, account: Account | None) -> list[Result]:
    journal = config.journal.path
    folder = journal.parent
    existing = folder  # the daemon creates missing folders: what matters is the nearest one
    while not existing.is_dir() and existing != existing.parent:
        existing = existing.parent
    if account is not None:
        writable, who = _allows(existing, account, 2), f"user {account.name}"
    else:
        writable, who = os.access(existing, os.W_OK), "this user"
    results: list[Result] = []
    if existing != folder and PurePosixPath(folder) == STATE_DIR:
        results.append(warn("journal dir", f"{folder} does not exist yet",
                            "systemd creates it when kassad.service first starts "
                            "(StateDirectory=kassad); or: kassad install"))
    elif not writable:
        results.append(fail("journal dir", f"{who} cannot write {existing} ({_who(existing)})"
                            + (f", so cannot create {folder}" if existing != folder else ""),
                            f"mkdir -p {folder} && chown kassad:kassad {folder}"))
    elif not PurePosixPath(folder).is_relative_to(STATE_DIR) and installed_units():
        results.append(warn("journal dir", f"{folder} is outside {STATE_DIR}: the service "
                            "may write only there (ProtectSystem=strict)",
                            f"systemctl edit kassad: [Service] ReadWritePaths={folder}"))
    elif existing != folder:
        results.append(ok("journal dir", f"{folder}: created at the first start "
                          f"({existing} is writable by {who})"))
    else:
        results.append(ok("journal dir", f"{folder}: writable by {who}"))
    free = shutil.disk_usage(existing).free
    size = sum(p.stat().st_size for p in _journal_files(journal))
    space = f"{free / 2**20:,.0f} MiB free, journal {size / 2**20:,.1f} MiB"
    if free < LOW_SPACE or free < SPACE_FACTOR * size:
        results.append(warn("disk space", f"{existing}: {space}",
                            "free space on that filesystem: the journal grows with every "
                            "event, and a copy of it must fit beside it"))
    else:
        results.append(ok("disk space", f"{existing}: {space}"))
    return results


def check_journal(config: RegisterConfig) -> Result:
    import sqlite3

    from ..journal.verify import verify_journal

    path = config.journal.path
    if not path.exists():
        return ok("journal", f"{path}: none yet (created at the first start)")
    try:
        report = verify_journal(path)
    except (sqlite3.Error, KeyError, ValueError) as e:
        return fail("journal", f"{path}: unreadable: {e}",
                    "stop kassad, keep a copy of the file, and ask for help: never edit it")
    if report.ok:
        return ok("journal", f"{path}: {report.events} events verified, seq 1..{report.last_seq}")
    return fail("journal", f"{path}: {len(report.problems)} problem(s), first: "
                f"{report.problems[0]}",
                f"kassad journal verify --journal {path} lists them all; keep a copy of the "
                "file and never edit it")


# -- devices -----------------------------------------------------------------------------------


def _unplugged_fix(path: Path) -> str:
    return (f"is it plugged in? ls -l /dev/kassad/ /dev/serial/by-id/ shows what is there; "
            f"names like {path} come from a local udev rule (see 60-kassad.rules)")


def check_serial(check: str, path: Path, account: Account | None = None) -> Result:
    """Opens and closes the port; ``account``: the service's user, who must be able to."""
    if not path.exists():
        return fail(check, f"{path}: no such device", _unplugged_fix(path))
    try:
        fd = os.open(path, os.O_RDWR | os.O_NOCTTY | os.O_NONBLOCK)
    except PermissionError:
        return fail(check, f"{path}: permission denied ({_who(path)})",
                    "the user needs group dialout (kassad install adds kassad to it)")
    except OSError as e:
        return fail(check, f"{path}: cannot open: {e.strerror}", _unplugged_fix(path))
    try:
        if not os.isatty(fd):
            return fail(check, f"{path} is not a serial port", "give the tty of the device")
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            note = "opens"
        except BlockingIOError:
            note = "in use (by the running kassad?)"
    finally:
        os.close(fd)
    if account is not None and not _allows(path, account, 6):
        return fail(check, f"{path}: user {account.name} cannot open it ({_who(path)})",
                    "kassad must be in the device's group: kassad install; then restart kassad")
    return ok(check, f"{path}: {note}")


async def check_tcp_printer(t: TcpTransportConfig, model: str, timeout: float) -> Result:  # noqa: ASYNC109
    where = f"{model} at tcp {t.host}:{t.port}"
    fix = (f"is the printer on, cabled and at {t.host}? ([devices.printer] transport); "
           "a running kassad may hold the printer's only connection: systemctl stop kassad, "
           "check again, systemctl start kassad")
    problem = await _tcp_problem(t.host, t.port, timeout)
    return ok("printer", f"{where}: accepts connections") if problem is None \
        else fail("printer", f"{where}: {problem}", fix)


def check_usb_printer(u: UsbTransportConfig, model: str, account: Account | None = None,
                      backend: Any = None) -> Result:
    """Found by vendor, product and serial number as the USB transport finds it; ``backend``
    is pyusb's (None: libusb), as the transport takes it."""
    import usb.core

    ident = f"{u.vendor_id:04x}:{u.product_id:04x}" + (f" serial {u.serial_number}"
                                                        if u.serial_number else "")
    where = f"{model} at usb {ident}"

    def same_serial(dev: Any) -> bool:  # as the USB transport matches it
        try:
            return bool(dev.serial_number == u.serial_number)
        except (usb.core.USBError, ValueError):
            return False

    try:
        dev = usb.core.find(idVendor=u.vendor_id, idProduct=u.product_id, backend=backend,
                            custom_match=same_serial if u.serial_number else None)
    except usb.core.NoBackendError:
        return fail("printer", f"{where}: no libusb", "apt-get install libusb-1.0-0")
    if dev is None:
        return fail("printer", f"{where}: not found on USB",
                    f"plugged in and switched on? lsusb -d {u.vendor_id:04x}:{u.product_id:04x}")
    node = Path(f"/dev/bus/usb/{dev.bus:03d}/{dev.address:03d}")
    if node.exists() and account is not None and not _allows(node, account, 6):
        return fail("printer", f"{where}: user {account.name} cannot open {node} "
                    f"({_who(node)})",
                    "install the udev rules (kassad install), then replug the printer")
    return ok("printer", f"{where}: found ({node})")


def printer_check(config: RegisterConfig, timeout: float,
                  account: Account | None) -> Result | Awaitable[Result] | None:
    """The printer's check: a coroutine (TCP) or a plain call (serial, USB); None: no printer."""
    printer = config.devices.printer
    if printer is None:
        return None
    t = printer.transport
    if t.kind == "tcp":
        return check_tcp_printer(t, printer.model, timeout)
    if t.kind == "serial":
        return _serial_printer(t, printer.model, account)
    return check_usb_printer(t, printer.model, account)


def _serial_printer(t: SerialTransportConfig, model: str, account: Account | None) -> Result:
    result = check_serial("printer", t.path, account)
    return Result(result.status, result.check, f"{model} at {result.message}", result.fix)


def device_checks(config: RegisterConfig, account: Account | None) -> list[Result]:
    """The serial devices besides the printer: a serial drawer, the counters."""
    results = []
    drawer = config.devices.drawer
    if drawer is not None and drawer.via == "serial" and drawer.serial is not None:
        results.append(check_serial("drawer", drawer.serial.path, account))
    for counter in config.devices.counters:
        results.append(check_serial(f"counter {counter.name}", counter.path, account))
    return results


# -- broker ------------------------------------------------------------------------------------


async def _tcp_problem(host: str, port: int, timeout: float) -> str | None:  # noqa: ASYNC109
    try:
        async with asyncio.timeout(timeout):
            _, writer = await asyncio.open_connection(host, port)
    except ConnectionRefusedError:
        return "connection refused (nothing listens there)"
    except TimeoutError:
        return f"no answer within {timeout:g} s"
    except socket.gaierror as e:
        return f"cannot resolve {host}: {e.strerror}"
    except OSError as e:
        return e.strerror or str(e)
    writer.close()
    with contextlib.suppress(OSError):
        await writer.wait_closed()
    return None


async def _ignore(message: Any) -> None:
    return None


def _mqtt_refusal(code: int) -> str | None:
    # MQTT 5 reason codes (134, 135) and MQTT 3.1.1 return codes (4, 5).
    if code in (134, 4):
        return "not authorised: bad username or password"
    if code in (135, 5):
        return "not authorised"
    return None


async def check_broker(config: RegisterConfig, path: Path, timeout: float) -> Result:  # noqa: ASYNC109
    import aiomqtt
    from paho.mqtt.reasoncodes import ReasonCode

    from ..mqtt.link import MqttLink

    b = config.broker
    where = f"{b.host}:{b.port}" + (" (TLS)" if b.tls else "")
    problem = await _tcp_problem(b.host, b.port, timeout)
    if problem is not None:
        return fail("broker", f"{where}: {problem}",
                    "is Mosquitto running there (systemctl status mosquitto on that "
                    f"machine) and reachable from here? [broker] host and port in {path}")
    # The daemon's own client (credentials, TLS, MQTT 5 properties), under another client id:
    # connecting with the register's id would take over the running daemon's session.
    link = MqttLink(b, client_id=f"{config.store}-{config.register_id}-doctor",
                    subscriptions=[], on_message=_ignore, session_expiry=0, clean_start=True,
                    name="doctor")
    credentials = f"[broker] username and password in {path}, and the broker's password file"
    try:
        # MqttLink builds the one kind of client the daemon uses; no public name for it yet.
        client = link._make_client(None)
        async with asyncio.timeout(timeout), client:
            pass
    except TimeoutError:  # before OSError, of which it is a subclass
        return fail("broker", f"{where}: no MQTT answer within {timeout:g} s",
                    "is it an MQTT broker on that port (TLS on a plain port?)")
    except aiomqtt.MqttCodeError as e:
        code = e.rc.value if isinstance(e.rc, ReasonCode) else int(e.rc or 0)
        refusal = _mqtt_refusal(code)
        if refusal is not None:
            user = f" as {b.username!r}" if b.username else " without a username"
            return fail("broker", f"{where}: {refusal}{user}",
                        f"{credentials}; a broker ACL may also limit client ids")
        return fail("broker", f"{where}: refused: {e}", f"see the broker's log; {credentials}")
    except (aiomqtt.MqttError, OSError, ValueError) as e:
        text = str(e)
        if "timed out" in text:
            return fail("broker", f"{where}: no MQTT answer within {timeout:g} s",
                        "is it an MQTT broker on that port (TLS on a plain port?)")
        if "SSL" in text or "certificate" in text.lower() or b.tls is not None:
            return fail("broker", f"{where}: TLS failed: {text}",
                        f"[broker.tls] ca_file must be the CA that signed the broker's "
                        f"certificate, and {b.host} the name in it")
        return fail("broker", f"{where}: MQTT connect failed: {text}",
                    "is it an MQTT broker on that port? see the broker's log")
    login = f" as {b.username!r}" if b.username else ""
    return ok("broker", f"{where}: connected{login} (MQTT 5)")


# -- the system ------------------------------------------------------------------------------


def clock_synchronised() -> tuple[bool | None, str]:
    """(synchronised?, how we know). The kernel's NTP state first: chrony, ntpd and
    systemd-timesyncd all keep it; then timedatectl. None: cannot tell."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        # struct timex with modes = 0 (read only); bigger than any platform's struct.
        buffer = ctypes.create_string_buffer(1024)
        state = int(libc.adjtimex(buffer))
        if state >= 0:
            return state != TIME_ERROR, "the kernel's NTP state, adjtimex"
    except (OSError, AttributeError):
        pass
    try:
        done = subprocess.run(["timedatectl", "show", "-p", "NTPSynchronized", "--value"],
                              capture_output=True, text=True, timeout=5, check=False)
    except (OSError, subprocess.TimeoutExpired):
        return None, "neither adjtimex nor timedatectl answered"
    if done.returncode == 0 and done.stdout.strip() in ("yes", "no"):
        return done.stdout.strip() == "yes", "timedatectl"
    return None, "neither adjtimex nor timedatectl answered"


def check_clock() -> Result:
    synced, how = clock_synchronised()
    fix = ("enable NTP: timedatectl set-ntp true (systemd-timesyncd), or check chrony; event "
           "times, command expiry and the automatic session close rely on the clock")
    if synced:
        return ok("clock", f"synchronised ({how})")
    if synced is None:
        return warn("clock", f"cannot tell whether the clock is synchronised: {how}", fix)
    return warn("clock", f"not synchronised ({how})", fix)


def installed_units(root: Path = Path("/")) -> dict[str, Path]:
    found: dict[str, Path] = {}
    for folder in reversed(unit_search_dirs(root)):  # the administrator's copy wins
        for name in UNITS:
            if (folder / name).is_file():
                found[name] = folder / name
    return found


def check_installation(root: Path = Path("/")) -> list[Result]:
    """The service user, the units' entry point and the udev rules, where kassad is installed."""
    units = installed_units(root)
    if not units:
        return []
    results: list[Result] = []
    account = accounts.lookup(root, SERVICE_USER)
    if account is None:
        results.append(warn("service user", "no user kassad",
                            "kassad install creates it (systemd-sysusers)"))
    else:
        missing = [g for g in DEVICE_GROUPS if g not in account.groups]
        results.append(warn("service user", f"kassad is not in {', '.join(missing)}",
                            "kassad install adds it; then restart kassad") if missing
                       else ok("service user", f"kassad: {accounts.describe(account, ())}"))
    for name, unit in sorted(units.items()):
        exe = exec_path(unit.read_text(encoding="utf-8"))
        if exe is None or not os.access(exe, os.X_OK):
            results.append(fail("unit", f"{unit} runs {exe}, which is not there",
                                "run kassad install again from the kassad you use"))
        else:
            results.append(ok("unit", f"{name} runs {exe}"))
    rules = [p for d in rules_search_dirs(root) if d.is_dir() for p in sorted(d.glob("*.rules"))
             if "kassad" in p.name]
    for path in rules:
        try:
            problems = udev.check_file(path)
        except OSError as e:
            problems = [udev.Problem(0, e.strerror or str(e))]
        results.append(fail("udev rules", f"{path}: {problems[0]}"
                            + (f" (and {len(problems) - 1} more)" if len(problems) > 1 else ""),
                            f"edit {path}, then udevadm control --reload") if problems
                       else ok("udev rules", f"{path}: parse"))
    if not rules:
        results.append(warn("udev rules", "no kassad udev rules installed",
                            "kassad install"))
    return results
