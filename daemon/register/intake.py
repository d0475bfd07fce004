"""Turning a ``cmd/{name}`` message into a command, or into the error its sender gets.

Order of checks (each answered with its own code): size before parsing
(``payload_too_large``), UTF-8 JSON object without duplicate keys (``invalid_json``), a
readable ``cmd_id`` (else the answer goes to ``res/_invalid`` with ``cmd_id: null``),
``v`` (``unsupported_version``), the command name (``unknown_command``), then the envelope
and params schemas (``invalid_payload``, or ``amount_out_of_range`` for an amount outside the
protocol's bounds).
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel, ValidationError

from ..contract.commands import CMD_ID_PATTERN, COMMAND_PARAMS, ID_PATTERN, CommandEnvelope
from ..contract.errors import CommandRefused, ErrorCode
from ..contract.topics import INVALID_REQUESTER, RegisterTopics

_CMD_ID_RE = re.compile(CMD_ID_PATTERN)
_ID_RE = re.compile(ID_PATTERN)
_MAX_ERRORS_SHOWN = 10
# What a refusal quotes of the payload (a key, a version, a command name) is cut to this:
# an answer and its cmd.rejected event stay small whatever was sent.
_MAX_QUOTED = 80
# Deeper JSON is refused (invalid_json): the deepest command (a receipt's blocks) needs ~8.
_MAX_DEPTH = 64
_SURROGATE_ESCAPE = re.compile(r"\\u[dD][89a-fA-F]")


@dataclass(frozen=True)
class Command:
    name: str
    envelope: CommandEnvelope
    params: BaseModel
    reply_to: str
    correlation: bytes | None


@dataclass(frozen=True)
class Rejected:
    """A message that is not a valid command. With a ``cmd_id`` it is journaled as rejected
    (so a resend gets the same answer); without one it is only answered."""

    name: str | None
    cmd_id: str | None
    requester: str | None
    employee: str | None
    reply_to: str
    correlation: bytes | None
    refusal: CommandRefused


def _no_duplicate_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in pairs:
        if key in out:
            raise ValueError(f"duplicate key {key!r}")
        out[key] = value
    return out


def _not_json(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


def _shape_problem(body: Any, payload: bytes, text: str) -> str | None:
    """What JSON parses but a register does not take: nesting past ``_MAX_DEPTH`` (the same
    limit whatever the parser's own recursion limit and the stack it runs on), and a ``\\u``
    escape of a lone surrogate, which is no Unicode character (it could not be journaled or
    answered as UTF-8). Walked only when the raw text could hold either."""
    deep = payload.count(b"[") + payload.count(b"{") > _MAX_DEPTH
    escapes = _SURROGATE_ESCAPE.search(text) is not None
    if not (deep or escapes):
        return None
    stack: list[tuple[Any, int]] = [(body, 1)]
    while stack:
        value, depth = stack.pop()
        if isinstance(value, str):
            if escapes and not _is_unicode(value):
                return "a \\u escape in it is a lone surrogate, not a character"
        elif isinstance(value, dict | list):
            if depth > _MAX_DEPTH:
                return f"it is nested more than {_MAX_DEPTH} levels deep"
            items = value.items() if isinstance(value, dict) else enumerate(value)
            for key, item in items:
                if isinstance(key, str):
                    stack.append((key, depth))
                stack.append((item, depth + 1))
    return None


def _is_unicode(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _clip(text: str) -> str:
    return text if len(text) <= _MAX_QUOTED else f"{text[:_MAX_QUOTED - 1]}…"


def _describe(error: ValidationError, prefix: str) -> tuple[ErrorCode, str, dict[str, Any]]:
    items = error.errors(include_url=False, include_input=False)
    problems = [
        {"field": ".".join(_clip(str(p)) for p in (prefix, *e["loc"]) if p != ""),
         "problem": _clip(e["msg"])}
        for e in items
    ]
    # An amount beyond the protocol's bounds (negative, absurd) gets the specific code.
    bounds = {"greater_than_equal", "less_than_equal"}
    code = ErrorCode.INVALID_PAYLOAD
    if items and all(e["type"] in bounds and "amount" in e["loc"] for e in items):
        code = ErrorCode.AMOUNT_OUT_OF_RANGE
    head = "; ".join(f"{p['field']}: {p['problem']}" for p in problems[:_MAX_ERRORS_SHOWN])
    more = f" (and {len(problems) - _MAX_ERRORS_SHOWN} more)" if len(problems) > 10 else ""
    return code, head + more, {"errors": problems[:50]}


def reply_topic(topics: RegisterTopics, response_topic: str | None,
                requester: str | None) -> str:
    """The command's Response Topic if it is under our ``res/``; else ``res/{requester}``."""
    if response_topic and topics.is_own_response_topic(response_topic):
        return response_topic
    if requester and _ID_RE.match(requester):
        return topics.res(requester)
    return topics.res(INVALID_REQUESTER)


def parse_command(
    topics: RegisterTopics, name: str, payload: bytes, response_topic: str | None,
    correlation: bytes | None, max_bytes: int,
) -> Command | Rejected:
    def reject(code: ErrorCode, message: str, *, cmd_id: str | None = None,
               requester: str | None = None, employee: str | None = None,
               details: dict[str, Any] | None = None) -> Rejected:
        # Without a readable cmd_id the contract answers on res/_invalid, whoever asked.
        to = (reply_topic(topics, response_topic, requester) if cmd_id is not None
              else topics.res(INVALID_REQUESTER))
        return Rejected(name if name in COMMAND_PARAMS else None, cmd_id, requester, employee,
                        to, correlation, CommandRefused(code, message, details))

    if len(payload) > max_bytes:
        return reject(ErrorCode.PAYLOAD_TOO_LARGE,
                      f"the command is {len(payload)} bytes; this register takes at most "
                      f"{max_bytes}", details={"size": len(payload), "max": max_bytes})
    try:
        text = payload.decode("utf-8")
        body = json.loads(text, object_pairs_hook=_no_duplicate_keys, parse_constant=_not_json)
    except UnicodeDecodeError as e:
        return reject(ErrorCode.INVALID_JSON, f"the payload is not UTF-8: {e.reason} at byte "
                      f"{e.start}")
    except (ValueError, RecursionError) as e:
        return reject(ErrorCode.INVALID_JSON, f"the payload is not valid JSON: {e}")
    if problem := _shape_problem(body, payload, text):
        return reject(ErrorCode.INVALID_JSON, f"the payload is not taken as JSON: {problem}")
    if not isinstance(body, dict):
        return reject(ErrorCode.INVALID_JSON,
                      f"the payload must be a JSON object, not {type(body).__name__}")

    raw_id = body.get("cmd_id")
    cmd_id = raw_id if isinstance(raw_id, str) and _CMD_ID_RE.match(raw_id) else None
    raw_requester = body.get("requester")
    requester = (raw_requester if isinstance(raw_requester, str) and _ID_RE.match(raw_requester)
                 else None)
    raw_employee = body.get("employee")
    employee = raw_employee if isinstance(raw_employee, str) and len(raw_employee) <= 64 else None
    ids: dict[str, Any] = {"cmd_id": cmd_id, "requester": requester, "employee": employee}
    if cmd_id is None:
        return reject(ErrorCode.INVALID_PAYLOAD,
                      "cmd_id is missing or not a string of 1-128 characters [A-Za-z0-9_.:-]",
                      requester=requester)
    version = body.get("v")
    if type(version) is not int or version != 1:  # True and 1.0 are not 1 here
        return reject(ErrorCode.UNSUPPORTED_VERSION,
                      f"v is {_clip(repr(version))}; this register speaks version 1 of the "
                      "contract",
                      **ids)
    params_model = COMMAND_PARAMS.get(name)
    if params_model is None:
        return reject(ErrorCode.UNKNOWN_COMMAND,
                      f"no command {_clip(repr(name))}; known: "
                      f"{', '.join(sorted(COMMAND_PARAMS))}", **ids)
    try:
        envelope = CommandEnvelope.model_validate(body)
    except ValidationError as e:
        code, message, details = _describe(e, "")
        return reject(code, message, details=details, **ids)
    try:
        params = params_model.model_validate(envelope.params)
    except ValidationError as e:
        code, message, details = _describe(e, "params")
        return reject(code, message, details=details, **ids)
    return Command(name, envelope, params,
                   reply_topic(topics, response_topic, envelope.requester), correlation)
