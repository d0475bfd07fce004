"""Issue 10, point 2: bad commands, fuzzed, against a real register on a real Mosquitto.

The register runs as its own process (``kassad run``, so its memory can be read from /proc),
with a session open on known figures. Hypothesis builds bad payloads of every kind the issue
names — wrong types in every field of every command, negative and absurd amounts, unknown
and malformed currencies, deep nesting, 1 MiB strings, payloads at and past the configured
size, invalid UTF-8, duplicate keys, NaN and Infinity, JSON that is not an object, missing or
garbage ``cmd_id``, wrong ``v``, unknown command names — and sends them raw (a bare MQTT 5
client in a thread, Response Topic and Correlation Data set). For each the test knows the
error code the contract gives and checks it arrives, alone (no ack), on the right topic, with
the right ``cmd_id``. After every batch a valid ``state.get`` is answered; at the end the
session's figures and the journal's session events are as before, every bad command with a
readable ``cmd_id`` is journaled exactly once as ``cmd.rejected``, and the daemon's resident
memory did not grow with the number of commands.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import re
import sqlite3
import threading
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiomqtt
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from kassad.daemon.contract.commands import COMMAND_PARAMS, MAX_AMOUNT
from kassad.daemon.contract.topics import RegisterTopics
from kassad.daemon.register.intake import Command, parse_command
from kassad.simulators.broker import MosquittoBroker
from tests.support.register import RegisterProcess, journal_events, write_config

pytestmark = pytest.mark.timeout(120)

BASE = "kassad/v1/S1/R1"
RES = f"{BASE}/res/fuzz"
INVALID = f"{BASE}/res/_invalid"
# Large enough that a 1 MiB string reaches the JSON parser and the schemas; a 2 MiB payload
# is over it. (The shipped default is 64 KiB.)
MAX_PAYLOAD = 1_536 * 1024
MIB = 1024 * 1024
ACCEPTED = frozenset({"SEK", "EUR"})
# Same length as the ids the sender puts in its place, so a payload's size stays exact.
PLACEHOLDER = "fz-XXXXXXXX"

FUZZ = settings(deadline=None, derandomize=True, database=None, print_blob=False,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large,
                                       HealthCheck.filter_too_much])

# -- valid params of every command: never sent as they are, only mutated into bad ones ------

SEK = {"amount": 10000, "currency": "SEK"}
BASE_PARAMS: dict[str, dict[str, Any]] = {
    "drawer.open": {"reason": "no_sale", "note": "n"},
    "print.receipt": {"reprint_of": "job-1", "copies": 1, "open_drawer": False},
    "print.raw": {"data": "G0A="},
    "session.open": {"starting_float": {"amount": 50000, "currency": "SEK"}, "note": "n"},
    "session.adjust": {"direction": "add", "amount": dict(SEK), "note": "n"},
    "payment.record": {"kind": "cash_sale", "tendered": {"amount": 20000, "currency": "SEK"},
                       "change": {"amount": 5000, "currency": "SEK"}, "reference": "r"},
    "session.close": {"counted": [{"amount": 1, "currency": "SEK"}],
                      "leave_in_drawer": [{"amount": 0, "currency": "SEK"}]},
    "session.correct": {"session_id": "s-1", "counted": {"amount": 1, "currency": "SEK"},
                        "approval": {"employee": "m1", "role": "manager",
                                     "reason": "a note found"}},
    "session.report": {"kind": "x", "print": False},
    "cash.transfer_out": {"to": {"kind": "safe", "id": "safe-1"}, "amount": [dict(SEK)],
                          "bag": "b1"},
    "cash.transfer_in": {"from": {"kind": "safe", "id": "safe-1"}, "amount": dict(SEK)},
    "cash.reconciliation": {"transfer_id": "R1-T1", "status": "reconciled",
                            "by": {"role": "system"}},
    "counter.count": {"device": "coins", "action": "start"},
    "cmd.status": {"of_cmd_id": "c-1"},
    "state.get": {},
}
NAMES = sorted(BASE_PARAMS)
# An ISO-shaped currency the register does not take: what answers, per command. A session
# is open, so session.open refuses that first; session.correct refuses the session id first.
UNACCEPTED_CURRENCY = {"session.open": "session_already_open",
                       "session.correct": "invalid_payload"}

Path_ = tuple[str | int, ...]


def envelope(params: Any, **changes: Any) -> dict[str, Any]:
    body: dict[str, Any] = {"v": 1, "cmd_id": PLACEHOLDER, "requester": "fuzz",
                            "employee": "e1", "params": params}
    body.update(changes)
    return body


def paths(value: Any, prefix: Path_ = ()) -> Iterator[tuple[Path_, Any]]:
    """Every (path, value) inside a JSON value, the value itself first."""
    yield prefix, value
    if isinstance(value, dict):
        for k, v in value.items():
            yield from paths(v, (*prefix, k))
    elif isinstance(value, list):
        for i, v in enumerate(value):
            yield from paths(v, (*prefix, i))


def replaced(value: Any, path: Path_, new: Any) -> Any:
    if not path:
        return new
    head, rest = path[0], path[1:]
    if isinstance(value, dict):
        return {**value, head: replaced(value[head], rest, new)}
    out = list(value)
    out[head] = replaced(out[head], rest, new)  # type: ignore[call-overload]
    return out


def dumps(value: Any, dup: tuple[Path_, str, Any] | None = None, at: Path_ = ()) -> str:
    """JSON text (UTF-8 as it is, not escaped); ``dup`` = (path of an object, key, value)
    writes that key there twice."""
    def text(v: Any) -> str:
        return json.dumps(v, ensure_ascii=False)

    if isinstance(value, dict):
        items = [f"{text(k)}:{dumps(v, dup, (*at, k))}" for k, v in value.items()]
        if dup is not None and dup[0] == at:
            items.insert(0, f"{text(dup[1])}:{text(dup[2])}")
            if dup[1] not in value:
                items.insert(0, f"{text(dup[1])}:{text(dup[2])}")
        return "{" + ",".join(items) + "}"
    if isinstance(value, list):
        return "[" + ",".join(dumps(v, dup, (*at, i)) for i, v in enumerate(value)) + "]"
    return text(value)


@dataclass(frozen=True)
class Case:
    kind: str
    name: str  # the command name, the last level of the topic
    payload: bytes
    codes: frozenset[str]  # what the register may answer: nearly always one code
    readable_id: bool  # the reply carries our cmd_id (else cmd_id null, on res/_invalid)

    def _repr_pretty_(self, printer: Any, cycle: bool) -> None:  # hypothesis's printer
        printer.text(repr(self))

    def __repr__(self) -> str:  # a failing example stays readable with 1 MiB payloads
        shown = self.payload if len(self.payload) <= 300 else (
            self.payload[:200] + b"..." + self.payload[-60:])
        return (f"Case({self.kind}, {self.name!r}, {len(self.payload)} bytes {shown!r}, "
                f"{sorted(self.codes)}, readable_id={self.readable_id})")


def case(kind: str, name: str, body: Any, code: str, *, readable_id: bool = True,
         dup: tuple[Path_, str, Any] | None = None) -> Case:
    text = dumps(body, dup)
    return Case(kind, name, text.encode(), frozenset({code}), readable_id)


# -- values ------------------------------------------------------------------------------------

json_leaf = st.one_of(st.none(), st.booleans(), st.integers(-(2**70), 2**70),
                      st.floats(allow_nan=False, allow_infinity=False), st.text(max_size=20))
json_value = st.recursive(json_leaf, lambda inner: st.one_of(
    st.lists(inner, max_size=4), st.dictionaries(st.text(max_size=8), inner, max_size=4)),
    max_leaves=12)


def wrong_type(original: Any) -> st.SearchStrategy[Any]:
    """A value of another JSON type than ``original`` (never null: optional fields take it)."""
    floats = st.floats(allow_nan=False, allow_infinity=False)
    ints = st.integers(-(2**70), 2**70)
    lists = st.lists(json_value, max_size=3)
    dicts = st.dictionaries(st.text(max_size=8), json_value, max_size=3)
    if isinstance(original, bool):
        return st.one_of(ints, floats, st.text(max_size=10), lists, dicts)
    if isinstance(original, int):
        # 12.0 is not an integer here (StrictInt): only JSON integers are amounts.
        return st.one_of(floats, st.text(max_size=10), st.booleans(), lists, dicts)
    if isinstance(original, str):
        return st.one_of(ints, floats, st.booleans(), lists, dicts)
    if isinstance(original, dict):
        # Not a list: one Money object or a list of them is the same per-currency field.
        return st.one_of(ints, floats, st.booleans(), st.text(max_size=10))
    return st.one_of(ints, floats, st.booleans(), st.text(max_size=10), dicts)


def _is_currency(text: str) -> bool:
    return re.fullmatch(r"[A-Z]{3}", text) is not None


misshapen_currency = st.one_of(
    st.sampled_from(["sek", "Sek", "SE", "SEKK", "", "S3K", " SEK", "SEK\n", "€€€", "ＳＥＫ"]),
    st.text(max_size=6).filter(lambda t: not _is_currency(t)))
unaccepted_currency = st.one_of(
    st.sampled_from(["USD", "XYZ", "AAA", "XXX", "SEE"]),
    st.text(alphabet="ABCDEFGHIJKLMNOPQRSTUVWXYZ", min_size=3, max_size=3)).filter(
    lambda c: c not in ACCEPTED)
bad_amount = st.one_of(
    st.sampled_from([-1, -(2**63), MAX_AMOUNT + 1, 2**63, 2**63 - 1, 2**64, 10**30, 10**300]),
    st.integers(max_value=-1), st.integers(min_value=MAX_AMOUNT + 1))
bad_version = st.one_of(
    st.sampled_from([0, 2, -1, "1", 1.0, True, None, [1], {"v": 1}, 10**30]),
    json_value.filter(lambda v: not (type(v) is int and v == 1)))
bad_cmd_id = st.one_of(
    st.sampled_from(["", "a" * 129, "has space", "é", "a/b", "a+b", "a#", "\u0000", 7, 7.5,
                     None, True, [], {}, ["c-1"]]),
    st.text(max_size=140).filter(lambda t: re.fullmatch(r"[A-Za-z0-9_.:-]{1,128}", t) is None),
    json_value.filter(lambda v: not isinstance(v, str)))
bad_requester = st.one_of(
    st.sampled_from(["", "a" * 65, "pos 1", "pos/1", "pos.1", "é", 1, None, [], {}]),
    st.text(max_size=70).filter(lambda t: re.fullmatch(r"[A-Za-z0-9_-]{1,64}", t) is None))
bad_employee = st.one_of(st.sampled_from(["e" * 65, 1, True, [], {}, 1.5]),
                         st.text(min_size=65, max_size=80),
                         json_value.filter(lambda v: v is not None and not isinstance(v, str)))
bad_time = st.sampled_from([
    "yesterday", "2024-13-01T00:00:00Z", "2024-02-30T12:00:00Z", "2024-01-01T00:00:00",
    "2024-01-01", "", "T", "9999-99-99T99:99:99Z", "2024-01-01T25:00:00Z", [], {}, True,
    "2024-01-01T00:00:00+25:00"])
huge_int_text = st.integers(4301, 20_000).map(lambda n: "9" * n)
command_name = st.sampled_from(NAMES)
# A level of an MQTT topic Mosquitto takes (no wildcards, separators, controls, surrogates).
topic_level = st.text(st.characters(categories=["L", "N", "P", "S", "Zs"],
                                    exclude_characters="/+#"), max_size=40)
unknown_name = st.one_of(
    st.sampled_from(["", "State.Get", "state.get ", " state.get", "drawer.open\u200b",
                     "session", "session.open.now", "cmd.status2", "x" * 60_000]),
    topic_level).filter(lambda n: n not in COMMAND_PARAMS)


# -- cases, one strategy per kind of bad input -------------------------------------------------

@st.composite
def wrong_type_case(draw: st.DrawFn) -> Case:
    name = draw(command_name)
    params = BASE_PARAMS[name]
    path, original = draw(st.sampled_from(list(paths(params))))
    value = draw(wrong_type(original))
    return case("wrong_type", name, envelope(replaced(params, path, value)), "invalid_payload")


@st.composite
def extra_key_case(draw: st.DrawFn) -> Case:
    name = draw(command_name)
    params = BASE_PARAMS[name]
    objects = [p for p, v in paths(params) if isinstance(v, dict)]
    path = draw(st.sampled_from(objects))
    key = "zz-" + draw(st.text(max_size=10))
    value = draw(json_value)
    target = replaced(params, path, {**_at(params, path), key: value})
    if draw(st.booleans()):
        return case("extra_key", name, envelope(target), "invalid_payload")
    return case("extra_key", name, envelope(params, **{key: value}), "invalid_payload")


def _at(value: Any, path: Path_) -> Any:
    for step in path:
        value = value[step]
    return value


def _amount_paths(name: str) -> list[Path_]:
    return [p for p, v in paths(BASE_PARAMS[name])
            if p and p[-1] == "amount" and type(v) is int]


def _currency_paths(name: str) -> list[Path_]:
    return [p for p, _ in paths(BASE_PARAMS[name]) if p and p[-1] == "currency"]


MONEY_NAMES = [n for n in NAMES if _amount_paths(n)]


@st.composite
def amount_case(draw: st.DrawFn) -> Case:
    name = draw(st.sampled_from(MONEY_NAMES))
    path = draw(st.sampled_from(_amount_paths(name)))
    value = draw(bad_amount)
    return case("amount", name, envelope(replaced(BASE_PARAMS[name], path, value)),
                "amount_out_of_range")


@st.composite
def huge_number_case(draw: st.DrawFn) -> Case:
    """More digits than Python reads (4300): the register cannot read it as JSON."""
    name = draw(st.sampled_from(MONEY_NAMES))
    path = draw(st.sampled_from(_amount_paths(name)))
    text = dumps(envelope(replaced(BASE_PARAMS[name], path, "@@BIG@@")))
    digits = draw(huge_int_text)
    payload = text.replace('"@@BIG@@"', ("-" if draw(st.booleans()) else "") + digits)
    return Case("huge_number", name, payload.encode(), frozenset({"invalid_json"}), False)


@st.composite
def currency_case(draw: st.DrawFn) -> Case:
    name = draw(st.sampled_from(MONEY_NAMES))
    path = draw(st.sampled_from(_currency_paths(name)))
    if draw(st.booleans()):
        value, code = draw(misshapen_currency), "invalid_payload"
    else:
        value = draw(unaccepted_currency)
        code = UNACCEPTED_CURRENCY.get(name, "currency_not_accepted")
    return case("currency", name, envelope(replaced(BASE_PARAMS[name], path, value)), code)


ENVELOPE_FIELDS = ["v", "v-missing", "cmd_id", "cmd_id-missing", "requester",
                   "requester-missing", "employee", "issued_at", "expires_at", "params"]


@st.composite
def envelope_case(draw: st.DrawFn, field: str) -> Case:
    name = draw(command_name)
    params = BASE_PARAMS[name]
    if field == "v":
        return case("v", name, envelope(params, v=draw(bad_version)), "unsupported_version")
    if field == "v-missing":
        body = envelope(params)
        del body["v"]
        return case("v", name, body, "unsupported_version")
    if field == "cmd_id":
        return case("cmd_id", name, envelope(params, cmd_id=draw(bad_cmd_id)),
                    "invalid_payload", readable_id=False)
    if field == "cmd_id-missing":
        body = envelope(params)
        del body["cmd_id"]
        return case("cmd_id", name, body, "invalid_payload", readable_id=False)
    if field == "requester":
        return case("requester", name, envelope(params, requester=draw(bad_requester)),
                    "invalid_payload")
    if field == "requester-missing":
        body = envelope(params)
        del body["requester"]
        return case("requester", name, body, "invalid_payload")
    if field == "employee":
        return case("employee", name, envelope(params, employee=draw(bad_employee)),
                    "invalid_payload")
    if field in ("issued_at", "expires_at"):
        return case(field, name, envelope(params, **{field: draw(bad_time)}), "invalid_payload")
    value = draw(st.one_of(st.lists(json_value, max_size=3), st.text(max_size=10),
                           st.integers(), st.booleans()))
    return case("params", name, envelope(value), "invalid_payload")


@st.composite
def unknown_command_case(draw: st.DrawFn) -> Case:
    params = BASE_PARAMS[draw(command_name)]
    return case("unknown_command", draw(unknown_name), envelope(params), "unknown_command")


def _some_body(draw: st.DrawFn) -> tuple[str, dict[str, Any]]:
    name = draw(command_name)
    return name, envelope(BASE_PARAMS[name])


@st.composite
def invalid_utf8_case(draw: st.DrawFn) -> Case:
    name, body = _some_body(draw)
    text = dumps(body).encode()
    bad = draw(st.sampled_from([b"\xff", b"\xfe", b"\xc0\x80", b"\xc3", b"\xe2\x82",
                                b"\xed\xa0\x80", b"\xed\xbf\xbf", b"\xf4\x90\x80\x80",
                                b"\xf8\x88\x80\x80\x80", b"\x80", b"\xbf\xbf"]))
    at = draw(st.integers(0, len(text)))
    return Case("invalid_utf8", name, text[:at] + bad + text[at:],
                frozenset({"invalid_json"}), False)


@st.composite
def random_bytes_case(draw: st.DrawFn) -> Case:
    """Bytes that are not UTF-8 JSON text at all."""
    data = draw(st.binary(min_size=0, max_size=200))
    try:
        json.loads(data.decode("utf-8"))
    except (UnicodeDecodeError, ValueError, RecursionError):
        return Case("random_bytes", draw(command_name), data, frozenset({"invalid_json"}),
                    False)
    return Case("random_bytes", draw(command_name), b"\xff" + data,
                frozenset({"invalid_json"}), False)


@st.composite
def not_json_case(draw: st.DrawFn) -> Case:
    name, body = _some_body(draw)
    text = dumps(body)
    how = draw(st.sampled_from(["truncated", "trailing", "single_quotes", "comment", "text",
                                "empty", "bom"]))
    if how == "truncated":
        payload = text[: draw(st.integers(0, len(text) - 1))]
    elif how == "trailing":
        payload = text + draw(st.sampled_from(["x", "}", ",", " {}", "\x00", "]"]))
    elif how == "single_quotes":
        payload = text.replace('"', "'")
    elif how == "comment":
        payload = text[:1] + "/* c */" + text[1:]
    elif how == "text":
        payload = draw(st.text(max_size=60))
        with contextlib.suppress(ValueError, RecursionError):
            json.loads(payload)
            payload = "{" + payload  # it was JSON: now it is not
    elif how == "empty":
        payload = draw(st.sampled_from(["", " ", "\n", "\t\r\n"]))
    else:
        payload = "\ufeff" + text  # a byte order mark is not JSON
    return Case("not_json", name, payload.encode(), frozenset({"invalid_json"}), False)


@st.composite
def constant_case(draw: st.DrawFn) -> Case:
    """NaN, Infinity, -Infinity: JavaScript, not JSON."""
    name = draw(command_name)
    params = BASE_PARAMS[name]
    body = envelope(params)
    places = [("params", *p) for p, _ in paths(params)] + [("v",), ("employee",)]
    path = draw(st.sampled_from(places))
    text = dumps(replaced(body, path, "@@C@@"))
    constant = draw(st.sampled_from(["NaN", "Infinity", "-Infinity"]))
    return Case("constant", name, text.replace('"@@C@@"', constant).encode(),
                frozenset({"invalid_json"}), False)


@st.composite
def duplicate_key_case(draw: st.DrawFn) -> Case:
    name = draw(command_name)
    body = envelope(BASE_PARAMS[name])
    objects = [(p, v) for p, v in paths(body) if isinstance(v, dict)]
    path, obj = draw(st.sampled_from(objects))
    key = draw(st.one_of(st.sampled_from(sorted(obj)), st.text(max_size=6))) if obj else (
        draw(st.text(max_size=6)))
    value = draw(json_leaf)
    return case("duplicate_key", name, body, "invalid_json", readable_id=False,
                dup=(path, key, value))


@st.composite
def non_object_case(draw: st.DrawFn) -> Case:
    name, body = _some_body(draw)
    value = draw(st.one_of(json_leaf, st.lists(json_value, max_size=4), st.just([body])))
    return Case("non_object", name, json.dumps(value).encode(), frozenset({"invalid_json"}),
                False)


@st.composite
def deep_case(draw: st.DrawFn) -> Case:
    """Nesting past the register's 64 levels, up to far past what any parser follows."""
    name = draw(command_name)
    depth = draw(st.sampled_from([65, 1_000, 10_000, 100_000, 200_000])
                 | st.integers(65, 2_000) | st.integers(2_000, 150_000))
    opener = draw(st.sampled_from(["[", '{"a":', "[{\"a\":"]))
    closer = {"[": "]", '{"a":': "}", "[{\"a\":": "}]"}[opener]
    inner = opener * depth + "1" + (closer * depth if draw(st.booleans()) else "")
    where = draw(st.sampled_from(["whole", "params", "in_params", "v"]))
    if where == "whole":
        text = inner
    else:
        path: Path_ = {"params": ("params",), "in_params": ("params", "zz"), "v": ("v",)}[where]
        body = envelope({**BASE_PARAMS[name], "zz": 0})
        text = dumps(replaced(body, path, "@@D@@")).replace('"@@D@@"', inner)
    payload = text.encode()
    code = "payload_too_large" if len(payload) > MAX_PAYLOAD else "invalid_json"
    return Case("deep", name, payload, frozenset({code}), False)


def _big(draw: st.DrawFn, size: int) -> str:
    return draw(st.sampled_from(["x", "é", "€", "𝄞", "\\"])) * size


@st.composite
def huge_string_case(draw: st.DrawFn) -> Case:
    """A 1 MiB string (within the register's size limit) in one field."""
    name = draw(command_name)
    params = BASE_PARAMS[name]
    char = draw(st.sampled_from(["x", "é", "€", "𝄞"]))
    size = draw(st.integers(MIB // 4, MAX_PAYLOAD // 4 - 1024)) if char == "𝄞" else (
        MIB if char == "x" else MAX_PAYLOAD // len(char.encode()) - 4096)
    big = char * size
    strings = [p for p, v in paths(params) if isinstance(v, str)]
    where = draw(st.sampled_from(["param", "key", "cmd_id", "v", "employee", "requester"]
                                 if strings else ["key", "cmd_id", "v", "employee",
                                                  "requester"]))
    if where == "param":  # longer, in characters, than any field takes (print.raw: 1,000,000)
        body = envelope(replaced(params, draw(st.sampled_from(strings)), "x" * MIB))
        return case("huge_string", name, body, "invalid_payload")
    if where == "key":
        return case("huge_string", name, envelope({**params, big: 1}), "invalid_payload")
    code = {"cmd_id": "invalid_payload", "v": "unsupported_version"}.get(where,
                                                                         "invalid_payload")
    return case("huge_string", name, envelope(params, **{where: big}), code,
                readable_id=where != "cmd_id")


def padded(name: str, size: int) -> bytes:
    """A command of exactly ``size`` bytes: its params get an unknown field to reach it."""
    body = envelope({**BASE_PARAMS[name], "zz": ""})
    text = dumps(body).encode()
    return text.replace(b'"zz":""', b'"zz":"' + b"p" * (size - len(text)) + b'"')


@st.composite
def at_limit_case(draw: st.DrawFn) -> Case:
    """At the limit or a few bytes under: parsed (and refused for its unknown field)."""
    name = draw(command_name)
    payload = padded(name, MAX_PAYLOAD - draw(st.integers(0, 3)))
    return Case("at_limit", name, payload, frozenset({"invalid_payload"}), True)


@st.composite
def too_large_case(draw: st.DrawFn) -> Case:
    """One byte over the limit, or much more, and whatever it holds: refused for its size,
    before any parsing (invalid UTF-8 and broken JSON get payload_too_large too)."""
    name = draw(command_name)
    size = MAX_PAYLOAD + draw(st.sampled_from([1, 2, 1000, MIB]) | st.integers(1, 2 * MIB))
    filling = draw(st.sampled_from(["valid", "invalid_utf8", "not_json", "deep", "zeros"]))
    if filling == "valid":
        payload = padded(name, size)
    elif filling == "invalid_utf8":
        payload = b"\xff\xfe" * (size // 2) + b"\xff" * (size % 2)
    elif filling == "not_json":
        payload = b"{" + b"," * (size - 1)
    elif filling == "deep":
        payload = b"[" * size
    else:
        payload = b"\x00" * size
    assert len(payload) == size
    return Case("too_large", name, payload, frozenset({"payload_too_large"}), False)


KINDS = {"wrong_type", "extra_key", "amount", "huge_number", "currency", "v", "cmd_id",
         "requester", "employee", "issued_at", "expires_at", "params", "unknown_command",
         "invalid_utf8", "random_bytes", "not_json", "constant", "duplicate_key", "non_object",
         "deep", "huge_string", "at_limit", "too_large"}
small_case = st.one_of(
    wrong_type_case(), extra_key_case(), amount_case(), currency_case(),
    *(envelope_case(f) for f in ENVELOPE_FIELDS),
    unknown_command_case(), invalid_utf8_case(), random_bytes_case(), not_json_case(),
    constant_case(), duplicate_key_case(), non_object_case(), huge_number_case())
big_case = st.one_of(deep_case(), huge_string_case(), at_limit_case(), too_large_case())
any_case = st.one_of(small_case, small_case, small_case, big_case)


# -- the bare MQTT peer --------------------------------------------------------------------------

@dataclass
class Reply:
    topic: str
    body: dict[str, Any]


class RawPeer:
    """A bare MQTT 5 client on its own event loop in a thread, so hypothesis's synchronous
    tests can use one connection: publish any bytes on any ``cmd/`` topic and get the replies,
    matched by Correlation Data."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.replies: dict[bytes, list[Reply]] = {}
        self._waiters: dict[bytes, asyncio.Future[None]] = {}
        self._loop = asyncio.new_event_loop()
        self._ready = threading.Event()
        self._error: BaseException | None = None
        self._client: aiomqtt.Client | None = None
        self._stop: asyncio.Event | None = None
        self._thread = threading.Thread(target=self._run, name="raw-peer", daemon=True)
        self._count = 0
        self.status: dict[str, Any] | None = None
        self._status_seen = threading.Event()
        self.states = 0  # state snapshots the register has published
        self._state_cond = threading.Condition()

    def __enter__(self) -> RawPeer:
        self._thread.start()
        if not self._ready.wait(15):
            raise TimeoutError("the raw MQTT peer did not connect")
        if self._error is not None:
            raise self._error
        return self

    def __exit__(self, *exc: object) -> None:
        if self._stop is not None:
            self._loop.call_soon_threadsafe(self._stop.set)
        self._thread.join(15)

    def _run(self) -> None:
        try:
            self._loop.run_until_complete(self._main())
        except BaseException as e:  # surfaced to the test thread
            self._error = e
            self._ready.set()
        finally:
            self._loop.close()

    async def _main(self) -> None:
        self._stop = asyncio.Event()
        async with aiomqtt.Client("127.0.0.1", self.port, identifier="fuzz-peer",
                                  protocol=aiomqtt.ProtocolVersion.V5,
                                  max_inflight_messages=100) as client:
            self._client = client
            await client.subscribe(f"{BASE}/res/#", qos=1)
            await client.subscribe(f"{BASE}/status", qos=1)
            await client.subscribe(f"{BASE}/state", qos=1)
            self._ready.set()
            pump = asyncio.create_task(self._pump(client))
            await self._stop.wait()
            pump.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await pump

    async def _pump(self, client: aiomqtt.Client) -> None:
        async for message in client.messages:
            assert isinstance(message.payload, bytes)
            if message.topic.value == f"{BASE}/status":
                self.status = json.loads(message.payload)
                if self.status.get("online"):
                    self._status_seen.set()
                continue
            if message.topic.value == f"{BASE}/state":
                with self._state_cond:
                    self.states += 1
                    self._state_cond.notify_all()
                continue
            corr = getattr(message.properties, "CorrelationData", None)
            body = json.loads(message.payload)
            if corr is None:
                continue
            self.replies.setdefault(corr, []).append(Reply(message.topic.value, body))
            waiter = self._waiters.pop(corr, None) if body.get("phase") == "result" else None
            if waiter is not None and not waiter.done():
                waiter.set_result(None)

    def wait_online(self, timeout: float = 30.0) -> None:
        if not self._status_seen.wait(timeout):
            raise TimeoutError("the register never published status online")

    def wait_state(self, seen: int, timeout: float) -> None:
        """Until the register publishes a state snapshot after the ``seen``-th, or timeout."""
        with self._state_cond:
            self._state_cond.wait_for(lambda: self.states > seen, timeout)

    def next_id(self) -> str:
        self._count += 1
        return f"fz-{self._count:08d}"

    async def _send_all(self, items: list[tuple[str, bytes, bytes]],
                        timeout: float, expect_reply: bool) -> None:  # noqa: ASYNC109
        assert self._client is not None
        waits = []
        for topic, payload, corr in items:
            waiter = self._loop.create_future()
            self._waiters[corr] = waiter
            waits.append(waiter)
            props = Properties(PacketTypes.PUBLISH)
            props.ResponseTopic = RES
            props.CorrelationData = corr
            await self._client.publish(topic, payload, qos=1, properties=props)
        if expect_reply:
            async with asyncio.timeout(timeout):
                await asyncio.gather(*waits)

    def send(self, items: list[tuple[str, bytes, bytes]], timeout: float = 30.0,
             expect_reply: bool = True) -> None:
        """Publish every (topic, payload, correlation), then wait for each one's result."""
        future = asyncio.run_coroutine_threadsafe(
            self._send_all(items, timeout, expect_reply), self._loop)
        future.result(timeout + 30)


# -- the register ----------------------------------------------------------------------------

@dataclass
class Rig:
    peer: RawPeer
    register: RegisterProcess
    journal: Path
    log: Path
    rejected_ids: list[str]  # bad commands with a readable cmd_id sent so far
    kinds: Counter[str] = field(default_factory=Counter)  # bad commands sent, by kind
    names: Counter[str] = field(default_factory=Counter)  # … by command name

    def alive(self) -> None:
        proc = self.register.proc
        assert proc is not None and proc.poll() is None, (
            f"the register died: {self.log.read_text()[-3000:]}")

    def command(self, name: str, params: dict[str, Any], **env: Any) -> Reply:
        """A valid command; its result."""
        cmd_id = self.peer.next_id()
        body = envelope(params, cmd_id=cmd_id, **env)
        corr = cmd_id.encode()
        self.peer.send([(f"{BASE}/cmd/{name}", json.dumps(body).encode(), corr)])
        return self.peer.replies[corr][-1]

    def state(self) -> dict[str, Any]:
        reply = self.command("state.get", {})
        assert reply.body["status"] == "ok", reply.body
        return dict(reply.body["data"]["state"])

    def figures(self) -> dict[str, Any]:
        """What must not change: the session and the last close, as state.get tells them."""
        state = self.state()
        return {"session": state["session"], "last_closed": state["last_closed"]}

    def session_events(self) -> list[dict[str, Any]]:
        return [e for e in journal_events(self.journal) if e["type"] != "cmd.rejected"]

    def rss_kib(self) -> int:
        assert self.register.proc is not None
        status = Path(f"/proc/{self.register.proc.pid}/status").read_text()
        match = re.search(r"^VmRSS:\s+(\d+) kB", status, re.MULTILINE)
        assert match is not None
        return int(match.group(1))

    def send_cases(self, cases: list[Case]) -> None:
        """Send bad commands (pipelined) and check each answer; then a valid state.get."""
        items, sent = [], []
        for c in cases:
            cmd_id = self.peer.next_id()
            payload = c.payload.replace(PLACEHOLDER.encode(), cmd_id.encode())
            corr = f"corr-{cmd_id}".encode()
            items.append((f"{BASE}/cmd/{c.name}", payload, corr))
            sent.append((c, cmd_id, corr))
            self.kinds[c.kind] += 1
            self.names[c.name] += 1
        self.peer.send(items)
        for c, cmd_id, corr in sent:
            replies = self.peer.replies[corr]
            assert len(replies) == 1, (c, [r.body for r in replies])
            reply = replies[0]
            body = reply.body
            assert body["phase"] == "result" and body["status"] == "error", (c, body)
            assert body["error"]["code"] in c.codes, (c, body["error"])
            if c.readable_id:
                assert body["cmd_id"] == cmd_id, (c, body)
                assert reply.topic == RES, (c, reply.topic)
                self.rejected_ids.append(cmd_id)
            else:
                assert body["cmd_id"] is None, (c, body)
                assert reply.topic == INVALID, (c, reply.topic)
            size = len(json.dumps(body))
            assert size < 8 * 1024, (c, "the answer echoes the payload", size)
        self.alive()


@pytest.fixture(scope="module")
def rig(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Rig]:
    tmp = tmp_path_factory.mktemp("fuzz-commands")
    journal = tmp / "journal.db"
    log = tmp / "register.log"
    with MosquittoBroker(tmp / "broker") as broker:
        config = write_config(tmp / "r1.toml", port=broker.port, journal=journal, consumers=[],
                              commands={"max_payload_bytes": MAX_PAYLOAD})
        register = RegisterProcess(config, log)
        with RawPeer(broker.port) as peer:
            register.start()
            try:
                peer.wait_online()
                rig = Rig(peer, register, journal, log, [])
                opened = rig.command("session.open", {"starting_float": {
                    "amount": 100000, "currency": "SEK"}})
                assert opened.body["status"] == "ok", opened.body
                sale = rig.command("payment.record", {
                    "kind": "cash_sale", "tendered": {"amount": 20000, "currency": "SEK"},
                    "change": {"amount": 5000, "currency": "SEK"}})
                assert sale.body["status"] == "ok", sale.body
                added = rig.command("session.adjust", {
                    "direction": "add", "amount": {"amount": 2500, "currency": "EUR"}})
                assert added.body["status"] == "ok", added.body
                yield rig
            finally:
                register.terminate()


def test_every_base_command_is_valid_so_each_mutation_is_the_only_fault() -> None:
    topics = RegisterTopics("S1", "R1")
    for name, params in BASE_PARAMS.items():
        payload = json.dumps(envelope(params)).encode()
        parsed = parse_command(topics, name, payload, RES, b"c", MAX_PAYLOAD)
        assert isinstance(parsed, Command), (name, parsed)
    assert set(BASE_PARAMS) == set(COMMAND_PARAMS)


def test_bad_commands_get_their_error_code_and_change_nothing(rig: Rig) -> None:
    figures = rig.figures()
    assert figures["session"]["expected_cash"] == {"SEK": 115000, "EUR": 2500}, figures
    events = rig.session_events()
    journaled_before = len(rig.rejected_ids)

    @settings(FUZZ, max_examples=160)
    @given(st.lists(any_case, min_size=1, max_size=6))
    def batch(cases: list[Case]) -> None:
        rig.send_cases(cases)
        assert rig.figures() == figures

    batch()
    assert rig.figures() == figures
    assert rig.session_events() == events
    assert len(rig.rejected_ids) - journaled_before > 100
    rejected = Counter(e["cause"]["cmd_id"] for e in journal_events(rig.journal)
                       if e["type"] == "cmd.rejected")
    assert rejected == Counter(rig.rejected_ids)  # each bad command journaled exactly once
    assert set(rig.kinds) >= KINDS, KINDS - set(rig.kinds)
    assert set(rig.names) >= set(COMMAND_PARAMS), set(COMMAND_PARAMS) - set(rig.names)
    print(f"bad commands by kind: {dict(rig.kinds)}")


# -- bad commands found by the fuzzing, kept as examples -----------------------------------------

EXAMPLES: list[tuple[str, str, bytes, str, bool]] = [
    # (what, command, payload, code, readable cmd_id)
    ("a lone surrogate in employee", "session.adjust",
     b'{"v":1,"cmd_id":"fz-XXXXXXXX","requester":"fuzz","employee":"\\udc00","params":{}}',
     "invalid_json", False),
    ("a lone surrogate in a note", "session.adjust",
     b'{"v":1,"cmd_id":"fz-XXXXXXXX","requester":"fuzz","employee":"e1","params":{"direction":'
     b'"add","amount":{"amount":1,"currency":"SEK"},"note":"\\ud800"}}', "invalid_json", False),
    ("a lone surrogate in a key", "session.adjust",
     b'{"v":1,"cmd_id":"fz-XXXXXXXX","requester":"fuzz","employee":"e1","params":{"\\ud800":1}}',
     "invalid_json", False),
    ("a surrogate pair is a character", "session.adjust",
     b'{"v":1,"cmd_id":"fz-XXXXXXXX","requester":"fuzz","employee":"e1","params":{"direction":'
     b'"add","amount":{"amount":-1,"currency":"SEK"},"note":"\\ud83d\\ude00"}}',
     "amount_out_of_range", True),
    ("issued in the year 9999", "session.open",
     b'{"v":1,"cmd_id":"fz-XXXXXXXX","requester":"fuzz","employee":"e1",'
     b'"issued_at":"9999-12-31T23:59:59Z","params":{"starting_float":{"amount":1,'
     b'"currency":"SEK"}}}', "session_already_open", True),
    ("expired in the year 1, east of Greenwich", "session.open",
     b'{"v":1,"cmd_id":"fz-XXXXXXXX","requester":"fuzz","employee":"e1",'
     b'"expires_at":"0001-01-01T00:00:00+05:00","params":{"starting_float":{"amount":1,'
     b'"currency":"SEK"}}}', "expired", True),
    ("1,000 levels of [ in params", "session.adjust",
     b'{"v":1,"cmd_id":"fz-XXXXXXXX","requester":"fuzz","params":{"a":' + b"[" * 1000
     + b"]" * 1000 + b"}}", "invalid_json", False),
    ("65 levels of [ in params", "session.adjust",
     b'{"v":1,"cmd_id":"fz-XXXXXXXX","requester":"fuzz","params":{"a":' + b"[" * 65
     + b"]" * 65 + b"}}", "invalid_json", False),
    ("62 levels of [ in params", "session.adjust",
     b'{"v":1,"cmd_id":"fz-XXXXXXXX","requester":"fuzz","params":{"a":' + b"[" * 62
     + b"]" * 62 + b"}}", "invalid_payload", True),
    ("2 MiB of invalid JSON and invalid UTF-8", "state.get",
     b"\xff{" * MIB, "payload_too_large", False),
]


@pytest.mark.parametrize(("what", "name", "payload", "code", "readable"), EXAMPLES,
                         ids=[e[0] for e in EXAMPLES])
def test_bad_command_examples(rig: Rig, what: str, name: str, payload: bytes, code: str,
                              readable: bool) -> None:
    figures = rig.figures()
    rig.send_cases([Case(what, name, payload, frozenset({code}), readable)])
    assert rig.figures() == figures


# -- memory --------------------------------------------------------------------------------------

BATCH = 20
MEASURED = 1_500  # bad commands between the two measures
# SQLite's page cache (cache_size: 2,000 KiB by default) grows with the journal until it is
# full: about 2 MiB of RSS over the first ~1,800 rejections journaled, then flat (measured:
# +100 KiB over the next 2,000). The first measure is taken once the journal (all new in
# this daemon's life) is past that size, so that growth is not counted.
CACHE_FULL = 2_300 * 1024
# RSS is sampled after every batch; each end's measure is the lowest of WINDOW samples. A
# leak of 1 KiB per command would raise it by 1,100 KiB or more between the two windows
# (1,100+ commands apart): the bound is well under that, and far above the noise seen
# (+20 KiB over 1,500 commands).
WINDOW = 10
MAX_GROWTH_KIB = 700
# Payloads of 1 to 3.5 MiB leave freed memory in glibc's heap, taken again by later ones
# (samples +5 to +10 MiB that drop back): they are sent while warming up, and the peak over
# the whole run must stay within a few of them, however many were sent.
MAX_PEAK_KIB = 24 * 1024


def test_memory_stays_flat_over_thousands_of_bad_commands(rig: Rig) -> None:
    """Small bad commands are measured (1 MiB payloads would hide a leak in glibc's heap
    noise; they run the same code), after a warm-up that sends big ones too."""
    figures = rig.figures()
    sent: list[int] = [0]
    samples: list[tuple[int, int]] = []  # (bad commands sent since the first measure, KiB)
    peak: list[int] = [0]
    big_sent: list[int] = [0]

    def journal_bytes() -> int:
        """The journal's size as SQLite sees it (its WAL included)."""
        con = sqlite3.connect(f"file:{rig.journal}?mode=ro", uri=True)
        try:
            pages = con.execute("PRAGMA page_count").fetchone()[0]
            size = con.execute("PRAGMA page_size").fetchone()[0]
        finally:
            con.close()
        return int(pages) * int(size)

    @settings(FUZZ, max_examples=300)
    @given(st.lists(small_case, min_size=BATCH, max_size=BATCH),
           st.lists(big_case, min_size=2, max_size=2))
    def batch(cases: list[Case], big: list[Case]) -> None:
        if samples and samples[-1][0] >= MEASURED:
            return  # done: the remaining examples cost nothing
        warming = not samples and journal_bytes() < CACHE_FULL
        rig.send_cases(cases + big if warming else cases)
        rss = rig.rss_kib()
        peak[0] = max(peak[0], rss)
        if warming:
            big_sent[0] += len(big)
            return
        if samples:
            sent[0] += len(cases)
        samples.append((sent[0], rss))

    warm = sum(rig.kinds.values())
    batch()
    assert samples and samples[-1][0] >= MEASURED, "not enough examples to measure"
    warm = sum(rig.kinds.values()) - warm - samples[-1][0]
    start = min(kib for _, kib in samples[:WINDOW])
    end = min(kib for _, kib in samples[-WINDOW:])
    print(f"daemon RSS {start} KiB -> {end} KiB over {samples[-1][0]} bad commands, after "
          f"{warm} to warm up ({big_sent[0]} of 1 to 3.5 MiB); peak {peak[0]} KiB")
    assert end - start < MAX_GROWTH_KIB, samples
    assert big_sent[0] >= 50
    assert peak[0] - start < MAX_PEAK_KIB
    rig.alive()
    assert rig.figures() == figures
