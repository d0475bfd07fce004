"""The event envelope of ``kassad/v1/{store}/{reg}/evt``: canonical JSON and the hash chain.

``hash`` = lowercase hex SHA-256 of the canonical JSON of the event without ``hash`` and
``replayed``; canonical JSON is ``json.dumps(e, sort_keys=True, separators=(",", ":"),
ensure_ascii=False)`` in UTF-8. The first event of an epoch has ``prev_hash`` of 64 zeros.
"""

from __future__ import annotations

import hashlib
import json
from datetime import UTC, datetime
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

GENESIS_HASH = "0" * 64
UNHASHED_FIELDS = ("hash", "replayed")


class EventType:
    """Event type names (strings on the wire; later issues add their own)."""

    SESSION_OPENED = "session.opened"
    SESSION_ADJUSTED = "session.adjusted"
    SESSION_CLOSED = "session.closed"
    PAYMENT_RECORDED = "payment.recorded"
    DRAWER_KICKED = "drawer.kicked"
    DRAWER_OPENED = "drawer.opened"
    DRAWER_CLOSED = "drawer.closed"
    CMD_REJECTED = "cmd.rejected"
    CMD_INDETERMINATE = "cmd.indeterminate"
    DAEMON_STARTED = "daemon.started"
    DAEMON_STOPPED = "daemon.stopped"
    DAEMON_RELOADED = "daemon.reloaded"  # SIGHUP: which keys took effect, which wait


def canonical_json(obj: Any) -> str:
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def event_hash(event: dict[str, Any]) -> str:
    body = {k: v for k, v in event.items() if k not in UNHASHED_FIELDS}
    return hashlib.sha256(canonical_json(body).encode()).hexdigest()


def utc_timestamp(moment: datetime | None = None) -> str:
    """RFC 3339 UTC with milliseconds: ``2026-11-25T17:02:11.204Z``."""
    moment = (moment or datetime.now(UTC)).astimezone(UTC)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}Z"


class EventEnvelope(BaseModel):
    """Every event the register journals and publishes (the JSON Schema of ``evt``)."""

    model_config = ConfigDict(extra="forbid", populate_by_name=True)

    v: int
    event_id: str
    store: str
    register_id: str = Field(alias="register")
    epoch: int
    seq: int
    type: str
    ts: str
    boot_id: str
    session_id: str | None
    cause: dict[str, Any] | None
    actor: dict[str, Any] | None
    data: dict[str, Any]
    replayed: bool = False
    prev_hash: str
    hash: str


class AckMessage(BaseModel):
    """A consumer's cumulative acknowledgement on ``ack/{consumer}`` (retained)."""

    model_config = ConfigDict(extra="ignore")

    epoch: int
    upto_seq: int
    ts: str | None = None


class ResyncRequest(BaseModel):
    model_config = ConfigDict(extra="ignore")

    from_seq: int
