"""Two-phase command replies (Zigbee2MQTT style): an ``ack`` then a ``result``."""

from __future__ import annotations

from enum import StrEnum
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict

from .errors import CommandRefused, ErrorCode
from .events import utc_timestamp


class Phase(StrEnum):
    ACK = "ack"
    RESULT = "result"


class ReplyStatus(StrEnum):
    ACCEPTED = "accepted"
    OK = "ok"
    ERROR = "error"
    INDETERMINATE = "indeterminate"


class ReplyError(BaseModel):
    model_config = ConfigDict(extra="forbid")

    code: str
    message: str
    details: dict[str, Any] = {}


class Reply(BaseModel):
    """The shape of every message on ``res/{requester}`` or the command's Response Topic."""

    model_config = ConfigDict(extra="forbid")

    v: Literal[1] = 1
    cmd_id: str | None
    command: str | None
    phase: Phase
    status: ReplyStatus
    duplicate: bool = False
    data: dict[str, Any] | None = None
    error: ReplyError | None = None
    ts: str


def ack_reply(cmd_id: str, command: str) -> dict[str, Any]:
    return {"v": 1, "cmd_id": cmd_id, "command": command, "phase": "ack",
            "status": "accepted", "duplicate": False, "ts": utc_timestamp()}


def ok_reply(cmd_id: str, command: str, data: dict[str, Any]) -> dict[str, Any]:
    return {"v": 1, "cmd_id": cmd_id, "command": command, "phase": "result", "status": "ok",
            "data": data, "duplicate": False, "ts": utc_timestamp()}


def error_reply(cmd_id: str | None, command: str | None, refusal: CommandRefused) -> dict[str, Any]:
    status = "indeterminate" if refusal.code is ErrorCode.INDETERMINATE else "error"
    return {"v": 1, "cmd_id": cmd_id, "command": command, "phase": "result", "status": status,
            "error": refusal.as_error(), "duplicate": False, "ts": utc_timestamp()}
