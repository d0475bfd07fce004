"""Stable error codes of the MQTT contract (snake_case, never renamed; new ones are added)."""

from __future__ import annotations

from enum import StrEnum
from typing import Any


class ErrorCode(StrEnum):
    INVALID_JSON = "invalid_json"
    INVALID_PAYLOAD = "invalid_payload"
    PAYLOAD_TOO_LARGE = "payload_too_large"
    UNSUPPORTED_VERSION = "unsupported_version"
    UNKNOWN_COMMAND = "unknown_command"
    EXPIRED = "expired"
    SESSION_NOT_OPEN = "session_not_open"
    SESSION_ALREADY_OPEN = "session_already_open"
    CURRENCY_NOT_ACCEPTED = "currency_not_accepted"
    AMOUNT_OUT_OF_RANGE = "amount_out_of_range"
    DEVICE_UNAVAILABLE = "device_unavailable"
    PAPER_OUT = "paper_out"
    COVER_OPEN = "cover_open"
    DRAWER_OPEN = "drawer_open"
    NOT_PERMITTED = "not_permitted"
    INDETERMINATE = "indeterminate"
    UNKNOWN_CMD_ID = "unknown_cmd_id"
    JOURNAL_UNAVAILABLE = "journal_unavailable"
    INTERNAL_ERROR = "internal_error"
    KICK_FAILED = "kick_failed"
    PRINT_FAILED = "print_failed"
    RECOUNT_REQUIRED = "recount_required"  # a close off by more than the limit: count again
    APPROVAL_REQUIRED = "approval_required"  # … and no recount left: a manager must approve
    UNRECONCILED_TRANSFERS = "unreconciled_transfers"  # a close with open cash transfers


class CommandRefused(Exception):
    """A command that cannot be carried out, with the code and message its requester gets."""

    def __init__(
        self, code: ErrorCode, message: str, details: dict[str, Any] | None = None
    ) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.details = details or {}

    def as_error(self) -> dict[str, Any]:
        return {"code": self.code.value, "message": self.message, "details": self.details}
