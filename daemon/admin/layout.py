"""Where an installation's files come from (package data of ``kassad.systemd``) and where they
go on the machine; the rendering of the unit files. Shared by install and doctor.

The files go under ``/usr/local/lib`` by default: kassad is installed with pip, not by the
distribution's package manager, and systemd, udev, systemd-sysusers and systemd-modules-load
all read ``/usr/local/lib/…`` as well as ``/usr/lib/…``. A package build passes ``--prefix /usr``.
An administrator's file of the same name under ``/etc`` replaces any of them.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from importlib import resources
from pathlib import Path, PurePosixPath

SERVICE_USER = "kassad"
DEVICE_GROUPS = ("dialout", "lp")
CONFIG_DIR = PurePosixPath("/etc/kassad")
STATE_DIR = PurePosixPath("/var/lib/kassad")
DEFAULT_PREFIX = PurePosixPath("/usr/local")
#: The entry point written in the repository's unit files; install replaces it.
PLACEHOLDER_EXE = "/usr/bin/kassad"
UNITS = ("kassad.service", "kassad-store.service", "kassad-ws-bridge.service")
RULES = "60-kassad.rules"


@dataclass(frozen=True)
class Shipped:
    """One file put in place: its name in the package, where it goes, and its mode."""

    source: str
    target: PurePosixPath
    mode: int
    #: A configuration the administrator edits: written only when absent, never replaced.
    user_owned: bool = False


def shipped_files(prefix: PurePosixPath = DEFAULT_PREFIX) -> tuple[Shipped, ...]:
    lib = prefix / "lib"
    return (
        *(Shipped(unit, lib / "systemd/system" / unit, 0o644) for unit in UNITS),
        Shipped(RULES, lib / "udev/rules.d" / RULES, 0o644),
        Shipped("kassad-sysusers.conf", lib / "sysusers.d/kassad.conf", 0o644),
        Shipped("kassad-modules.conf", lib / "modules-load.d/kassad.conf", 0o644),
        # The store broker's configuration, to copy to /etc/mosquitto on the machine that runs
        # it (README "Security"): not put there, a register's machine runs no broker.
        *(Shipped(source, prefix / "share/kassad/mosquitto" / name, 0o644) for source, name in (
            ("mosquitto-store.conf", "kassad.conf"),
            ("mosquitto-websockets.conf", "kassad-websockets.conf"),
            ("mosquitto-kassad.acl", "kassad.acl"))),
        # 0640 root:kassad: the service reads them, other users cannot see the broker password.
        Shipped("kassad.example.toml", CONFIG_DIR / "kassad.toml", 0o640, user_owned=True),
        Shipped("store.example.toml", CONFIG_DIR / "store.toml", 0o640, user_owned=True),
        Shipped("ws-bridge.example.toml", CONFIG_DIR / "ws-bridge.toml", 0o640, user_owned=True),
    )


def read_shipped(name: str) -> bytes:
    return resources.files("kassad.systemd").joinpath(name).read_bytes()


class RenderError(ValueError):
    """The entry point cannot be written into a unit file."""


# systemd splits ExecStart= on whitespace, unquotes "…" and expands %-specifiers and $VARS;
# a path with any of these characters would need escaping that is easy to get wrong.
_SAFE_PATH = re.compile(r"^/[A-Za-z0-9._+/-]+$")


def render_unit(text: str, exe: str) -> str:
    """The unit with the repository's placeholder entry point replaced by ``exe``."""
    if not _SAFE_PATH.match(exe):
        raise RenderError(
            f"{exe!r}: the unit files need an absolute path of letters, digits and ._+-/ "
            "(no spaces, quotes, % or $); install kassad somewhere like /opt/kassad")
    marker = f"ExecStart={PLACEHOLDER_EXE} "
    if marker not in text:
        raise RenderError(f"unit file has no {marker!r} line to render")
    return text.replace(marker, f"ExecStart={exe} ")


def exec_path(unit_text: str) -> str | None:
    """The program an installed unit runs (its ExecStart= first word)."""
    for line in unit_text.splitlines():
        if line.startswith("ExecStart="):
            words = line.removeprefix("ExecStart=").split()
            return words[0] if words else None
    return None


def under_root(root: Path, target: PurePosixPath) -> Path:
    """``target`` (absolute, as on the installed system) inside ``root`` (/ or a DESTDIR)."""
    return root / target.relative_to("/")


def unit_search_dirs(root: Path) -> list[Path]:
    """Where systemd looks for system units, the administrator's first."""
    return [under_root(root, PurePosixPath(d)) for d in (
        "/etc/systemd/system", "/usr/local/lib/systemd/system", "/usr/lib/systemd/system",
        "/lib/systemd/system")]


def rules_search_dirs(root: Path) -> list[Path]:
    return [under_root(root, PurePosixPath(d)) for d in (
        "/etc/udev/rules.d", "/usr/local/lib/udev/rules.d", "/usr/lib/udev/rules.d",
        "/lib/udev/rules.d")]
