"""JSON Schemas of every MQTT payload, generated from the pydantic models (``kassad schema``)."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel

from .commands import COMMAND_PARAMS, CommandEnvelope
from .events import AckMessage, EventEnvelope, ResyncRequest
from .replies import Reply


def all_schemas() -> dict[str, dict[str, Any]]:
    models: dict[str, type[BaseModel]] = {
        "command": CommandEnvelope, "reply": Reply, "event": EventEnvelope,
        "ack": AckMessage, "resync": ResyncRequest,
    }
    models.update({f"params.{name}": model for name, model in COMMAND_PARAMS.items()})
    return {name: model.model_json_schema() for name, model in sorted(models.items())}
