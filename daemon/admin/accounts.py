"""The service user as the files under a root see it (``ROOT/etc/passwd``, ``ROOT/etc/group``).

Read from the files rather than through NSS (``pwd``/``grp``), so the same code answers for a
``--root`` DESTDIR and for the running system; users kept elsewhere (LDAP, systemd's
userdb) are not seen, which is fine for a system user that systemd-sysusers writes to the
files.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class Account:
    name: str
    uid: int
    gid: int
    #: Supplementary groups: those whose member list names the user.
    groups: frozenset[str]


def _rows(path: Path) -> list[list[str]]:
    try:
        text = path.read_text(encoding="utf-8", errors="replace")
    except FileNotFoundError:
        return []
    return [line.split(":") for line in text.splitlines() if line and not line.startswith("#")]


def group_id(root: Path, name: str) -> int | None:
    for row in _rows(root / "etc/group"):
        if len(row) >= 3 and row[0] == name and row[2].isdigit():
            return int(row[2])
    return None


def lookup(root: Path, name: str) -> Account | None:
    for row in _rows(root / "etc/passwd"):
        if len(row) >= 4 and row[0] == name and row[2].isdigit() and row[3].isdigit():
            groups = frozenset(g[0] for g in _rows(root / "etc/group")
                               if len(g) >= 4 and name in g[3].split(","))
            return Account(name, int(row[2]), int(row[3]), groups)
    return None


def describe(account: Account | None, wanted: tuple[str, ...]) -> str:
    if account is None:
        return "absent"
    missing = [g for g in wanted if g not in account.groups]
    groups = ", ".join(sorted(account.groups)) or "no supplementary groups"
    return f"uid {account.uid} ({groups})" + (f"; not in {', '.join(missing)}" if missing else "")
