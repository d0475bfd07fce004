"""``drawer.open``, ``print.receipt`` and ``print.raw``: device commands, run in the background.

``plan`` refuses what cannot be done (no such device, drawer already open, a kick too old, a
document this printer cannot print) before the intent is journaled; ``execute`` does it once.
A kick is never run late: past the command's ``expires_at`` (checked by the worker) and past
``max_kick_age`` from ``issued_at``, whatever the command says.
"""

from __future__ import annotations

import base64
import binascii
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from pydantic import BaseModel

from kassad.drivers.escpos.document import ReceiptDocument
from kassad.drivers.escpos.encoder import MODELS, EncodeError, EscposEncoder

from ..config import DevicesConfig
from ..contract.commands import (
    CommandEnvelope,
    CounterCountParams,
    DrawerOpenParams,
    PrintRawParams,
    PrintReceiptParams,
)
from ..contract.errors import CommandRefused, ErrorCode
from ..contract.events import utc_timestamp
from ..journal.store import PrintJobRecord
from .commands import Outcome, Plan, RegisterView
from .devices import Devices

COPY_MARK = "*** COPY / KOPIA ***"


def _devices(view: RegisterView) -> Devices:
    devices = getattr(view, "devices", None)
    assert isinstance(devices, Devices)
    return devices


def _cause(envelope: CommandEnvelope) -> dict[str, Any]:
    return {"cmd_id": envelope.cmd_id, "requester": envelope.requester}


class DrawerOpen:
    def __init__(self, config: DevicesConfig) -> None:
        self._config = config

    def plan(self, view: RegisterView, params: BaseModel, envelope: CommandEnvelope) -> Plan:
        assert isinstance(params, DrawerOpenParams)
        devices = _devices(view)
        devices.check_kick()
        assert self._config.drawer is not None
        limit = self._config.drawer.max_kick_age
        if envelope.issued_at is None:
            raise CommandRefused(ErrorCode.INVALID_PAYLOAD,
                                 "issued_at: drawer.open must say when it was issued, so that a "
                                 "late kick is never run", {"field": "issued_at"})
        age = (datetime.now(UTC) - envelope.issued_at).total_seconds()
        if age > limit:
            raise CommandRefused(ErrorCode.EXPIRED,
                                 f"the kick was issued {age:.1f} s ago; kicks older than "
                                 f"{limit:g} s are never run (the drawer stays closed)",
                                 {"age_seconds": round(age, 3), "max_kick_age": limit})
        reference = {"cmd_id": envelope.cmd_id, "note": params.note} if params.note else {
            "cmd_id": envelope.cmd_id}
        return Plan(payload=(params.reason.value, reference), background=True)

    async def execute(self, view: RegisterView, plan: Plan, ts: str,
                      employee: str | None) -> Outcome:
        cause, reference = plan.payload
        return Outcome([], await _devices(view).kick(cause, reference))


@dataclass(frozen=True)
class _PrintPlan:
    job: PrintJobRecord
    cause: dict[str, Any]
    open_drawer: bool


class _PrintBase:
    def __init__(self, config: DevicesConfig) -> None:
        self._config = config
        printer = config.printer
        self._encoder = (EscposEncoder(MODELS[printer.model])
                         if printer is not None and printer.model in MODELS else None)

    def _encoder_or_refuse(self, view: RegisterView) -> EscposEncoder:
        if _devices(view).jobs is None or self._encoder is None:
            raise CommandRefused(ErrorCode.DEVICE_UNAVAILABLE,
                                 "no receipt printer is configured on this register "
                                 "(devices.printer)", {"device": "printer"})
        return self._encoder

    def _job(self, view: RegisterView, envelope: CommandEnvelope, data: bytes,
             info: dict[str, Any]) -> PrintJobRecord:
        jobs = _devices(view).jobs
        assert jobs is not None
        return PrintJobRecord(envelope.cmd_id, "new", None, utc_timestamp(), jobs.expiry_ms(), data,
                              info)

    def _reprint(self, view: RegisterView, encoder: EscposEncoder, job_id: str) -> bytes:
        lookup = getattr(view, "print_job", None)
        original = lookup(job_id) if lookup else None
        if original is None:
            raise CommandRefused(ErrorCode.INVALID_PAYLOAD,
                                 f"reprint_of: no print job {job_id} in this register's journal",
                                 {"field": "reprint_of"})
        mark = encoder.encode(ReceiptDocument.model_validate(
            {"blocks": [{"type": "text", "text": COPY_MARK, "bold": True, "align": "center"}]}))
        document = original.info.get("document")
        if document is not None:  # the copy says so at the top, then the same receipt
            doc = ReceiptDocument.model_validate(document)
            return mark + encoder.encode(doc)[len(encoder.init_sequence()):]
        return mark + bytes(original.data)

    async def execute(self, view: RegisterView, plan: Plan, ts: str,
                      employee: str | None) -> Outcome:
        devices = _devices(view)
        assert devices.jobs is not None
        p: _PrintPlan = plan.payload
        await devices.jobs.submit(p.job, p.cause)
        return Outcome([], await job_result(devices, p.job.job_id))


async def job_result(devices: Devices, job_id: str) -> dict[str, Any]:
    """Wait for a job's final state: the result data, or the refusal that says why not."""
    assert devices.jobs is not None
    final = await devices.jobs.final(job_id)
    data: dict[str, Any] = {"job_id": final.job_id, "state": final.state,
                            "reason": final.reason}
    if final.state == "expired":
        raise CommandRefused(ErrorCode.EXPIRED, f"the receipt was not printed: "
                             f"{final.reason}", data)
    if final.state != "printed":
        raise CommandRefused(ErrorCode.PRINT_FAILED, f"the receipt was not printed: "
                             f"{final.reason}", data)
    if final.info.get("open_drawer") and devices.drawer is not None:
        try:
            data.update(await devices.kick("sale", {"cmd_id": job_id}))
        except CommandRefused as e:
            data["drawer"] = {"error": e.as_error()}
    return data


class PrintReceipt(_PrintBase):
    def plan(self, view: RegisterView, params: BaseModel, envelope: CommandEnvelope) -> Plan:
        assert isinstance(params, PrintReceiptParams)
        encoder = self._encoder_or_refuse(view)
        info: dict[str, Any] = {"kind": "receipt", "copies": params.copies,
                                "open_drawer": params.open_drawer}
        try:
            if params.reprint_of is not None:
                data = self._reprint(view, encoder, params.reprint_of)
                info["reprint_of"] = params.reprint_of
            else:
                assert params.document is not None
                data = encoder.encode(params.document)
                info["document"] = params.document.model_dump(mode="json")
        except EncodeError as e:
            raise CommandRefused(ErrorCode.INVALID_PAYLOAD, f"params.document: {e}",
                                 {"field": "document"}) from e
        job = self._job(view, envelope, data * params.copies, info)
        if params.open_drawer:
            _devices(view).check_kick()
        return Plan(payload=_PrintPlan(job, _cause(envelope), params.open_drawer),
                    background=True)


class PrintRaw(_PrintBase):
    def plan(self, view: RegisterView, params: BaseModel, envelope: CommandEnvelope) -> Plan:
        assert isinstance(params, PrintRawParams)
        self._encoder_or_refuse(view)
        try:
            data = base64.b64decode(params.data, validate=True)
        except (binascii.Error, ValueError) as e:
            raise CommandRefused(ErrorCode.INVALID_PAYLOAD, f"params.data: not base64: {e}",
                                 {"field": "data"}) from e
        if not data:
            raise CommandRefused(ErrorCode.INVALID_PAYLOAD, "params.data: nothing to print",
                                 {"field": "data"})
        job = self._job(view, envelope, data, {"kind": "raw", "bytes": len(data)})
        return Plan(payload=_PrintPlan(job, _cause(envelope), False), background=True)


class CounterCount:
    """``start`` answers when the run ends (stop, or quiet time) with its counts; ``stop``
    ends it at once and answers with the same counts."""

    def plan(self, view: RegisterView, params: BaseModel, envelope: CommandEnvelope) -> Plan:
        assert isinstance(params, CounterCountParams)
        counters = _devices(view).counters
        if counters is None:
            raise CommandRefused(ErrorCode.DEVICE_UNAVAILABLE,
                                 "no coin or note counter is configured on this register "
                                 "(devices.counters)", {"device": params.device})
        if params.action == "start":
            counters.check_start(params.device)
            return Plan(payload=("start", params.device, _cause(envelope)), background=True)
        counters.check_stop(params.device)
        return Plan(payload=("stop", params.device, _cause(envelope)))

    async def execute(self, view: RegisterView, plan: Plan, ts: str,
                      employee: str | None) -> Outcome:
        counters = _devices(view).counters
        assert counters is not None
        action, device, cause = plan.payload
        if action == "stop":
            return Outcome([], {"count": await counters.stop(device)})
        run = await counters.start(device, cause)
        await run.done.wait()
        return Outcome([], {"count": run.result()})


def device_handlers(config: DevicesConfig) -> dict[str, Any]:
    handlers: dict[str, Any] = {}
    if config.drawer is not None:
        handlers["drawer.open"] = DrawerOpen(config)
    if config.printer is not None:
        handlers["print.receipt"] = PrintReceipt(config)
        handlers["print.raw"] = PrintRaw(config)
    if config.counters:
        handlers["counter.count"] = CounterCount()
    return handlers

