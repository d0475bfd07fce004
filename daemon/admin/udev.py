"""A checker for udev rule files (udev(7)): every rule parses, every key exists and takes the
operator and attribute it is given, every value is quoted, every GOTO has its LABEL.

udev itself only logs a bad line and skips it, so a typo in a rule silently leaves a printer
without its group. ``udevadm verify`` does this job from systemd 254 on; Debian 12 has 252.
The key table follows udev-rules.c: what udev rejects is an error here.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from enum import Enum
from pathlib import Path


class Kind(Enum):
    MATCH = "match"  # == and != only
    ASSIGN = "assign"  # =, +=, -=, := (some keys fewer)
    BOTH = "both"


@dataclass(frozen=True)
class KeySpec:
    kind: Kind
    #: None: no {attribute}; "required"; "optional"; or a tuple of the attributes allowed.
    attr: str | tuple[str, ...] | None = None
    #: assignment operators the key takes (match keys: none).
    assign_ops: frozenset[str] = frozenset({"=", "+=", "-=", ":="})


_NO_REMOVE = frozenset({"=", "+=", ":="})
_SET_ONLY = frozenset({"=", ":="})

KEYS: dict[str, KeySpec] = {
    **{k: KeySpec(Kind.MATCH) for k in (
        "ACTION", "DEVPATH", "KERNEL", "SUBSYSTEM", "DRIVER", "KERNELS", "SUBSYSTEMS",
        "DRIVERS", "TAGS", "RESULT")},
    "ATTRS": KeySpec(Kind.MATCH, "required"),
    "CONST": KeySpec(Kind.MATCH, ("arch", "virt")),
    "TEST": KeySpec(Kind.MATCH, "optional"),
    "SYMLINK": KeySpec(Kind.BOTH),
    "NAME": KeySpec(Kind.BOTH, None, _SET_ONLY),
    "TAG": KeySpec(Kind.BOTH, None, frozenset({"=", "+=", "-="})),
    "ENV": KeySpec(Kind.BOTH, "required", frozenset({"=", "+="})),
    "ATTR": KeySpec(Kind.BOTH, "required", frozenset({"="})),
    "SYSCTL": KeySpec(Kind.BOTH, "required", frozenset({"="})),
    # PROGRAM and IMPORT run something and match on its success, whatever the operator.
    "PROGRAM": KeySpec(Kind.BOTH, None, _NO_REMOVE),
    "IMPORT": KeySpec(Kind.BOTH, ("program", "builtin", "file", "db", "cmdline", "parent"),
                      _NO_REMOVE),
    "OPTIONS": KeySpec(Kind.ASSIGN, None, _NO_REMOVE),
    "OWNER": KeySpec(Kind.ASSIGN, None, _SET_ONLY),
    "GROUP": KeySpec(Kind.ASSIGN, None, _SET_ONLY),
    "MODE": KeySpec(Kind.ASSIGN, None, _SET_ONLY),
    "SECLABEL": KeySpec(Kind.ASSIGN, "required", frozenset({"=", "+="})),
    "RUN": KeySpec(Kind.ASSIGN, ("program", "builtin"), _NO_REMOVE),
    "GOTO": KeySpec(Kind.ASSIGN, None, frozenset({"="})),
    "LABEL": KeySpec(Kind.ASSIGN, None, frozenset({"="})),
}

BUILTINS = frozenset({"blkid", "btrfs", "hwdb", "input_id", "keyboard", "kmod", "net_id",
                      "net_setup_link", "path_id", "uaccess", "usb_id"})
_OPTIONS = re.compile(r"^(dump|string_escape=(none|replace)|db_persist|watch|nowatch|"
                      r"static_node=.+|link_priority=-?\d+|log_level=\w+)$")

# KEY{attr} OP "value", then a comma or the end of the rule. The value may hold \" escapes.
_TOKEN = re.compile(
    r'\s*(?P<key>[A-Za-z_]+)(?:\{(?P<attr>[^}]*)\})?\s*(?P<op>==|!=|\+=|-=|:=|=)\s*'
    r'"(?P<value>(?:[^"\\]|\\.)*)"\s*(?P<sep>,|$)')
# Substitutions udev expands in values: %k … and $kernel …, with {arg} for some.
_PERCENT = set("knpbMmsEcNrS%")
_DOLLAR = {"kernel", "number", "devpath", "id", "driver", "attr", "sysfs", "env", "major",
           "minor", "result", "parent", "name", "links", "root", "sys", "devnode", "tempnode"}
_NEEDS_ARG = {"s", "E", "attr", "sysfs", "env"}
_SUBST = re.compile(r"%(?P<p>.)(?:\{(?P<parg>[^}]*)\})?|\$(?P<d>[a-z]+|\$)(?:\{(?P<darg>[^}]*)\})?")


@dataclass(frozen=True)
class Token:
    key: str
    attr: str | None
    op: str
    value: str


@dataclass(frozen=True)
class Rule:
    line: int
    tokens: tuple[Token, ...]


@dataclass(frozen=True)
class Problem:
    line: int
    message: str

    def __str__(self) -> str:
        return f"line {self.line}: {self.message}"


def _logical_lines(text: str) -> list[tuple[int, str]]:
    """Rules with their first line number; a trailing backslash continues a rule."""
    out: list[tuple[int, str]] = []
    pending, start = "", 0
    for number, raw in enumerate(text.splitlines(), 1):
        line = raw.strip()
        if not pending and (not line or line.startswith("#")):
            continue
        if not pending:
            start = number
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        out.append((start, pending + line))
        pending = ""
    if pending:
        out.append((start, pending))
    return out


def _check_substitutions(value: str) -> str | None:
    for m in _SUBST.finditer(value):
        if m.group("p") is not None:
            name, arg = m.group("p"), m.group("parg")
            if name not in _PERCENT:
                return f"unknown substitution %{name}"
        else:
            name, arg = m.group("d"), m.group("darg")
            if name != "$" and name not in _DOLLAR:
                return f"unknown substitution ${name}"
        if name in _NEEDS_ARG and not arg:
            return f"substitution {m.group(0)!r} needs {{…}}"
    return None


def _check_token(tok: Token) -> str | None:
    spec = KEYS.get(tok.key)
    if spec is None:
        return f"unknown key {tok.key!r}"
    if spec.attr is None and tok.attr is not None:
        return f"{tok.key} takes no {{attribute}}"
    if spec.attr == "required" and not tok.attr:
        return f"{tok.key} needs an {{attribute}}"
    if isinstance(spec.attr, tuple):
        if tok.attr is None and tok.key != "RUN":
            return f"{tok.key} needs one of {{{', '.join(spec.attr)}}}"
        if tok.attr is not None and tok.attr not in spec.attr:
            return f"{tok.key}{{{tok.attr}}}: attribute must be one of {', '.join(spec.attr)}"
    is_match = tok.op in ("==", "!=")
    if is_match and spec.kind is Kind.ASSIGN:
        return f"{tok.key} is assigned, not matched: use = not {tok.op}"
    if not is_match and spec.kind is Kind.MATCH:
        return f"{tok.key} can only be matched (== or !=), not assigned with {tok.op}"
    if not is_match and tok.op not in spec.assign_ops:
        return f"{tok.key} does not take {tok.op} (takes {', '.join(sorted(spec.assign_ops))})"
    if tok.key == "TEST" and tok.attr and not re.fullmatch(r"[0-7]{1,4}", tok.attr):
        return f"TEST{{{tok.attr}}}: the attribute is an octal mode"
    if tok.key == "MODE" and not re.fullmatch(r"[0-7]{3,4}", tok.value) \
            and "$" not in tok.value and "%" not in tok.value:
        return f"MODE={tok.value!r}: not an octal mode"
    if tok.key in ("IMPORT", "RUN") and tok.attr == "builtin":
        command = (tok.value.split() or [""])[0]
        if command not in BUILTINS:
            return f"{tok.key}{{builtin}}: unknown builtin {command!r}"
    if tok.key == "OPTIONS" and not _OPTIONS.match(tok.value):
        return f"OPTIONS={tok.value!r}: unknown option"
    if tok.key in ("GOTO", "LABEL", "GROUP", "OWNER") and not tok.value:
        return f"{tok.key} needs a value"
    return _check_substitutions(tok.value)


def parse_rules(text: str) -> tuple[list[Rule], list[Problem]]:
    rules: list[Rule] = []
    problems: list[Problem] = []
    for number, line in _logical_lines(text):
        tokens: list[Token] = []
        pos = 0
        while pos < len(line):
            m = _TOKEN.match(line, pos)
            if m is None:
                problems.append(Problem(number, f"cannot parse from {line[pos:].strip()!r} "
                                                "(KEY==\"value\", comma separated, quoted)"))
                break
            tok = Token(m["key"], m["attr"], m["op"], m["value"])
            if (why := _check_token(tok)) is not None:
                problems.append(Problem(number, why))
            tokens.append(tok)
            pos = m.end()
            if m["sep"] == "," and pos >= len(line.rstrip()):
                problems.append(Problem(number, "stray comma at the end of the rule"))
        rules.append(Rule(number, tuple(tokens)))
    labels = {t.value for r in rules for t in r.tokens if t.key == "LABEL"}
    for rule in rules:
        for tok in rule.tokens:
            if tok.key == "GOTO" and tok.value not in labels:
                problems.append(Problem(rule.line, f"GOTO=\"{tok.value}\" has no LABEL"))
    return rules, problems


def check_file(path: Path) -> list[Problem]:
    return parse_rules(path.read_text(encoding="utf-8"))[1]
